package caddymodule

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// This file is a small ACME client that builds every request by hand, so
// tests can send what a well-behaved client never would: wrong algorithms,
// spoiled nonces, mismatched URLs, tampered payloads.

const (
	errNS         = "urn:ietf:params:acme:error:"
	joseJSON      = "application/jose+json"
	problemJSON   = "application/problem+json"
	pemChainType  = "application/pem-certificate-chain"
	pollTimeout   = 20 * time.Second
	pollInterval  = 50 * time.Millisecond
	challengePath = "/.well-known/acme-challenge/"
)

// b64 is base64url without padding, as JWS and ACME use it.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// acmeKey is a private key and the JWS algorithm it signs with.
type acmeKey struct {
	priv crypto.Signer
	alg  string
}

// newAcmeKey generates a key of kind p256, p384, p521, ed25519, rsa1024 or
// rsa2048, paired with its natural JWS algorithm.
func newAcmeKey(t testing.TB, kind string) *acmeKey {
	t.Helper()
	var (
		priv crypto.Signer
		alg  string
		err  error
	)
	switch kind {
	case "p256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		alg = "ES256"
	case "p384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		alg = "ES384"
	case "p521":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		alg = "ES512"
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
		alg = "EdDSA"
	case "rsa1024":
		priv, err = rsa.GenerateKey(rand.Reader, 1024)
		alg = "RS256"
	case "rsa2048":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
		alg = "RS256"
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatalf("generating %s key: %v", kind, err)
	}
	return &acmeKey{priv: priv, alg: alg}
}

// jwk is the public key as a JWK.
func (k *acmeKey) jwk() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: k.priv.Public()}
}

// thumbprint is the RFC 7638 SHA-256 thumbprint, base64url.
func (k *acmeKey) thumbprint(t testing.TB) string {
	t.Helper()
	b, err := k.jwk().Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatalf("thumbprint: %v", err)
	}
	return b64(b)
}

// keyAuth is the key authorization of a challenge token (RFC 8555 §8.1).
func (k *acmeKey) keyAuth(t testing.TB, token string) string {
	return token + "." + k.thumbprint(t)
}

// sign computes a JWS signature over input with alg, whatever alg is, so a
// test can sign with an algorithm that does not fit the key.
func (k *acmeKey) sign(t testing.TB, alg string, input []byte) []byte {
	t.Helper()
	digest := func(h crypto.Hash) []byte {
		hh := h.New()
		hh.Write(input)
		return hh.Sum(nil)
	}
	var (
		sig []byte
		err error
	)
	switch alg {
	case "none":
		return nil
	case "HS256":
		m := hmac.New(sha256.New, []byte("a shared secret ACME never uses"))
		m.Write(input)
		return m.Sum(nil)
	case "RS256", "RS384":
		h := crypto.SHA256
		if alg == "RS384" {
			h = crypto.SHA384
		}
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.priv.(*rsa.PrivateKey), h, digest(h))
	case "PS256":
		sig, err = rsa.SignPSS(rand.Reader, k.priv.(*rsa.PrivateKey), crypto.SHA256, digest(crypto.SHA256),
			&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256", "ES384", "ES512":
		h := map[string]crypto.Hash{"ES256": crypto.SHA256, "ES384": crypto.SHA384, "ES512": crypto.SHA512}[alg]
		priv := k.priv.(*ecdsa.PrivateKey)
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, priv, digest(h))
		if err == nil {
			// JWS wants r and s as fixed-size big-endian halves, not DER.
			size := (priv.Curve.Params().BitSize + 7) / 8
			sig = append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
		}
	case "EdDSA":
		sig = ed25519.Sign(k.priv.(ed25519.PrivateKey), input)
	default:
		t.Fatalf("cannot sign with %q", alg)
	}
	if err != nil {
		t.Fatalf("signing with %s: %v", alg, err)
	}
	return sig
}

// flatJWS is the flattened JSON serialization (RFC 7515 §7.2.2).
type flatJWS struct {
	Protected string `json:"protected"`
	Payload   string `json:"payload"`
	Signature string `json:"signature"`
}

