package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestSmoke runs the whole benchmark briefly against our CA: the nonce
// bench, one round, a small history pre-load and the round after it. It
// needs port 80, so it runs as root only; CI runs as root, so there a
// missing port 80 is a failure, not a skip.
func TestSmoke(t *testing.T) {
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		if ci {
			t.Fatalf("CI=true but running as uid %d: the bench needs root for port 80", os.Geteuid())
		}
		t.Skip("the bench answers http-01 on port 80, which needs root")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		if ci {
			t.Fatalf("port 80 cannot be bound: %v", err)
		}
		t.Skipf("port 80 cannot be bound: %v", err)
	}
	ln.Close()

	cfg := defaultConfig()
	cfg.only = ours
	cfg.clients = 4
	cfg.rounds = 1
	cfg.duration = 2 * time.Second
	cfg.warmup = 500 * time.Millisecond
	cfg.nonceDuration = 500 * time.Millisecond
	cfg.verifyEvery = 1
	cfg.history = 20
	cfg.historyClients = 4
	cfg.progress = testWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	if len(rep.Nonce) != 2 {
		t.Fatalf("nonce bench: %d results, want 2: %+v", len(rep.Nonce), rep.Nonce)
	}
	for _, n := range rep.Nonce {
		if n.Requests == 0 || n.Failed != 0 {
			t.Errorf("nonce bench %s: %d requests, %d failed: %v", n.Kind, n.Requests, n.Failed, n.Errors)
		}
	}
	if len(rep.Rounds) != 2 {
		t.Fatalf("%d rounds, want 2 (empty, after-history): %+v", len(rep.Rounds), rep.Rounds)
	}
	for _, r := range rep.Rounds {
		if r.Flows == 0 || r.Failed != 0 || r.ServerErrorCount != 0 {
			t.Errorf("round %s: %d flows, %d failed %v, server log %v", r.Phase, r.Flows, r.Failed, r.Errors, r.ServerErrors)
		}
		// A flow verified just before the window opened may end inside it.
		if int64(r.Verified) < r.Flows-int64(cfg.clients) {
			t.Errorf("round %s: %d chains verified for %d flows with -verify-every 1", r.Phase, r.Verified, r.Flows)
		}
		if r.ServerCPUPerFlow <= 0 || r.RSSMiB <= 0 {
			t.Errorf("round %s: server CPU %.2f ms/flow, RSS %.1f MiB", r.Phase, r.ServerCPUPerFlow, r.RSSMiB)
		}
	}
	sum := rep.summary(ours, phaseEmpty)
	if sum == nil {
		t.Fatal("no summary for our CA")
	}
	for _, typ := range []reqType{reqDirectory, reqNewNonce, reqNewAccount, reqNewOrder, reqAuthz, reqChallenge, reqFinalize, reqCert} {
		if l := sum.Latency[typ.String()]; l.N == 0 || l.P50 <= 0 || l.P99 < l.P50 {
			t.Errorf("latency of %s: %+v", typ, l)
		}
	}
	if h := rep.History; h == nil || h.Loaded != 20 || h.Failed != 0 || h.KiBPerCert <= 0 || h.HistoryFlowsPerSec <= 0 {
		t.Errorf("history: %+v", h)
	}

	var text bytes.Buffer
	rep.writeText(&text)
	for _, want := range []string{"Rounds", "Latency per request type", "History (our CA)", "Errors: none"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := rep.writeJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not parse: %v", err)
	}
	t.Logf("report:\n%s", text.String())
}

// TestJWS checks the bench's hand-made JWS against go-jose, the library
// our CA verifies with: the signature, the header fields and the
// thumbprint in the key authorization.
func TestJWS(t *testing.T) {
	k, err := newAccountKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		kid     string
		payload []byte
	}{
		{"jwk with payload", "", []byte(`{"termsOfServiceAgreed":true}`)},
		{"kid, POST-as-GET", "https://ca.test/acme/account/1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := k.sign("https://ca.test/acme/new", "nonce-1", tc.kid, tc.payload)
			if err != nil {
				t.Fatal(err)
			}
			jws, err := jose.ParseSignedJSON(string(body), []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			got, err := jws.Verify(&k.priv.PublicKey)
			if err != nil {
				t.Fatalf("signature does not verify: %v", err)
			}
			if !bytes.Equal(got, tc.payload) {
				t.Errorf("payload %q, want %q", got, tc.payload)
			}
			h := jws.Signatures[0].Protected
			if h.Nonce != "nonce-1" || h.ExtraHeaders["url"] != "https://ca.test/acme/new" || h.KeyID != tc.kid {
				t.Errorf("header %+v", h)
			}
			if (h.JSONWebKey != nil) != (tc.kid == "") {
				t.Errorf("jwk in header: %v, want %v", h.JSONWebKey != nil, tc.kid == "")
			}
		})
	}
	want, err := (&jose.JSONWebKey{Key: &k.priv.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.keyAuthorization("tok"); got != "tok."+b64.EncodeToString(want) {
		t.Errorf("key authorization %q, want thumbprint %s", got, b64.EncodeToString(want))
	}
}

// testWriter sends the bench's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
