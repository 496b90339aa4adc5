package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"
)

// worker runs flows one after another against one server. It is used by
// one goroutine only.
type worker struct {
	srv      *server
	cfg      *config
	env      *env
	hc       *http.Client
	win      *window
	keys     *keyPool
	certKeys []*ecdsa.PrivateKey

	nonce     string   // the Replay-Nonce of the last response, unused
	acct      *account // the worker's account, with -reuse-accounts
	flows     int      // flows started by this worker
	published []func() // withdraw the current flow's challenge responses
	lat       [numReqTypes][]time.Duration
	badNonce  int // badNonce answers retried
	verified  int // chains verified against the root, inside the window
}

type account struct {
	key *accountKey
	url string // the kid
}

// env is what the bench serves to the CAs while flows run.
type env struct {
	http01 *http01Server
	dns    *dnsServer
}

// window is the measured part of a phase, as UnixNano times. A request or
// flow counts if it ends inside it; start 0 means not started yet, end 0
// not ended yet.
type window struct {
	start, end atomic.Int64
}

func (w *window) contains(t time.Time) bool {
	s := w.start.Load()
	if s == 0 || t.UnixNano() < s {
		return false
	}
	e := w.end.Load()
	return e == 0 || t.UnixNano() <= e
}

func (w *worker) record(typ reqType, d time.Duration, end time.Time) {
	if w.win.contains(end) {
		w.lat[typ] = append(w.lat[typ], d)
	}
}

// The resources a flow reads.
type orderObj struct {
	Status         string          `json:"status"`
	Authorizations []string        `json:"authorizations"`
	Finalize       string          `json:"finalize"`
	Certificate    string          `json:"certificate"`
	Error          json.RawMessage `json:"error"`
}

type challengeObj struct {
	Type   string          `json:"type"`
	URL    string          `json:"url"`
	Token  string          `json:"token"`
	Status string          `json:"status"`
	Error  json.RawMessage `json:"error"`
}

type authzObj struct {
	Status     string `json:"status"`
	Identifier struct {
		Value string `json:"value"`
	} `json:"identifier"`
	Challenges []challengeObj `json:"challenges"`
}

// flowNames are the names of flow seq: a registered domain per flow
// (r<seq>.bench-test), so no two flows share a rate limit bucket.
func flowNames(seq int64, n int) []string {
	names := make([]string, n)
	for i := range names {
		if i == 0 {
			names[i] = fmt.Sprintf("f%d.r%d.bench-test", seq, seq)
		} else {
			names[i] = fmt.Sprintf("f%d-%d.r%d.bench-test", seq, i, seq)
		}
	}
	return names
}

// flow runs one complete issuance: account, order, authorizations,
// challenges, finalize, download, and checks the certificate.
func (w *worker) flow(ctx context.Context, seq int64) error {
	names := flowNames(seq, w.cfg.names)
	w.flows++
	defer func() {
		for _, withdraw := range w.published {
			withdraw()
		}
		w.published = w.published[:0]
	}()

	acct := w.acct
	if acct == nil {
		// A new client: directory, a first nonce, a new account.
		if _, err := w.get(ctx, reqDirectory, w.srv.directoryURL); err != nil {
			return err
		}
		if err := w.newNonce(ctx); err != nil {
			return err
		}
		key, err := w.keys.take()
		if err != nil {
			return err
		}
		r, err := w.post(ctx, reqNewAccount, w.srv.dir0.NewAccount, key, "", []byte(`{"termsOfServiceAgreed":true}`), http.StatusCreated)
		if err != nil {
			return err
		}
		if r.location == "" {
			return fmt.Errorf("%s: no Location", reqNewAccount)
		}
		acct = &account{key: key, url: r.location}
		if w.cfg.reuseAccounts {
			w.acct = acct
		}
	}

	type ident struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	var req struct {
		Identifiers []ident `json:"identifiers"`
	}
	for _, n := range names {
		req.Identifiers = append(req.Identifiers, ident{"dns", n})
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := w.post(ctx, reqNewOrder, w.srv.dir0.NewOrder, acct.key, acct.url, payload, http.StatusCreated)
	if err != nil {
		return err
	}
	orderURL := r.location
	var order orderObj
	if err := decode(reqNewOrder, r, &order); err != nil {
		return err
	}
	if orderURL == "" || order.Finalize == "" || len(order.Authorizations) != len(names) {
		return fmt.Errorf("%s: odd order (Location %q): %.300s", reqNewOrder, orderURL, r.body)
	}

	// Answer every challenge first, then wait for the authorizations, so
	// the validations of a multi-name order overlap.
	var waitFor []string
	for _, authzURL := range order.Authorizations {
		pending, err := w.answer(ctx, acct, authzURL)
		if err != nil {
			return err
		}
		if pending {
			waitFor = append(waitFor, authzURL)
		}
	}
	for _, authzURL := range waitFor {
		if err := w.waitValid(ctx, acct, authzURL); err != nil {
			return err
		}
	}

	certKey := w.certKeys[seq%int64(len(w.certKeys))]
	csr, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: names[0]},
		DNSNames: names,
	}, certKey)
	if err != nil {
		return err
	}
	r, err = w.post(ctx, reqFinalize, order.Finalize, acct.key, acct.url, fmt.Appendf(nil, `{"csr":"%s"}`, b64.EncodeToString(csr)), http.StatusOK)
	if err != nil {
		return err
	}
	if err := decode(reqFinalize, r, &order); err != nil {
		return err
	}
	for order.Status != "valid" {
		switch order.Status {
		case "processing", "ready", "pending":
		default:
			return fmt.Errorf("order %s is %s after finalize: %s", orderURL, order.Status, order.Error)
		}
		if err := sleep(ctx, w.cfg.poll); err != nil {
			return err
		}
		r, err := w.post(ctx, reqOrder, orderURL, acct.key, acct.url, nil, http.StatusOK)
		if err != nil {
			return err
		}
		if err := decode(reqOrder, r, &order); err != nil {
			return err
		}
	}
	if order.Certificate == "" {
		return fmt.Errorf("order %s is valid without a certificate URL", orderURL)
	}

	r, err = w.post(ctx, reqCert, order.Certificate, acct.key, acct.url, nil, http.StatusOK)
	if err != nil {
		return err
	}
	return w.checkChain(r.body, names, w.flows == 1 || (w.cfg.verifyEvery > 0 && seq%int64(w.cfg.verifyEvery) == 0))
}