// signJWS signs payload under the protected header hdr with the algorithm
// hdr["alg"] names. A header without "alg" gets the key's.
func signJWS(t testing.TB, k *acmeKey, hdr map[string]any, payload []byte) flatJWS {
	t.Helper()
	if _, ok := hdr["alg"]; !ok {
		hdr["alg"] = k.alg
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		t.Fatalf("encoding protected header: %v", err)
	}
	j := flatJWS{Protected: b64(hb), Payload: b64(payload)}
	alg, _ := hdr["alg"].(string)
	j.Signature = b64(k.sign(t, alg, []byte(j.Protected+"."+j.Payload)))
	return j
}

// encodePayload turns a test's payload into JWS payload bytes: nil is the
// empty payload of POST-as-GET, []byte is sent as is, anything else as JSON.
func encodePayload(t testing.TB, payload any) []byte {
	t.Helper()
	switch p := payload.(type) {
	case nil:
		return nil
	case []byte:
		return p
	}
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatalf("encoding payload: %v", err)
	}
	return b
}

// Wire objects, as far as the tests read them.

type acmeDirectory struct {
	NewNonce   string         `json:"newNonce"`
	NewAccount string         `json:"newAccount"`
	NewOrder   string         `json:"newOrder"`
	RevokeCert string         `json:"revokeCert"`
	KeyChange  string         `json:"keyChange"`
	Meta       map[string]any `json:"meta"`
}

type acmeIdentifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

func dnsIDs(names ...string) []acmeIdentifier {
	ids := make([]acmeIdentifier, len(names))
	for i, n := range names {
		ids[i] = acmeIdentifier{Type: "dns", Value: n}
	}
	return ids
}

type acmeProblem struct {
	Type        string           `json:"type"`
	Detail      string           `json:"detail"`
	Status      int              `json:"status"`
	Subproblems []acmeSubproblem `json:"subproblems"`
	Algorithms  []string         `json:"algorithms"`
	Identifier  *acmeIdentifier  `json:"identifier"`
}

type acmeSubproblem struct {
	Type       string         `json:"type"`
	Detail     string         `json:"detail"`
	Identifier acmeIdentifier `json:"identifier"`
}

type acmeAccount struct {
	Status               string           `json:"status"`
	Contact              []string         `json:"contact"`
	TermsOfServiceAgreed bool             `json:"termsOfServiceAgreed"`
	Orders               string           `json:"orders"`
	Key                  *jose.JSONWebKey `json:"key"`
}

type acmeOrder struct {
	Status         string           `json:"status"`
	Identifiers    []acmeIdentifier `json:"identifiers"`
	Authorizations []string         `json:"authorizations"`
	Finalize       string           `json:"finalize"`
	Certificate    string           `json:"certificate"`
	Error          *acmeProblem     `json:"error"`
}

type acmeAuthz struct {
	Identifier acmeIdentifier  `json:"identifier"`
	Status     string          `json:"status"`
	Wildcard   bool            `json:"wildcard"`
	Challenges []acmeChallenge `json:"challenges"`
}

// challenge returns the authorization's challenge of type typ.
func (a acmeAuthz) challenge(t testing.TB, typ string) acmeChallenge {
	t.Helper()
	for _, c := range a.Challenges {
		if c.Type == typ {
			return c
		}
	}
	t.Fatalf("authorization for %s has no %s challenge: %+v", a.Identifier.Value, typ, a.Challenges)
	return acmeChallenge{}
}

type acmeChallenge struct {
	Type   string       `json:"type"`
	URL    string       `json:"url"`
	Token  string       `json:"token"`
	Status string       `json:"status"`
	Error  *acmeProblem `json:"error"`
}

type acmeOrdersList struct {
	Orders []string `json:"orders"`
}

// rawResponse is one HTTP answer of the CA.
type rawResponse struct {
	Status  int
	Header  http.Header
	Body    []byte
	Problem *acmeProblem // set when the body is a problem document
}

