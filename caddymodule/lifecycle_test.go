package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/registration"
	"github.com/mholt/acmez/v3/acme"
)

// http01Responder answers http-01 challenges on loopback, as a subscriber's
// web server would.
type http01Responder struct {
	mu   sync.Mutex
	keys map[string]string
}

func serveHTTP01(t *testing.T, port int) *http01Responder {
	t.Helper()
	r := &http01Responder{keys: map[string]string{}}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		token := strings.TrimPrefix(req.URL.Path, "/.well-known/acme-challenge/")
		r.mu.Lock()
		ka, ok := r.keys[token]
		r.mu.Unlock()
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Write([]byte(ka))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *http01Responder) set(token, keyAuth string) {
	r.mu.Lock()
	r.keys[token] = keyAuth
	r.mu.Unlock()
}

// acmezFlow is a step-by-step ACME client (acmez), so tests can stop the CA
// between steps.
type acmezFlow struct {
	t       *testing.T
	ca      *testCA
	client  *acme.Client
	account acme.Account
	order   acme.Order
	names   []string
}

func newAcmezFlow(t *testing.T, ca *testCA, names ...string) *acmezFlow {
	t.Helper()
	f := &acmezFlow{t: t, ca: ca, names: names}
	f.client = &acme.Client{Directory: ca.DirURL, HTTPClient: ca.HTTPClient(), PollInterval: 50 * time.Millisecond}
	acct, err := f.client.NewAccount(context.Background(), acme.Account{
		Contact:              []string{"mailto:ops@example.test"},
		TermsOfServiceAgreed: true,
		PrivateKey:           newKey(t),
	})
	if err != nil {
		t.Fatalf("new account: %v", err)
	}
	f.account = acct
	return f
}

func (f *acmezFlow) newOrder() {
	f.t.Helper()
	var ids []acme.Identifier
	for _, n := range f.names {
		ids = append(ids, acme.Identifier{Type: "dns", Value: n})
	}
	order, err := f.client.NewOrder(context.Background(), f.account, acme.Order{Identifiers: ids})
	if err != nil {
		f.t.Fatalf("new order: %v", err)
	}
	f.order = order
}

// answerChallenges publishes the http-01 responses and tells the CA to
// validate; it does not wait.
func (f *acmezFlow) answerChallenges(responder *http01Responder) []acme.Authorization {
	f.t.Helper()
	ctx := context.Background()
	var authzs []acme.Authorization
	for _, u := range f.order.Authorizations {
		authz, err := f.client.GetAuthorization(ctx, f.account, u)
		if err != nil {
			f.t.Fatalf("get authorization: %v", err)
		}
		var chal *acme.Challenge
		for i := range authz.Challenges {
			if authz.Challenges[i].Type == "http-01" {
				chal = &authz.Challenges[i]
			}
		}
		if chal == nil {
			f.t.Fatalf("no http-01 challenge offered for %s", authz.Identifier.Value)
		}
		responder.set(chal.Token, chal.KeyAuthorization)
		if _, err := f.client.InitiateChallenge(ctx, f.account, *chal); err != nil {
			f.t.Fatalf("initiate challenge: %v", err)
		}
		authzs = append(authzs, authz)
	}
	return authzs
}

func (f *acmezFlow) waitValid(authzs []acme.Authorization) {
	f.t.Helper()
	for _, a := range authzs {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got, err := f.client.PollAuthorization(ctx, f.account, a)
		cancel()
		if err != nil {
			f.t.Fatalf("authorization for %s: %v", a.Identifier.Value, err)
		}
		if got.Status != "valid" {
			f.t.Fatalf("authorization for %s is %s", a.Identifier.Value, got.Status)
		}
	}
}

// finalize sends a CSR and downloads the chain.
func (f *acmezFlow) finalize() []byte {
	f.t.Helper()
	ctx := context.Background()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: f.names[0]},
		DNSNames: f.names,
	}, newKey(f.t))
	if err != nil {
		f.t.Fatal(err)
	}
	order, err := f.client.FinalizeOrder(ctx, f.account, f.order, csr)
	if err != nil {
		f.t.Fatalf("finalize: %v", err)
	}
	chains, err := f.client.GetCertificateChain(ctx, f.account, order.Certificate)
	if err != nil {
		f.t.Fatalf("download: %v", err)
	}
	return chains[0].ChainPEM
}