// answer fetches an authorization and answers its challenge. It reports
// whether the authorization still has to be polled.
func (w *worker) answer(ctx context.Context, acct *account, authzURL string) (bool, error) {
	r, err := w.post(ctx, reqAuthz, authzURL, acct.key, acct.url, nil, http.StatusOK)
	if err != nil {
		return false, err
	}
	var a authzObj
	if err := decode(reqAuthz, r, &a); err != nil {
		return false, err
	}
	if a.Status == "valid" {
		return false, nil // reused
	}
	if a.Status != "pending" {
		return false, fmt.Errorf("authorization %s is %s: %.300s", authzURL, a.Status, r.body)
	}
	i := slices.IndexFunc(a.Challenges, func(c challengeObj) bool { return c.Type == w.cfg.challenge })
	if i < 0 {
		return false, fmt.Errorf("authorization %s offers no %s challenge: %.300s", authzURL, w.cfg.challenge, r.body)
	}
	ch := a.Challenges[i]
	keyAuth := acct.key.keyAuthorization(ch.Token)
	if w.cfg.challenge == "dns-01" {
		name := "_acme-challenge." + a.Identifier.Value
		w.env.dns.setTXT(name, dns01Digest(keyAuth))
		w.published = append(w.published, func() { w.env.dns.clearTXT(name) })
	} else {
		w.env.http01.publish(ch.Token, keyAuth)
		w.published = append(w.published, func() { w.env.http01.withdraw(ch.Token) })
	}
	r, err = w.post(ctx, reqChallenge, ch.URL, acct.key, acct.url, []byte("{}"), http.StatusOK)
	if err != nil {
		return false, err
	}
	var c challengeObj
	if err := decode(reqChallenge, r, &c); err != nil {
		return false, err
	}
	switch c.Status {
	case "valid":
		return false, nil // validated while answering (Caddy's acme_server does this)
	case "invalid":
		return false, fmt.Errorf("challenge %s is invalid: %s", ch.URL, c.Error)
	}
	return true, nil
}

// waitValid polls an authorization at the fixed interval until it is
// valid.
func (w *worker) waitValid(ctx context.Context, acct *account, authzURL string) error {
	for {
		if err := sleep(ctx, w.cfg.poll); err != nil {
			return err
		}
		r, err := w.post(ctx, reqPoll, authzURL, acct.key, acct.url, nil, http.StatusOK)
		if err != nil {
			return err
		}
		var a authzObj
		if err := decode(reqPoll, r, &a); err != nil {
			return err
		}
		switch a.Status {
		case "valid":
			return nil
		case "pending":
			continue
		}
		// The challenge's error is the problem document that says why.
		for _, c := range a.Challenges {
			if len(c.Error) > 0 {
				return fmt.Errorf("authorization %s is %s: %s challenge error %s", authzURL, a.Status, c.Type, c.Error)
			}
		}
		return fmt.Errorf("authorization %s is %s: %.300s", authzURL, a.Status, r.body)
	}
}

// checkChain parses the downloaded chain and checks the leaf names the
// order's names; with verify, it also verifies the chain up to the
// server's root. Flows verify a sample: each worker's first flow and every
// -verify-every-th flow of the run.
func (w *worker) checkChain(pemChain []byte, names []string, verify bool) error {
	var certs []*x509.Certificate
	for rest := pemChain; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("%s: unexpected PEM block %q", reqCert, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("%s: %v", reqCert, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return fmt.Errorf("%s: no certificate in %.200q", reqCert, pemChain)
	}
	leaf := certs[0]
	got := slices.Sorted(slices.Values(leaf.DNSNames))
	if want := slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
		return fmt.Errorf("%s: certificate names %v, ordered %v", reqCert, got, want)
	}
	if !verify {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         w.srv.roots,
		Intermediates: inter,
		DNSName:       names[0],
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("%s: the chain does not verify to the server's root: %v", reqCert, err)
	}
	if w.win.contains(time.Now()) {
		w.verified++
	}
	return nil
}

// sleep waits d, or less if ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