// decode decodes the JSON body into v, failing the test on a problem.
func (r *rawResponse) decode(t testing.TB, v any) {
	t.Helper()
	if r.Problem != nil {
		t.Fatalf("HTTP %d, problem %s: %s", r.Status, r.Problem.Type, r.Problem.Detail)
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %T from %q: %v", v, r.Body, err)
	}
}

// rawClient talks to one test CA.
type rawClient struct {
	ca   *testCA
	http *http.Client
	dir  acmeDirectory
}

// newRawClient fetches the directory. Right after a reload or restart a
// new connection may still reach the listener Caddy is closing and see EOF,
// so the first request is retried for a moment.
func newRawClient(t testing.TB, ca *testCA) *rawClient {
	t.Helper()
	c := &rawClient{ca: ca, http: ca.HTTPClient()}
	deadline := time.Now().Add(3 * time.Second)
	r, err := c.send(http.MethodGet, ca.DirURL, "", nil)
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(pollInterval)
		r, err = c.send(http.MethodGet, ca.DirURL, "", nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("GET directory: HTTP %d: %s", r.Status, r.Body)
	}
	r.decode(t, &c.dir)
	return c
}

// base is the URL below which the CA's resources live.
func (c *rawClient) base() string { return strings.TrimSuffix(c.ca.DirURL, "/directory") }

// do sends one request and reads the answer.
func (c *rawClient) do(t testing.TB, method, url, contentType string, body []byte) *rawResponse {
	t.Helper()
	r, err := c.send(method, url, contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for a caller that handles the failure itself.
func (c *rawClient) send(method, url, contentType string, body []byte) (*rawResponse, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building %s %s: %w", method, url, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", method, url, err)
	}
	r := &rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), problemJSON) {
		r.Problem = new(acmeProblem)
		if err := json.Unmarshal(b, r.Problem); err != nil {
			return nil, fmt.Errorf("problem document %q does not parse: %w", b, err)
		}
	}
	return r, nil
}

// nonce fetches a fresh nonce with HEAD new-nonce.
func (c *rawClient) nonce(t testing.TB) string {
	t.Helper()
	r := c.do(t, http.MethodHead, c.dir.NewNonce, "", nil)
	n := r.Header.Get("Replay-Nonce")
	if r.Status != http.StatusOK || n == "" {
		t.Fatalf("HEAD new-nonce: HTTP %d, Replay-Nonce %q", r.Status, n)
	}
	return n
}

// header is a correct protected header for url: the key's algorithm, a
// fresh nonce, and the kid when it is not empty, the jwk otherwise.
func (c *rawClient) header(t testing.TB, k *acmeKey, kid, url string) map[string]any {
	t.Helper()
	h := map[string]any{"alg": k.alg, "nonce": c.nonce(t), "url": url}
	if kid != "" {
		h["kid"] = kid
	} else {
		h["jwk"] = k.jwk()
	}
	return h
}

// sendJWS posts a JWS (or any JSON value standing in for one).
func (c *rawClient) sendJWS(t testing.TB, url string, jws any) *rawResponse {
	t.Helper()
	b, err := json.Marshal(jws)
	if err != nil {
		t.Fatalf("encoding JWS: %v", err)
	}
	return c.do(t, http.MethodPost, url, joseJSON, b)
}

// postHeader signs payload under hdr and posts it to url.
func (c *rawClient) postHeader(t testing.TB, url string, k *acmeKey, hdr map[string]any, payload any) *rawResponse {
	t.Helper()
	return c.sendJWS(t, url, signJWS(t, k, hdr, encodePayload(t, payload)))
}

// post signs payload with k, naming the account kid (or, with kid empty,
// carrying the jwk), with a fresh nonce, and posts it to url.
func (c *rawClient) post(t testing.TB, url string, k *acmeKey, kid string, payload any) *rawResponse {
	t.Helper()
	return c.postHeader(t, url, k, c.header(t, k, kid, url), payload)
}

// rawAccount is an account: its key and URL (the kid).
type rawAccount struct {
	Key *acmeKey
	URL string
}