// TestRestartBetweenOrderAndFinalize: a process restart after validation
// and before finalize loses nothing; the account, order and authorizations
// come back from storage and issuance completes.
func TestRestartBetweenOrderAndFinalize(t *testing.T) {
	ca := startCA(t, "")
	responder := serveHTTP01(t, ca.ChallPort)
	f := newAcmezFlow(t, ca, "restart.example.test", "www.restart.example.test")
	f.newOrder()
	f.waitValid(f.answerChallenges(responder))

	ca.restart()

	verifyLeaf(t, ca, f.finalize(), f.names)
}

// TestRestartBetweenNewOrderAndChallenge: the order created before a
// restart can be validated after it.
func TestRestartBetweenNewOrderAndChallenge(t *testing.T) {
	ca := startCA(t, "")
	responder := serveHTTP01(t, ca.ChallPort)
	f := newAcmezFlow(t, ca, "before-restart.example.test")
	f.newOrder()

	ca.restart()

	f.waitValid(f.answerChallenges(responder))
	verifyLeaf(t, ca, f.finalize(), f.names)
}

// TestReloadDuringValidation: a config reload while a validation is in
// flight and before finalize breaks nothing.
func TestReloadDuringValidation(t *testing.T) {
	ca := startCA(t, "")
	responder := serveHTTP01(t, ca.ChallPort)
	f := newAcmezFlow(t, ca, "reload.example.test")
	f.newOrder()
	authzs := f.answerChallenges(responder)

	ca.reload("website https://example.test/about")

	f.waitValid(authzs)
	ca.reload("website https://example.test/about-us")
	verifyLeaf(t, ca, f.finalize(), f.names)
}

// TestLegoKeyRolloverAndDeactivation: lego rolls the account key over, the
// new key can order, then deactivates the account, after which the account
// can do nothing.
func TestLegoKeyRolloverAndDeactivation(t *testing.T) {
	ca := startCA(t, "")
	ctx := context.Background()
	user := &legoUser{email: "roll@example.test", key: newKey(t)}
	client := ca.legoClient(t, user, true)

	newKey := newKey(t)
	if err := client.Registration.KeyRollover(ctx, newKey); err != nil {
		t.Fatalf("key rollover: %v", err)
	}
	// A fresh client with only the new key finds the same account.
	rolled := &legoUser{email: user.email, key: newKey}
	rolledClient := ca.legoClient(t, rolled, false)
	acct, err := rolledClient.Registration.ResolveAccountByKey(ctx)
	if err != nil {
		t.Fatalf("resolving account by new key: %v", err)
	}
	if acct.Location != user.reg.Location {
		t.Fatalf("new key resolves to %s, want %s", acct.Location, user.reg.Location)
	}
	// The old key no longer finds an account.
	oldClient := ca.legoClient(t, &legoUser{email: user.email, key: user.key}, false)
	_, err = oldClient.Registration.ResolveAccountByKey(ctx)
	assertProblem(t, err, "urn:ietf:params:acme:error:accountDoesNotExist")

	// The old key is free again: it can register a new account, whose ID
	// (derived from the key) was taken by the rolled account, so it gets
	// another; the new key still finds the first account.
	reuser := &legoUser{email: user.email, key: user.key}
	ca.legoClient(t, reuser, true)
	if reuser.reg.Location == user.reg.Location {
		t.Fatalf("a new account with the old key reuses the rolled account's URL %s", user.reg.Location)
	}
	resolved, err := ca.legoClient(t, &legoUser{email: user.email, key: newKey}, false).Registration.ResolveAccountByKey(ctx)
	if err != nil || resolved.Location != user.reg.Location {
		t.Fatalf("new key resolves to %v (%v), want %s", resolved, err, user.reg.Location)
	}

	rolled.reg = acct
	rolledClient = ca.legoClient(t, rolled, false)
	if _, err := rolledClient.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"rolled.example.test"}, KeyType: certcrypto.EC256}); err != nil {
		t.Fatalf("obtain with the new key: %v", err)
	}

	if err := rolledClient.Registration.DeleteRegistration(ctx); err != nil {
		t.Fatalf("deactivate: %v", err)
	}
	_, err = rolledClient.Registration.QueryRegistration(ctx)
	assertProblem(t, err, "urn:ietf:params:acme:error:unauthorized")
	// Registering again with the deactivated account's key is refused too.
	again := ca.legoClient(t, &legoUser{email: user.email, key: newKey}, false)
	_, err = again.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
	assertProblem(t, err, "urn:ietf:params:acme:error:unauthorized")
}
