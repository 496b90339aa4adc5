package caddymodule

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/go-jose/go-jose/v4"

	"github.com/acmeca/caddy-acmeca/ratelimit"
)

// The rate limit tests drive the CA with rlClient, a small ACME client
// that keeps every response's status and headers (Retry-After above all)
// and can send from another loopback address, so that each test has
// per-IP buckets of its own.

const rlRateLimited = "urn:ietf:params:acme:error:rateLimited"

// rlRFC3339 finds the time a refusal names.
var rlRFC3339 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)

type rlClient struct {
	t    testing.TB
	ca   *testCA
	http *http.Client
	dir  rlDirectory
}

type rlDirectory struct {
	NewNonce   string `json:"newNonce"`
	NewAccount string `json:"newAccount"`
	NewOrder   string `json:"newOrder"`
	Meta       struct {
		RateLimits string `json:"rateLimits"`
	} `json:"meta"`
}

type rlResp struct {
	status int
	header http.Header
	body   []byte
}

type rlProblem struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
	Status int    `json:"status"`
}

type rlAccount struct {
	key    *ecdsa.PrivateKey
	kid    string // the account URL
	orders string
}

func (a *rlAccount) id() string { return a.kid[strings.LastIndex(a.kid, "/")+1:] }

type rlOrder struct {
	url            string
	Status         string   `json:"status"`
	Authorizations []string `json:"authorizations"`
	Finalize       string   `json:"finalize"`
	Certificate    string   `json:"certificate"`
}

type rlAuthz struct {
	Status     string `json:"status"`
	Identifier struct {
		Value string `json:"value"`
	} `json:"identifier"`
	Challenges []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Token string `json:"token"`
	} `json:"challenges"`
}

// rlHTTPClient trusts the CA's root and, when sourceIP is set, connects
// from that loopback address, so the CA sees another client IP.
func rlHTTPClient(ca *testCA, sourceIP string) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if sourceIP != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(sourceIP)}
	}
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: ca.Roots},
			MaxIdleConnsPerHost: 64,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return dialer.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", port))
			},
		},
	}
}

// newRLClient fetches the directory (one directory request) from sourceIP
// ("" for the default 127.0.0.1).
func newRLClient(t testing.TB, ca *testCA, sourceIP string) *rlClient {
	t.Helper()
	c := &rlClient{t: t, ca: ca, http: rlHTTPClient(ca, sourceIP)}
	r := c.get(ca.DirURL)
	if r.status != http.StatusOK {
		t.Fatalf("directory: %d %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &c.dir); err != nil {
		t.Fatalf("directory: %v", err)
	}
	return c
}

func (c *rlClient) get(url string) *rlResp {
	c.t.Helper()
	resp, err := c.http.Get(url)
	if err != nil {
		c.t.Fatalf("GET %s: %v", url, err)
	}
	return rlRead(c.t, resp)
}

func rlRead(t testing.TB, resp *http.Response) *rlResp {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	return &rlResp{status: resp.StatusCode, header: resp.Header, body: body}
}

func (c *rlClient) tryNonce() (string, error) {
	req, err := http.NewRequest(http.MethodHead, c.dir.NewNonce, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("newNonce: %w", err)
	}
	resp.Body.Close()
	n := resp.Header.Get("Replay-Nonce")
	if n == "" {
		return "", fmt.Errorf("newNonce: no Replay-Nonce (status %d)", resp.StatusCode)
	}
	return n, nil
}

// sign builds a JWS signed by key, with kid when set and the JWK
// otherwise. A nil payload is a POST-as-GET.
func (c *rlClient) sign(key *ecdsa.PrivateKey, kid, url string, payload any) ([]byte, error) {
	body := []byte{}
	if payload != nil {
		var err error
		if body, err = json.Marshal(payload); err != nil {
			return nil, err
		}
	}
	nonce, err := c.tryNonce()
	if err != nil {
		return nil, err
	}
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"nonce": nonce, "url": url}}
	if kid != "" {
		opts.ExtraHeaders["kid"] = kid
	} else {
		opts.EmbedJWK = true
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		return nil, err
	}
	jws, err := signer.Sign(body)
	if err != nil {
		return nil, err
	}
	return []byte(jws.FullSerialize()), nil
}