// postAs posts payload signed by the account.
func (c *rawClient) postAs(t testing.TB, a *rawAccount, url string, payload any) *rawResponse {
	t.Helper()
	return c.post(t, url, a.Key, a.URL, payload)
}

// newAccount creates an account for a new P-256 key.
func (c *rawClient) newAccount(t testing.TB) *rawAccount {
	t.Helper()
	return c.newAccountWith(t, newAcmeKey(t, "p256"), map[string]any{"termsOfServiceAgreed": true})
}

// newAccountWith creates an account for k and expects 201.
func (c *rawClient) newAccountWith(t testing.TB, k *acmeKey, payload any) *rawAccount {
	t.Helper()
	r := c.post(t, c.dir.NewAccount, k, "", payload)
	wantStatus(t, r, http.StatusCreated)
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, c.base()+"/") {
		t.Fatalf("newAccount Location %q is not below %s", loc, c.base())
	}
	return &rawAccount{Key: k, URL: loc}
}

// newOrder creates an order for dns names and returns its URL and body.
func (c *rawClient) newOrder(t testing.TB, a *rawAccount, names ...string) (string, acmeOrder) {
	t.Helper()
	r := c.postAs(t, a, c.dir.NewOrder, map[string]any{"identifiers": dnsIDs(names...)})
	wantStatus(t, r, http.StatusCreated)
	var o acmeOrder
	r.decode(t, &o)
	loc := r.Header.Get("Location")
	if loc == "" {
		t.Fatal("newOrder response has no Location")
	}
	return loc, o
}

// getOrder, getAuthz and getChallenge read a resource with POST-as-GET.
func (c *rawClient) getOrder(t testing.TB, a *rawAccount, url string) acmeOrder {
	t.Helper()
	var o acmeOrder
	c.getOK(t, a, url, &o)
	return o
}

func (c *rawClient) getAuthz(t testing.TB, a *rawAccount, url string) acmeAuthz {
	t.Helper()
	var z acmeAuthz
	c.getOK(t, a, url, &z)
	return z
}

func (c *rawClient) getChallenge(t testing.TB, a *rawAccount, url string) acmeChallenge {
	t.Helper()
	var ch acmeChallenge
	c.getOK(t, a, url, &ch)
	return ch
}

func (c *rawClient) getOK(t testing.TB, a *rawAccount, url string, v any) {
	t.Helper()
	r := c.postAs(t, a, url, nil)
	wantStatus(t, r, http.StatusOK)
	r.decode(t, v)
}

// poll calls status until it returns want, failing when it settles on
// another final status or pollTimeout passes.
func poll(t testing.TB, what, want string, status func() string) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		got := status()
		if got == want {
			return
		}
		if got == "valid" || got == "invalid" || got == "deactivated" || got == "expired" || got == "revoked" {
			t.Fatalf("%s is %s, want %s", what, got, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s after %s, want %s", what, got, pollTimeout, want)
		}
		time.Sleep(pollInterval)
	}
}

// makeCSR returns a base64url DER CSR for names, signed by key.
func makeCSR(t testing.TB, key crypto.Signer, names ...string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatalf("creating CSR: %v", err)
	}
	return b64(der)
}

// wantStatus fails the test unless r has the HTTP status want.
func wantStatus(t testing.TB, r *rawResponse, want int) {
	t.Helper()
	if r.Status == want {
		return
	}
	if r.Problem != nil {
		t.Fatalf("HTTP %d, want %d; problem %s: %s", r.Status, want, r.Problem.Type, r.Problem.Detail)
	}
	t.Fatalf("HTTP %d, want %d; body %q", r.Status, want, r.Body)
}

// wantProblem checks that r is a problem document of type errNS+typ with
// HTTP status, carrying the headers every ACME response has, and a detail
// that contains each of detailHas.
func (c *rawClient) wantProblem(t testing.TB, r *rawResponse, status int, typ string, detailHas ...string) *acmeProblem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != problemJSON {
		t.Fatalf("HTTP %d with Content-Type %q, want %s; body %q", r.Status, ct, problemJSON, r.Body)
	}
	p := r.Problem
	if p.Type != errNS+typ || r.Status != status {
		t.Fatalf("got HTTP %d %s (%s), want HTTP %d %s", r.Status, p.Type, p.Detail, status, errNS+typ)
	}
	if p.Status != 0 && p.Status != r.Status {
		t.Errorf("problem status %d differs from the HTTP status %d", p.Status, r.Status)
	}
	if p.Detail == "" {
		t.Error("problem has no detail")
	}
	for _, s := range detailHas {
		if !strings.Contains(p.Detail, s) {
			t.Errorf("problem detail %q does not mention %q", p.Detail, s)
		}
	}
	c.wantCommonHeaders(t, r)
	return p
}

// wantCommonHeaders checks the Replay-Nonce and the index Link that every
// ACME response carries (RFC 8555 §6.5, §7.1).
func (c *rawClient) wantCommonHeaders(t testing.TB, r *rawResponse) {
	t.Helper()
	if r.Header.Get("Replay-Nonce") == "" {
		t.Error("response has no Replay-Nonce")
	}
	index := "<" + c.ca.DirURL + `>;rel="index"`
	if !slices.Contains(r.Header.Values("Link"), index) {
		t.Errorf("response Link %q lacks %s", r.Header.Values("Link"), index)
	}
}

// responder serves http-01 key authorizations on the CA's ChallPort.
type responder struct {
	mu       sync.Mutex
	keyAuths map[string]string // by token
}

func startResponder(t testing.TB, ca *testCA) *responder {
	t.Helper()
	rs := &responder{keyAuths: make(map[string]string)}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ca.ChallPort)))
	if err != nil {
		t.Fatalf("http-01 responder: %v", err)
	}
	srv := &http.Server{Handler: rs, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http-01 responder: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return rs
}

func (rs *responder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rs.mu.Lock()
	ka, ok := rs.keyAuths[strings.TrimPrefix(r.URL.Path, challengePath)]
	rs.mu.Unlock()
	if !ok || !strings.HasPrefix(r.URL.Path, challengePath) {
		http.NotFound(w, r)
		return
	}
	io.WriteString(w, ka)
}

func (rs *responder) add(token, keyAuth string) {
	rs.mu.Lock()
	rs.keyAuths[token] = keyAuth
	rs.mu.Unlock()
}

// authorize answers the http-01 challenge of every pending authorization of
// the order through rs and waits until the order is ready.
func (c *rawClient) authorize(t testing.TB, rs *responder, a *rawAccount, orderURL string) acmeOrder {
	t.Helper()
	o := c.getOrder(t, a, orderURL)
	for _, zURL := range o.Authorizations {
		z := c.getAuthz(t, a, zURL)
		if z.Status == "valid" {
			continue
		}
		ch := z.challenge(t, "http-01")
		rs.add(ch.Token, a.Key.keyAuth(t, ch.Token))
		wantStatus(t, c.postAs(t, a, ch.URL, map[string]any{}), http.StatusOK)
	}
	poll(t, "order "+orderURL, "ready", func() string { return c.getOrder(t, a, orderURL).Status })
	return c.getOrder(t, a, orderURL)
}

// issue orders, authorizes and finalizes a certificate for names with the
// certificate key certKey, and returns the downloaded chain.
func (c *rawClient) issue(t testing.TB, rs *responder, a *rawAccount, certKey crypto.Signer, names ...string) []*x509.Certificate {
	t.Helper()
	orderURL, _ := c.newOrder(t, a, names...)
	o := c.authorize(t, rs, a, orderURL)
	r := c.postAs(t, a, o.Finalize, map[string]any{"csr": makeCSR(t, certKey, names...)})
	wantStatus(t, r, http.StatusOK)
	r.decode(t, &o)
	if o.Status != "valid" || o.Certificate == "" {
		t.Fatalf("finalized order is %s with certificate %q, want valid with a certificate", o.Status, o.Certificate)
	}
	r = c.postAs(t, a, o.Certificate, nil)
	wantStatus(t, r, http.StatusOK)
	return parsePEMCerts(t, r.Body)
}