// send posts a signed body; it does not fail the test, so goroutines may
// call it.
func (c *rlClient) send(url string, jws []byte) (*rlResp, error) {
	resp, err := c.http.Post(url, "application/jose+json", bytes.NewReader(jws))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &rlResp{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

func (c *rlClient) post(key *ecdsa.PrivateKey, kid, url string, payload any) *rlResp {
	c.t.Helper()
	jws, err := c.sign(key, kid, url, payload)
	if err != nil {
		c.t.Fatalf("signing for %s: %v", url, err)
	}
	r, err := c.send(url, jws)
	if err != nil {
		c.t.Fatalf("POST %s: %v", url, err)
	}
	return r
}

func (c *rlClient) postAs(a *rlAccount, url string, payload any) *rlResp {
	c.t.Helper()
	return c.post(a.key, a.kid, url, payload)
}

func (c *rlClient) newAccount() (*rlAccount, *rlResp) {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	r := c.post(key, "", c.dir.NewAccount, map[string]any{"termsOfServiceAgreed": true})
	if r.status != http.StatusCreated {
		return nil, r
	}
	a := &rlAccount{key: key, kid: r.header.Get("Location")}
	var obj struct {
		Orders string `json:"orders"`
	}
	if err := json.Unmarshal(r.body, &obj); err != nil {
		c.t.Fatal(err)
	}
	a.orders = obj.Orders
	return a, r
}

func (c *rlClient) mustAccount() *rlAccount {
	c.t.Helper()
	a, r := c.newAccount()
	if a == nil {
		c.t.Fatalf("newAccount: %d %s", r.status, r.body)
	}
	return a
}

func (c *rlClient) newOrder(a *rlAccount, names ...string) *rlResp {
	c.t.Helper()
	ids := make([]map[string]string, len(names))
	for i, n := range names {
		ids[i] = map[string]string{"type": "dns", "value": n}
	}
	return c.postAs(a, c.dir.NewOrder, map[string]any{"identifiers": ids})
}

func (c *rlClient) mustOrder(a *rlAccount, names ...string) *rlOrder {
	c.t.Helper()
	r := c.newOrder(a, names...)
	if r.status != http.StatusCreated {
		c.t.Fatalf("newOrder %v: %d %s", names, r.status, r.body)
	}
	o := &rlOrder{url: r.header.Get("Location")}
	if err := json.Unmarshal(r.body, o); err != nil {
		c.t.Fatal(err)
	}
	return o
}

func (c *rlClient) getOrder(a *rlAccount, url string) *rlOrder {
	c.t.Helper()
	r := c.postAs(a, url, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("order %s: %d %s", url, r.status, r.body)
	}
	o := &rlOrder{url: url}
	if err := json.Unmarshal(r.body, o); err != nil {
		c.t.Fatal(err)
	}
	return o
}

func (c *rlClient) getAuthz(a *rlAccount, url string) rlAuthz {
	c.t.Helper()
	r := c.postAs(a, url, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("authz %s: %d %s", url, r.status, r.body)
	}
	var az rlAuthz
	if err := json.Unmarshal(r.body, &az); err != nil {
		c.t.Fatal(err)
	}
	return az
}

// orders lists the account's orders (RFC 8555 §7.1.2.1).
func (c *rlClient) orders(a *rlAccount) []string {
	c.t.Helper()
	r := c.postAs(a, a.orders, nil)
	if r.status != http.StatusOK {
		c.t.Fatalf("orders list: %d %s", r.status, r.body)
	}
	var list struct {
		Orders []string `json:"orders"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		c.t.Fatal(err)
	}
	return list.Orders
}

func rlKeyAuth(t testing.TB, key *ecdsa.PrivateKey, token string) string {
	tp, err := (&jose.JSONWebKey{Key: &key.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return token + "." + base64.RawURLEncoding.EncodeToString(tp)
}

// answer publishes the http-01 response (when a responder is given) and
// asks the CA to validate; it does not wait.
func (c *rlClient) answer(a *rlAccount, authzURL string, responder *http01Responder) {
	c.t.Helper()
	az := c.getAuthz(a, authzURL)
	for _, ch := range az.Challenges {
		if ch.Type != "http-01" {
			continue
		}
		if responder != nil {
			responder.set(ch.Token, rlKeyAuth(c.t, a.key, ch.Token))
		}
		if r := c.postAs(a, ch.URL, map[string]any{}); r.status != http.StatusOK {
			c.t.Fatalf("challenge %s: %d %s", ch.URL, r.status, r.body)
		}
		return
	}
	c.t.Fatalf("no http-01 challenge for %s", az.Identifier.Value)
}

// waitAuthz polls an authorization until it has left the pending state.
func (c *rlClient) waitAuthz(a *rlAccount, url string) string {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		az := c.getAuthz(a, url)
		if az.Status != "pending" {
			return az.Status
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("authz %s for %s still pending", url, az.Identifier.Value)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// authorize validates every authorization of the order with http-01.
func (c *rlClient) authorize(a *rlAccount, o *rlOrder, responder *http01Responder) {
	c.t.Helper()
	var waiting []string
	for _, u := range o.Authorizations {
		if c.getAuthz(a, u).Status == "valid" {
			continue
		}
		c.answer(a, u, responder)
		waiting = append(waiting, u)
	}
	for _, u := range waiting {
		if st := c.waitAuthz(a, u); st != "valid" {
			c.t.Fatalf("authz %s is %s, want valid", u, st)
		}
	}
}

func rlCSR(t testing.TB, names []string) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(der)
}

func (c *rlClient) finalize(a *rlAccount, o *rlOrder, names []string) *rlResp {
	c.t.Helper()
	return c.postAs(a, o.Finalize, map[string]string{"csr": rlCSR(c.t, names)})
}

// issue runs newOrder → http-01 → finalize → download and checks the
// certificate; it returns the order.
func (c *rlClient) issue(t *testing.T, a *rlAccount, responder *http01Responder, names ...string) *rlOrder {
	t.Helper()
	o := c.mustOrder(a, names...)
	c.authorize(a, o, responder)
	if r := c.finalize(a, o, names); r.status != http.StatusOK {
		t.Fatalf("finalize %v: %d %s", names, r.status, r.body)
	}
	o = c.waitOrderValid(a, o.url)
	r := c.postAs(a, o.Certificate, nil)
	if r.status != http.StatusOK {
		t.Fatalf("certificate: %d %s", r.status, r.body)
	}
	verifyLeaf(t, c.ca, r.body, names)
	return o
}

func (c *rlClient) waitOrderValid(a *rlAccount, url string) *rlOrder {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		o := c.getOrder(a, url)
		switch {
		case o.Status == "valid":
			return o
		case o.Status != "processing" || time.Now().After(deadline):
			c.t.Fatalf("order %s is %s, want valid", url, o.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rlWantLimited checks a refusal: 429, a rateLimited problem whose
// detail holds detailHas and an RFC 3339 time, and a Retry-After in
// seconds that agrees with that time and is at most maxRetry.
func rlWantLimited(t testing.TB, r *rlResp, maxRetry time.Duration, detailHas ...string) *rlProblem {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429; body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p rlProblem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem document: %v: %s", err, r.body)
	}
	if p.Type != rlRateLimited {
		t.Fatalf("problem type %q (%s), want %s", p.Type, p.Detail, rlRateLimited)
	}
	if p.Status != 0 && p.Status != http.StatusTooManyRequests {
		t.Errorf("problem status %d, want 429", p.Status)
	}
	for _, w := range detailHas {
		if !strings.Contains(p.Detail, w) {
			t.Errorf("detail %q lacks %q", p.Detail, w)
		}
	}
	ra := r.header.Get("Retry-After")
	secs, err := strconv.Atoi(ra)
	if err != nil || secs <= 0 {
		t.Fatalf("Retry-After %q is not a positive number of seconds", ra)
	}
	if max := int(maxRetry.Seconds() + 1); secs > max {
		t.Errorf("Retry-After %ds, want at most %ds", secs, max)
	}
	m := rlRFC3339.FindString(p.Detail)
	if m == "" {
		t.Fatalf("detail %q names no RFC 3339 time", p.Detail)
	}
	at, err := time.Parse(time.RFC3339, m)
	if err != nil {
		t.Fatalf("detail's time %q: %v", m, err)
	}
	if diff := time.Until(at) - time.Duration(secs)*time.Second; diff < -5*time.Second || diff > 5*time.Second {
		t.Errorf("Retry-After %ds disagrees with the detail's time %s (%v from now)", secs, m, time.Until(at).Round(time.Second))
	}
	return &p
}

func rlSameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// rlOptions wraps limit lines in a rate_limits block.
func rlOptions(lines ...string) string {
	return "rate_limits {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}"
}

func TestRateLimitCertificatesPerRegisteredDomain(t *testing.T) {
	ca := startCA(t, rlOptions("certificates_per_registered_domain 2 1h"))
	responder := serveHTTP01(t, ca.ChallPort)
	c := newRLClient(t, ca, "")
	a := c.mustAccount()

	o1 := c.issue(t, a, responder, "a.example.test")
	o2 := c.issue(t, a, responder, "www.b.example.test", "b.example.test")

	// The third certificate under example.test is refused at newOrder,
	// before any validation.
	r := c.newOrder(a, "c.example.test")
	rlWantLimited(t, r, 30*time.Minute, "certificates_per_registered_domain", "example.test", "2")
	if got := c.orders(a); !rlSameSet(got, []string{o1.url, o2.url}) {
		t.Errorf("after the refusal the account has orders %q, want exactly %q", got, []string{o1.url, o2.url})
	}
	// The limit is per registered domain, whoever asks, whatever the
	// other names are.
	b := c.mustAccount()
	rlWantLimited(t, c.newOrder(b, "d.example.test"), 30*time.Minute, "certificates_per_registered_domain", "example.test")
	rlWantLimited(t, c.newOrder(b, "x.other.test", "e.example.test"), 30*time.Minute, "certificates_per_registered_domain", "example.test")
	if got := c.orders(b); len(got) != 0 {
		t.Errorf("refused newOrders left orders %q", got)
	}

	// Another registered domain is not affected.
	c.issue(t, a, responder, "other.test")
	c.issue(t, b, responder, "www.other.test")
}

func TestRateLimitDuplicateCertificates(t *testing.T) {
	ca := startCA(t, rlOptions("duplicate_certificates 1 1h"))
	responder := serveHTTP01(t, ca.ChallPort)
	c := newRLClient(t, ca, "")
	a := c.mustAccount()

	c.issue(t, a, responder, "dup.example.test", "www.dup.example.test")
	// The same set of names, in another order and case.
	rlWantLimited(t, c.newOrder(a, "WWW.dup.example.test", "dup.example.test"), time.Hour, "duplicate_certificates")
	rlWantLimited(t, c.newOrder(c.mustAccount(), "dup.example.test", "www.dup.example.test"), time.Hour, "duplicate_certificates")
	// Another set is a new certificate.
	c.issue(t, a, responder, "dup.example.test")
	c.issue(t, a, responder, "dup.example.test", "www.dup.example.test", "api.dup.example.test")
}

// TestRateLimitPublicSuffixList: names under co.uk count against their
// registered domain (example.co.uk), not against co.uk.
func TestRateLimitPublicSuffixList(t *testing.T) {
	ca := startCA(t, rlOptions("certificates_per_registered_domain 1 1h"))
	responder := serveHTTP01(t, ca.ChallPort)
	c := newRLClient(t, ca, "")
	a := c.mustAccount()

	c.issue(t, a, responder, "a.example.co.uk")
	rlWantLimited(t, c.newOrder(a, "b.example.co.uk"), time.Hour, "certificates_per_registered_domain", "example.co.uk")
	c.issue(t, a, responder, "example2.co.uk")
	rlWantLimited(t, c.newOrder(a, "www.example2.co.uk"), time.Hour, "certificates_per_registered_domain", "example2.co.uk")
}

// rlWaitFailuresCounted waits until the CA has counted n failed validations
// for the account and hostname, reading the CA's own buckets in its storage
// with a second engine of the same config.
func rlWaitFailuresCounted(t *testing.T, ca *testCA, limit int, window time.Duration, acct, host string, n int) {
	t.Helper()
	e, err := ratelimit.NewEngine(&ratelimit.Config{Limits: map[string]ratelimit.LimitConfig{
		ratelimit.FailedValidations: {Count: limit, Window: caddy.Duration(window)},
	}}, ratelimit.NewStorageBackend(&certmagic.FileStorage{Path: ca.StorageDir}), "acme_ca/local/ratelimit", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Spending limit-n+1 more is refused exactly when n are spent.
	probe := []ratelimit.Transaction{{Limit: ratelimit.FailedValidations, Key: ratelimit.FailedValidationKey(acct, host), Cost: limit - n + 1}}
	deadline := time.Now().Add(10 * time.Second)
	for first := true; ; first = false {
		d, err := e.Check(context.Background(), probe)
		if err != nil {
			t.Fatal(err)
		}
		if d != nil {
			return
		}
		if first {
			t.Logf("failure %d for %s: the authorization read invalid before the failure was counted", n, host)
		}
		if time.Now().After(deadline) {
			t.Fatalf("failed validation %d for %s was never counted", n, host)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRateLimitFailedValidations(t *testing.T) {
	ca := startCA(t, rlOptions("failed_validations 2 1h"))
	// No http-01 responder: every validation fails to connect.
	c := newRLClient(t, ca, "")
	a := c.mustAccount()
	const host = "fail.example.test"

	for i := range 2 {
		o := c.mustOrder(a, host)
		c.answer(a, o.Authorizations[0], nil)
		if st := c.waitAuthz(a, o.Authorizations[0]); st != "invalid" {
			t.Fatalf("validation %d with no responder: authz is %s, want invalid", i+1, st)
		}
		rlWaitFailuresCounted(t, ca, 2, time.Hour, a.id(), host, i+1)
	}

	rlWantLimited(t, c.newOrder(a, host), 30*time.Minute, "failed_validations", host)
	rlWantLimited(t, c.newOrder(a, "ok.example.test", strings.ToUpper(host)), 30*time.Minute, "failed_validations", host)
	// Another hostname, and the same hostname for another account, are
	// not blocked.
	c.mustOrder(a, "ok.example.test")
	c.mustOrder(c.mustAccount(), host)
}

func TestRateLimitPendingAuthorizations(t *testing.T) {
	ca := startCA(t, rlOptions("pending_authorizations 3"))
	c := newRLClient(t, ca, "")
	a := c.mustAccount()

	o1 := c.mustOrder(a, "p1.example.test", "p2.example.test", "p3.example.test")
	// The same names again reuse the pending authorizations: nothing new
	// is pending.
	o2 := c.mustOrder(a, "p3.example.test", "p1.example.test")
	for _, u := range o2.Authorizations {
		if !slices.Contains(o1.Authorizations, u) {
			t.Errorf("second order has a fresh authorization %s, want the pending one reused", u)
		}
	}

	rlWantLimited(t, c.newOrder(a, "p4.example.test"), 31*24*time.Hour, "pending_authorizations", a.id(), "3")
	if got := c.orders(a); !rlSameSet(got, []string{o1.url, o2.url}) {
		t.Errorf("after the refusal the account has orders %q, want exactly %q", got, []string{o1.url, o2.url})
	}
	// Per account.
	c.mustOrder(c.mustAccount(), "p4.example.test")

	// Deactivating one authorization frees one place.
	r := c.postAs(a, o1.Authorizations[0], map[string]string{"status": "deactivated"})
	if r.status != http.StatusOK {
		t.Fatalf("deactivate: %d %s", r.status, r.body)
	}
	c.mustOrder(a, "p4.example.test")
	rlWantLimited(t, c.newOrder(a, "p5.example.test"), 31*24*time.Hour, "pending_authorizations")
}

func TestRateLimitNewRequests(t *testing.T) {
	ca := startCA(t, rlOptions(
		"new_requests 3 1h",
		"override new_requests 127.0.0.4 5",
		"override new_requests 127.0.1.0/24 4",
	))

	c := newRLClient(t, ca, "127.0.0.2")
	var accts []*rlAccount
	for range 3 {
		accts = append(accts, c.mustAccount())
	}
	_, r := c.newAccount()
	rlWantLimited(t, r, 20*time.Minute, "new_requests", "127.0.0.2", "3")
	// Requests that are not new* do not count and are not refused.
	if r := c.postAs(accts[0], accts[0].kid, nil); r.status != http.StatusOK {
		t.Errorf("account POST-as-GET after the limit: %d %s", r.status, r.body)
	}
	if r := c.get(ca.DirURL); r.status != http.StatusOK {
		t.Errorf("directory after the new_requests limit: %d", r.status)
	}

	// newOrder counts too, per IP.
	other := newRLClient(t, ca, "127.0.0.3")
	b := other.mustAccount()
	other.mustOrder(b, "n1.example.test")
	other.mustOrder(b, "n2.example.test")
	rlWantLimited(t, other.newOrder(b, "n3.example.test"), 20*time.Minute, "new_requests", "127.0.0.3")
	if got := other.orders(b); len(got) != 2 {
		t.Errorf("refused newOrder left %d orders, want 2", len(got))
	}

	// Overrides by IP and by range.
	for _, tc := range []struct {
		ip   string
		want int
	}{{"127.0.0.4", 5}, {"127.0.1.9", 4}} {
		oc := newRLClient(t, ca, tc.ip)
		for i := range tc.want {
			if _, r := oc.newAccount(); r.status != http.StatusCreated {
				t.Fatalf("%s: newAccount %d of %d: %d %s", tc.ip, i+1, tc.want, r.status, r.body)
			}
		}
		_, r := oc.newAccount()
		rlWantLimited(t, r, time.Hour, "new_requests", tc.ip, strconv.Itoa(tc.want))
	}
}

func TestRateLimitDirectoryRequests(t *testing.T) {
	ca := startCA(t, rlOptions("directory_requests 3 1h"))
	hc := rlHTTPClient(ca, "127.0.0.2")
	get := func(h *http.Client, url string) *rlResp {
		resp, err := h.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		return rlRead(t, resp)
	}
	for i := range 3 {
		if r := get(hc, ca.DirURL); r.status != http.StatusOK {
			t.Fatalf("directory GET %d: %d %s", i+1, r.status, r.body)
		}
	}
	rlWantLimited(t, get(hc, ca.DirURL), 20*time.Minute, "directory_requests", "127.0.0.2", "3")
	// newNonce is not a directory request.
	if r := get(hc, strings.TrimSuffix(ca.DirURL, "directory")+"new-nonce"); r.status != http.StatusNoContent {
		t.Errorf("new-nonce after the directory limit: %d", r.status)
	}
	// Another client IP has its own bucket.
	if r := get(rlHTTPClient(ca, "127.0.0.3"), ca.DirURL); r.status != http.StatusOK {
		t.Errorf("directory from another IP: %d %s", r.status, r.body)
	}
}

// TestRateLimitPage: the directory links the page listing the limits in
// force, and the page shows the configured counts.
func TestRateLimitPage(t *testing.T) {
	ca := startCA(t, rlOptions(
		"certificates_per_registered_domain 7 2h",
		"failed_validations 3 10m",
		"pending_authorizations 9",
		"disable duplicate_certificates",
	))
	c := newRLClient(t, ca, "")
	want := strings.TrimSuffix(ca.DirURL, "/directory") + "/rate-limits"
	if c.dir.Meta.RateLimits != want {
		t.Fatalf("directory meta rateLimits = %q, want %q", c.dir.Meta.RateLimits, want)
	}
	r := c.get(c.dir.Meta.RateLimits)
	if r.status != http.StatusOK {
		t.Fatalf("rate limits page: %d %s", r.status, r.body)
	}
	var page struct {
		Limits []struct {
			Name     string `json:"name"`
			Count    int    `json:"count"`
			Window   string `json:"window"`
			Per      string `json:"per"`
			Disabled bool   `json:"disabled"`
		} `json:"limits"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		t.Fatalf("rate limits page: %v: %s", err, r.body)
	}
	type row struct {
		name     string
		count    int
		window   time.Duration
		disabled bool
	}
	wantRows := []row{
		{ratelimit.CertificatesPerRegisteredDomain, 7, 2 * time.Hour, false},
		{ratelimit.DuplicateCertificates, 5, 168 * time.Hour, true},
		{ratelimit.FailedValidations, 3, 10 * time.Minute, false},
		{ratelimit.PendingAuthorizations, 9, 0, false},
		{ratelimit.NewRequests, 20, time.Second, false},
		{ratelimit.DirectoryRequests, 40, time.Second, false},
	}
	if len(page.Limits) != len(wantRows) {
		t.Fatalf("page lists %d limits, want %d: %s", len(page.Limits), len(wantRows), r.body)
	}
	for i, w := range wantRows {
		g := page.Limits[i]
		var window time.Duration
		if g.Window != "" {
			var err error
			if window, err = time.ParseDuration(g.Window); err != nil {
				t.Errorf("%s: window %q: %v", g.Name, g.Window, err)
			}
		}
		if g.Name != w.name || g.Count != w.count || window != w.window || g.Disabled != w.disabled {
			t.Errorf("limit %d: %+v, want %+v", i, g, w)
		}
		if g.Per == "" {
			t.Errorf("%s does not say what it is counted per", g.Name)
		}
	}
}

// TestRateLimitConcurrentFinalize: 40 orders under one registered domain,
// all ready, finalized at once against a limit of 20: exactly 20
// certificates, 20 refusals, and the refused orders are left ready.
func TestRateLimitConcurrentFinalize(t *testing.T) {
	const orders, limit = 40, 20
	ca := startCA(t, rlOptions(
		fmt.Sprintf("certificates_per_registered_domain %d 1h", limit),
		"disable new_requests directory_requests",
	))
	responder := serveHTTP01(t, ca.ChallPort)
	c := newRLClient(t, ca, "")

	type job struct {
		acct  *rlAccount
		order *rlOrder
		names []string
	}
	// Every order is made ready first: the challenges are all answered,
	// then awaited.
	jobs := make([]job, orders)
	for i := range jobs {
		names := []string{fmt.Sprintf("n%02d.conc.example.test", i)}
		a := c.mustAccount()
		o := c.mustOrder(a, names...)
		c.answer(a, o.Authorizations[0], responder)
		jobs[i] = job{acct: a, order: o, names: names}
	}
	for i, j := range jobs {
		if st := c.waitAuthz(j.acct, j.order.Authorizations[0]); st != "valid" {
			t.Fatalf("order %d: authz is %s, want valid", i, st)
		}
	}

	// The finalize requests are signed beforehand, so they reach the CA
	// together.
	bodies := make([][]byte, orders)
	for i, j := range jobs {
		jws, err := c.sign(j.acct.key, j.acct.kid, j.order.Finalize, map[string]string{"csr": rlCSR(t, j.names)})
		if err != nil {
			t.Fatal(err)
		}
		bodies[i] = jws
	}
	type result struct {
		status int
		body   []byte
		header http.Header
	}
	results := make([]result, orders)
	errs := make([]error, orders)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := c.send(j.order.Finalize, bodies[i])
			if err != nil {
				errs[i] = err
				return
			}
			results[i] = result{r.status, r.body, r.header}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d concurrent finalizes took %v", orders, time.Since(began))

	for i, err := range errs {
		if err != nil {
			t.Errorf("finalize %d: %v", i, err)
		}
	}
	var issued, refused int
	for i, r := range results {
		switch r.status {
		case http.StatusOK:
			issued++
			o := c.waitOrderValid(jobs[i].acct, jobs[i].order.url)
			cert := c.postAs(jobs[i].acct, o.Certificate, nil)
			verifyLeaf(t, ca, cert.body, jobs[i].names)
		case http.StatusTooManyRequests:
			refused++
			rlWantLimited(t, &rlResp{status: r.status, body: r.body, header: r.header}, time.Hour,
				"certificates_per_registered_domain", "example.test")
			if st := c.getOrder(jobs[i].acct, jobs[i].order.url).Status; st != "ready" {
				t.Errorf("refused order %d is %s, want ready (nothing half-done)", i, st)
			}
		default:
			t.Errorf("finalize %d: %d %s", i, r.status, r.body)
		}
	}
	t.Logf("%d issued, %d refused", issued, refused)
	if issued != limit || refused != orders-limit {
		t.Fatalf("%d certificates issued and %d refused; want exactly %d and %d", issued, refused, limit, orders-limit)
	}
}
