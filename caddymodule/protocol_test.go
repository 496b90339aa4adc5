package caddymodule

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests drive the real Caddy with rawClient, one CA per test
// function, and check the wire behaviour RFC 8555 asks for: exact problem
// types and statuses, and the headers every response carries.

// TestProtocolDirectoryAndNonce covers §7.1.1 and §7.2.
func TestProtocolDirectoryAndNonce(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)

	t.Run("GET directory lists the five resources and meta", func(t *testing.T) {
		r := c.do(t, http.MethodGet, ca.DirURL, "", nil)
		wantStatus(t, r, http.StatusOK)
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		var dir map[string]json.RawMessage
		r.decode(t, &dir)
		want := map[string]string{
			"newNonce":   "/new-nonce",
			"newAccount": "/new-account",
			"newOrder":   "/new-order",
			"revokeCert": "/revoke-cert",
			"keyChange":  "/key-change",
		}
		for field, path := range want {
			var url string
			if err := json.Unmarshal(dir[field], &url); err != nil || url != c.base()+path {
				t.Errorf("directory %s = %s, want %q", field, dir[field], c.base()+path)
			}
		}
		var meta map[string]any
		if err := json.Unmarshal(dir["meta"], &meta); err != nil || meta == nil {
			t.Errorf("directory meta = %s, want an object", dir["meta"])
		}
		if v, ok := meta["externalAccountRequired"]; !ok || v != false {
			t.Errorf("meta externalAccountRequired = %v, want false", v)
		}
	})

	t.Run("POST directory is 405 malformed", func(t *testing.T) {
		r := c.do(t, http.MethodPost, ca.DirURL, joseJSON, []byte("{}"))
		c.wantProblem(t, r, http.StatusMethodNotAllowed, "malformed", "POST")
		if allow := r.Header.Get("Allow"); allow != "GET" {
			t.Errorf("Allow %q, want GET", allow)
		}
	})

	for _, tc := range []struct {
		method string
		status int
	}{
		{http.MethodHead, http.StatusOK},
		{http.MethodGet, http.StatusNoContent},
	} {
		t.Run(tc.method+" new-nonce", func(t *testing.T) {
			r := c.do(t, tc.method, c.dir.NewNonce, "", nil)
			wantStatus(t, r, tc.status)
			if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			c.wantCommonHeaders(t, r)
			if len(r.Body) != 0 {
				t.Errorf("body %q, want none", r.Body)
			}
		})
	}
}

// TestProtocolJWS covers the request authentication of §6.2-6.5.
func TestProtocolJWS(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	acct := c.newAccount(t)
	orderURL, _ := c.newOrder(t, acct, "jws.example.test")
	rsaKey := newAcmeKey(t, "rsa2048")
	p384Key := newAcmeKey(t, "p384")
	newAcct, newOrder := c.dir.NewAccount, c.dir.NewOrder
	acctPayload := map[string]any{"termsOfServiceAgreed": true}
	orderPayload := map[string]any{"identifiers": dnsIDs("jws.example.test")}

	// signedForNewAccount is a correct newAccount JWS for a fresh key.
	signedForNewAccount := func(t *testing.T) flatJWS {
		k := newAcmeKey(t, "p256")
		return signJWS(t, k, c.header(t, k, "", newAcct), encodePayload(t, acctPayload))
	}
	wantAlgorithms := func(t *testing.T, _ *rawResponse, p *acmeProblem) {
		want := []string{"RS256", "ES256", "ES384", "ES512", "EdDSA"}
		got := slices.Clone(p.Algorithms)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("algorithms %v, want %v", p.Algorithms, want)
		}
	}

	type jwsCase struct {
		name   string
		send   func(t *testing.T) *rawResponse
		status int
		typ    string
		detail []string
		check  func(t *testing.T, r *rawResponse, p *acmeProblem)
	}
	cases := []jwsCase{
		{
			name: "general serialization",
			send: func(t *testing.T) *rawResponse {
				j := signedForNewAccount(t)
				return c.sendJWS(t, newAcct, map[string]any{
					"payload":    j.Payload,
					"signatures": []map[string]string{{"protected": j.Protected, "signature": j.Signature}},
				})
			},
			status: http.StatusBadRequest, typ: "malformed", detail: []string{"signatures"},
		},
		{
			name: "unprotected header",
			send: func(t *testing.T) *rawResponse {
				j := signedForNewAccount(t)
				return c.sendJWS(t, newAcct, map[string]any{
					"protected": j.Protected, "payload": j.Payload, "signature": j.Signature,
					"header": map[string]string{"kid": "unprotected"},
				})
			},
			status: http.StatusBadRequest, typ: "malformed", detail: []string{"unprotected header"},
		},
	}
	for _, alg := range []string{"none", "HS256", "RS384", "PS256"} {
		cases = append(cases, jwsCase{
			name: "alg " + alg,
			send: func(t *testing.T) *rawResponse {
				hdr := c.header(t, rsaKey, "", newAcct)
				hdr["alg"] = alg
				return c.postHeader(t, newAcct, rsaKey, hdr, acctPayload)
			},
			status: http.StatusBadRequest, typ: "badSignatureAlgorithm", detail: []string{strconv.Quote(alg)},
			check: wantAlgorithms,
		})
	}
	cases = append(cases, []jwsCase{
		{
			name: "alg ES256 with a P-384 key",
			send: func(t *testing.T) *rawResponse {
				hdr := c.header(t, p384Key, "", newAcct)
				hdr["alg"] = "ES256"
				return c.postHeader(t, newAcct, p384Key, hdr, acctPayload)
			},
			status: http.StatusBadRequest, typ: "badSignatureAlgorithm", detail: []string{"ES256", "P-384"},
			check: wantAlgorithms,
		},
		{
			name: "url is another resource's",
			send: func(t *testing.T) *rawResponse {
				k := newAcmeKey(t, "p256")
				hdr := c.header(t, k, "", newOrder)
				return c.postHeader(t, newAcct, k, hdr, acctPayload)
			},
			status: http.StatusForbidden, typ: "unauthorized", detail: []string{newOrder, newAcct},
		},
		{
			name: "url missing",
			send: func(t *testing.T) *rawResponse {
				k := newAcmeKey(t, "p256")
				hdr := c.header(t, k, "", newAcct)
				delete(hdr, "url")
				return c.postHeader(t, newAcct, k, hdr, acctPayload)
			},
			status: http.StatusBadRequest, typ: "malformed", detail: []string{`"url"`},
		},
		{
			name: "both jwk and kid",
			send: func(t *testing.T) *rawResponse {
				hdr := c.header(t, acct.Key, acct.URL, newOrder)
				hdr["jwk"] = acct.Key.jwk()
				return c.postHeader(t, newOrder, acct.Key, hdr, orderPayload)
			},
			status: http.StatusBadRequest, typ: "malformed", detail: []string{"jwk", "kid"},
		},
		{
			name: "jwk on newOrder",
			send: func(t *testing.T) *rawResponse {
				return c.post(t, newOrder, acct.Key, "", orderPayload)
			},
			status: http.StatusBadRequest, typ: "malformed", detail: []string{`"kid"`},
		},
		{
			name: "kid on newAccount",
			send: func(t *testing.T) *rawResponse {
				return c.post(t, newAcct, acct.Key, acct.URL, acctPayload)
			},
			status: http.StatusBadRequest, typ: "malformed", detail: []string{`"jwk"`},
		},
		{
			name: "kid of no account",
			send: func(t *testing.T) *rawResponse {
				return c.post(t, newOrder, acct.Key, c.base()+"/account/nosuchaccount", orderPayload)
			},
			status: http.StatusBadRequest, typ: "accountDoesNotExist", detail: []string{c.base() + "/account/nosuchaccount"},
		},
		{
			name: "Content-Type application/json",
			send: func(t *testing.T) *rawResponse {
				b, _ := json.Marshal(signedForNewAccount(t))
				return c.do(t, http.MethodPost, newAcct, "application/json", b)
			},
			status: http.StatusUnsupportedMediaType, typ: "malformed", detail: []string{"application/jose+json", "application/json"},
		},
		{
			name: "body over 64 KiB",
			send: func(t *testing.T) *rawResponse {
				big := map[string]any{"termsOfServiceAgreed": true, "padding": strings.Repeat("x", 64<<10)}
				return c.post(t, newAcct, newAcmeKey(t, "p256"), "", big)
			},
			status: http.StatusRequestEntityTooLarge, typ: "malformed", detail: []string{"larger"},
		},
		{
			name: "payload changed after signing",
			send: func(t *testing.T) *rawResponse {
				j := signedForNewAccount(t)
				j.Payload = b64([]byte(`{"termsOfServiceAgreed":true,"contact":["mailto:x@example.test"]}`))
				return c.sendJWS(t, newAcct, j)
			},
			status: http.StatusBadRequest, typ: "malformed", detail: []string{"signature"},
		},
		{
			name: "RSA 1024 account key",
			send: func(t *testing.T) *rawResponse {
				return c.post(t, newAcct, newAcmeKey(t, "rsa1024"), "", acctPayload)
			},
			status: http.StatusBadRequest, typ: "badPublicKey", detail: []string{"1024"},
		},
		{
			name: "RSA account key with an even exponent",
			send: func(t *testing.T) *rawResponse {
				k := newAcmeKey(t, "rsa2048")
				weak := *k.priv.(*rsa.PrivateKey)
				weak.PublicKey.E = 65536
				return c.post(t, newAcct, &acmeKey{priv: &weak, alg: "RS256"}, "", acctPayload)
			},
			status: http.StatusBadRequest, typ: "badPublicKey", detail: []string{"65536"},
		},
		{
			name: "GET on an order",
			send: func(t *testing.T) *rawResponse {
				return c.do(t, http.MethodGet, orderURL, "", nil)
			},
			status: http.StatusMethodNotAllowed, typ: "malformed", detail: []string{"GET", "POST"},
			check: func(t *testing.T, r *rawResponse, _ *acmeProblem) {
				if allow := r.Header.Get("Allow"); allow != "POST" {
					t.Errorf("Allow %q, want POST", allow)
				}
			},
		},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.send(t)
			p := c.wantProblem(t, r, tc.status, tc.typ, tc.detail...)
			if tc.check != nil {
				tc.check(t, r, p)
			}
		})
	}

	// ES512 is advertised, so the only curve it fits is accepted.
	t.Run("ECDSA P-521 account key with ES512", func(t *testing.T) {
		wantStatus(t, c.post(t, newAcct, newAcmeKey(t, "p521"), "", acctPayload), http.StatusCreated)
	})

	// A bad nonce is refused with badNonce, and the Replay-Nonce of that
	// refusal works for the retry (§6.5).
	readAccount := func(t *testing.T, hdr map[string]any) *rawResponse {
		return c.postHeader(t, acct.URL, acct.Key, hdr, nil)
	}
	unknownNonce := make([]byte, 36)
	rand.Read(unknownNonce)
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, hdr map[string]any)
	}{
		{"nonce missing", func(t *testing.T, hdr map[string]any) { delete(hdr, "nonce") }},
		{"nonce is garbage", func(t *testing.T, hdr map[string]any) { hdr["nonce"] = "not a nonce!" }},
		{"nonce was never issued", func(t *testing.T, hdr map[string]any) { hdr["nonce"] = b64(unknownNonce) }},
		{"nonce already used", func(t *testing.T, hdr map[string]any) {
			n := c.nonce(t)
			first := c.header(t, acct.Key, acct.URL, acct.URL)
			first["nonce"] = n
			wantStatus(t, readAccount(t, first), http.StatusOK)
			hdr["nonce"] = n
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := c.header(t, acct.Key, acct.URL, acct.URL)
			tc.spoil(t, hdr)
			r := readAccount(t, hdr)
			c.wantProblem(t, r, http.StatusBadRequest, "badNonce", "nonce")

			retry := c.header(t, acct.Key, acct.URL, acct.URL)
			retry["nonce"] = r.Header.Get("Replay-Nonce")
			wantStatus(t, readAccount(t, retry), http.StatusOK)
		})
	}
}

// TestProtocolNoncesSurviveReloadAndRestart: a nonce handed out before a
// config reload or a clean restart is still good after it, once.
func TestProtocolNoncesSurviveReloadAndRestart(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	a := c.newAccount(t)
	withNonce := func(n string) *rawResponse {
		hdr := c.header(t, a.Key, a.URL, a.URL)
		hdr["nonce"] = n
		return c.postHeader(t, a.URL, a.Key, hdr, nil)
	}

	// A fresh client after each reload and restart, so no request rides
	// on a connection the old server closed.
	n := c.nonce(t)
	ca.reload("website https://example.test/about")
	c = newRawClient(t, ca)
	if got := c.dir.Meta["website"]; got != "https://example.test/about" {
		t.Fatalf("after reload, directory meta website = %v; the reload did not take", got)
	}
	wantStatus(t, withNonce(n), http.StatusOK)

	n = c.nonce(t)
	ca.restart()
	c = newRawClient(t, ca)
	wantStatus(t, withNonce(n), http.StatusOK)
	c.wantProblem(t, withNonce(n), http.StatusBadRequest, "badNonce", n)
}

// TestProtocolNewAccount covers §7.3.
func TestProtocolNewAccount(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)

	for _, tc := range []struct {
		name    string
		contact string
		typ     string
	}{
		{"tel contact", "tel:+15555550100", "unsupportedContact"},
		{"two at signs", "mailto:a@b@c", "invalidContact"},
		{"hfields", "mailto:x@example.test?subject=hi", "invalidContact"},
		{"empty address", "mailto:", "invalidContact"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.post(t, c.dir.NewAccount, newAcmeKey(t, "p256"), "",
				map[string]any{"termsOfServiceAgreed": true, "contact": []string{tc.contact}})
			c.wantProblem(t, r, http.StatusBadRequest, tc.typ, tc.contact)
		})
	}

	t.Run("onlyReturnExisting with an unknown key", func(t *testing.T) {
		r := c.post(t, c.dir.NewAccount, newAcmeKey(t, "p256"), "", map[string]any{"onlyReturnExisting": true})
		c.wantProblem(t, r, http.StatusBadRequest, "accountDoesNotExist")
	})

	t.Run("same key twice", func(t *testing.T) {
		k := newAcmeKey(t, "ed25519")
		pl := map[string]any{"termsOfServiceAgreed": true, "contact": []string{"mailto:ops@example.test"}}
		first := c.post(t, c.dir.NewAccount, k, "", pl)
		wantStatus(t, first, http.StatusCreated)
		var acct acmeAccount
		first.decode(t, &acct)
		if acct.Status != "valid" || !slices.Equal(acct.Contact, pl["contact"].([]string)) {
			t.Errorf("new account status %q contact %v, want valid %v", acct.Status, acct.Contact, pl["contact"])
		}
		second := c.post(t, c.dir.NewAccount, k, "", pl)
		wantStatus(t, second, http.StatusOK)
		if l1, l2 := first.Header.Get("Location"), second.Header.Get("Location"); l1 == "" || l1 != l2 {
			t.Errorf("Location %q then %q, want the same account", l1, l2)
		}
		existing := c.post(t, c.dir.NewAccount, k, "", map[string]any{"onlyReturnExisting": true})
		wantStatus(t, existing, http.StatusOK)
		if l := existing.Header.Get("Location"); l != first.Header.Get("Location") {
			t.Errorf("onlyReturnExisting Location %q, want %q", l, first.Header.Get("Location"))
		}
	})
}

// TestProtocolTermsOfService: with terms configured, the directory
// publishes them and newAccount must agree (§7.3).
func TestProtocolTermsOfService(t *testing.T) {
	const tos = "https://example.test/tos"
	ca := startCA(t, "terms_of_service "+tos)
	c := newRawClient(t, ca)

	t.Run("directory meta", func(t *testing.T) {
		if got := c.dir.Meta["termsOfService"]; got != tos {
			t.Errorf("meta termsOfService = %v, want %s", got, tos)
		}
	})
	for _, tc := range []struct {
		name    string
		payload map[string]any
	}{
		{"termsOfServiceAgreed missing", map[string]any{"contact": []string{"mailto:ops@example.test"}}},
		{"termsOfServiceAgreed false", map[string]any{"termsOfServiceAgreed": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.post(t, c.dir.NewAccount, newAcmeKey(t, "p256"), "", tc.payload)
			c.wantProblem(t, r, http.StatusBadRequest, "malformed", tos)
		})
	}
	t.Run("agreed", func(t *testing.T) {
		r := c.post(t, c.dir.NewAccount, newAcmeKey(t, "p256"), "", map[string]any{"termsOfServiceAgreed": true})
		wantStatus(t, r, http.StatusCreated)
		var acct acmeAccount
		r.decode(t, &acct)
		if !acct.TermsOfServiceAgreed {
			t.Error("account does not record termsOfServiceAgreed")
		}
	})
}

// TestProtocolAccount covers §7.3.2-7.3.6 and the orders list of §7.1.2.1.
func TestProtocolAccount(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	a, b := c.newAccount(t), c.newAccount(t)

	t.Run("POST-as-GET", func(t *testing.T) {
		r := c.postAs(t, a, a.URL, nil)
		wantStatus(t, r, http.StatusOK)
		c.wantCommonHeaders(t, r)
		var acct acmeAccount
		r.decode(t, &acct)
		if acct.Status != "valid" || !strings.HasPrefix(acct.Orders, c.base()+"/") {
			t.Errorf("account status %q orders %q, want valid with an orders URL", acct.Status, acct.Orders)
		}
	})

	t.Run("update contact", func(t *testing.T) {
		want := []string{"mailto:new@example.test"}
		var acct acmeAccount
		r := c.postAs(t, a, a.URL, map[string]any{"contact": want})
		wantStatus(t, r, http.StatusOK)
		r.decode(t, &acct)
		if !slices.Equal(acct.Contact, want) {
			t.Errorf("contact after update %v, want %v", acct.Contact, want)
		}
		c.getOK(t, a, a.URL, &acct)
		if !slices.Equal(acct.Contact, want) {
			t.Errorf("contact read back %v, want %v", acct.Contact, want)
		}
	})

	t.Run("orders list has a new order", func(t *testing.T) {
		orderURL, _ := c.newOrder(t, a, "list.example.test")
		var acct acmeAccount
		c.getOK(t, a, a.URL, &acct)
		var list acmeOrdersList
		c.getOK(t, a, acct.Orders, &list)
		if !slices.Contains(list.Orders, orderURL) {
			t.Errorf("orders %v lack %s", list.Orders, orderURL)
		}
	})

	t.Run("another account's URL", func(t *testing.T) {
		c.wantProblem(t, c.postAs(t, a, b.URL, nil), http.StatusForbidden, "unauthorized")
	})

	t.Run("deactivate", func(t *testing.T) {
		r := c.postAs(t, b, b.URL, map[string]any{"status": "deactivated"})
		wantStatus(t, r, http.StatusOK)
		var acct acmeAccount
		r.decode(t, &acct)
		if acct.Status != "deactivated" {
			t.Fatalf("status %q after deactivation, want deactivated", acct.Status)
		}
	})

	for _, tc := range []struct {
		name    string
		url     string
		payload any
	}{
		{"deactivated account: POST-as-GET", b.URL, nil},
		{"deactivated account: newOrder", c.dir.NewOrder, map[string]any{"identifiers": dnsIDs("gone.example.test")}},
		{"deactivated account: reactivate", b.URL, map[string]any{"status": "valid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.wantProblem(t, c.postAs(t, b, tc.url, tc.payload), http.StatusForbidden, "unauthorized", "deactivated")
		})
	}
}

// TestProtocolKeyChange covers §7.3.5.
func TestProtocolKeyChange(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	a, other := c.newAccount(t), c.newAccount(t)

	// keyChange asks to roll a over to newKey; editHdr and editPayload
	// spoil the inner JWS.
	keyChange := func(t *testing.T, a *rawAccount, newKey *acmeKey, editHdr, editPayload func(*testing.T, map[string]any)) *rawResponse {
		hdr := map[string]any{"alg": newKey.alg, "jwk": newKey.jwk(), "url": c.dir.KeyChange}
		pl := map[string]any{"account": a.URL, "oldKey": a.Key.jwk()}
		if editHdr != nil {
			editHdr(t, hdr)
		}
		if editPayload != nil {
			editPayload(t, pl)
		}
		return c.postAs(t, a, c.dir.KeyChange, signJWS(t, newKey, hdr, encodePayload(t, pl)))
	}

	t.Run("new key in use by another account", func(t *testing.T) {
		r := keyChange(t, a, other.Key, nil, nil)
		c.wantProblem(t, r, http.StatusConflict, "malformed", other.URL)
		if loc := r.Header.Get("Location"); loc != other.URL {
			t.Errorf("Location %q, want the other account %s", loc, other.URL)
		}
	})

	for _, tc := range []struct {
		name        string
		editHdr     func(*testing.T, map[string]any)
		editPayload func(*testing.T, map[string]any)
		status      int
		typ         string
		detail      []string
	}{
		{
			name:    "inner JWS has a nonce",
			editHdr: func(t *testing.T, h map[string]any) { h["nonce"] = c.nonce(t) },
			status:  http.StatusBadRequest, typ: "malformed", detail: []string{"inner JWS", "nonce"},
		},
		{
			name:    "inner url differs from the outer",
			editHdr: func(t *testing.T, h map[string]any) { h["url"] = c.dir.NewAccount },
			status:  http.StatusForbidden, typ: "unauthorized", detail: []string{"inner JWS", c.dir.NewAccount},
		},
		{
			name:        "oldKey is not the account key",
			editPayload: func(t *testing.T, p map[string]any) { p["oldKey"] = newAcmeKey(t, "p256").jwk() },
			status:      http.StatusBadRequest, typ: "malformed", detail: []string{"oldKey"},
		},
		{
			name:        "account is another account",
			editPayload: func(t *testing.T, p map[string]any) { p["account"] = other.URL },
			status:      http.StatusBadRequest, typ: "malformed", detail: []string{other.URL},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := keyChange(t, a, newAcmeKey(t, "p256"), tc.editHdr, tc.editPayload)
			c.wantProblem(t, r, tc.status, tc.typ, tc.detail...)
		})
	}

	t.Run("rollover", func(t *testing.T) {
		// A new key of the same type, so the old key's requests get as
		// far as the signature check.
		oldKey, newKey := a.Key, newAcmeKey(t, "p256")
		r := keyChange(t, a, newKey, nil, nil)
		wantStatus(t, r, http.StatusOK)
		var acct acmeAccount
		r.decode(t, &acct)
		if acct.Key == nil {
			t.Fatal("account after key change has no key")
		}
		if got, _ := acct.Key.Thumbprint(crypto.SHA256); b64(got) != newKey.thumbprint(t) {
			t.Errorf("account key after change is not the new key")
		}

		// The kid still names the account, but the old key no longer
		// signs for it.
		c.wantProblem(t, c.post(t, a.URL, oldKey, a.URL, nil), http.StatusBadRequest, "malformed", "signature")
		wantStatus(t, c.post(t, a.URL, newKey, a.URL, nil), http.StatusOK)

		r = c.post(t, c.dir.NewAccount, newKey, "", map[string]any{"onlyReturnExisting": true})
		wantStatus(t, r, http.StatusOK)
		if loc := r.Header.Get("Location"); loc != a.URL {
			t.Errorf("newAccount with the new key finds %q, want %s", loc, a.URL)
		}
		r = c.post(t, c.dir.NewAccount, oldKey, "", map[string]any{"onlyReturnExisting": true})
		c.wantProblem(t, r, http.StatusBadRequest, "accountDoesNotExist")
		a.Key = newKey
	})
}

// TestProtocolNewOrder covers §7.4 up to the authorizations it creates.
// Names that do not parse are malformed (as in Boulder); names the policy
// refuses are rejectedIdentifier; identifier types it refuses are
// unsupportedIdentifier.
func TestProtocolNewOrder(t *testing.T) {
	const denied = "denied.example.test"
	ca := startCA(t, "policy {\n\t\t\tdeny_domains "+denied+"\n\t\t}")
	c := newRawClient(t, ca)
	a := c.newAccount(t)

	for _, tc := range []struct {
		name    string
		payload map[string]any
		typ     string
		detail  string
	}{
		{"notBefore", map[string]any{"identifiers": dnsIDs("nb.example.test"), "notBefore": time.Now().UTC().Format(time.RFC3339)}, "malformed", "notBefore"},
		{"ip identifier", map[string]any{"identifiers": []acmeIdentifier{{Type: "ip", Value: "127.0.0.1"}}}, "unsupportedIdentifier", "127.0.0.1"},
		{"unknown identifier type", map[string]any{"identifiers": []acmeIdentifier{{Type: "email", Value: "x@example.test"}}}, "unsupportedIdentifier", `"email"`},
		{"underscore", map[string]any{"identifiers": dnsIDs("bad_name.test")}, "malformed", "bad_name.test"},
		{"empty label", map[string]any{"identifiers": dnsIDs("a..b.test")}, "malformed", "a..b.test"},
		{"single label", map[string]any{"identifiers": dnsIDs("single")}, "malformed", "single"},
		{"trailing dot", map[string]any{"identifiers": dnsIDs("trailing.dot.")}, "malformed", "trailing.dot."},
		{"denied by policy", map[string]any{"identifiers": dnsIDs(denied)}, "rejectedIdentifier", denied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.wantProblem(t, c.postAs(t, a, c.dir.NewOrder, tc.payload), http.StatusBadRequest, tc.typ, tc.detail)
		})
	}

	t.Run("two bad identifiers make a compound problem", func(t *testing.T) {
		bad := dnsIDs("bad_name.test", denied)
		wantTypes := []string{errNS + "malformed", errNS + "rejectedIdentifier"}
		r := c.postAs(t, a, c.dir.NewOrder, map[string]any{"identifiers": append(dnsIDs("good.example.test"), bad...)})
		p := c.wantProblem(t, r, http.StatusBadRequest, "compound")
		if len(p.Subproblems) != len(bad) {
			t.Fatalf("%d subproblems, want %d: %+v", len(p.Subproblems), len(bad), p.Subproblems)
		}
		for i, sp := range p.Subproblems {
			if sp.Type != wantTypes[i] || sp.Identifier != bad[i] || !strings.Contains(sp.Detail, bad[i].Value) {
				t.Errorf("subproblem %d = %+v, want %s for %+v", i, sp, wantTypes[i], bad[i])
			}
		}
	})

	t.Run("wildcard", func(t *testing.T) {
		_, o := c.newOrder(t, a, "*.wild.example.test")
		if len(o.Authorizations) != 1 {
			t.Fatalf("%d authorizations, want 1", len(o.Authorizations))
		}
		z := c.getAuthz(t, a, o.Authorizations[0])
		if !z.Wildcard || z.Identifier != (acmeIdentifier{Type: "dns", Value: "wild.example.test"}) {
			t.Errorf("authorization wildcard=%v identifier=%+v, want wildcard for dns wild.example.test", z.Wildcard, z.Identifier)
		}
		if len(z.Challenges) != 1 || z.Challenges[0].Type != "dns-01" {
			t.Errorf("challenges %+v, want dns-01 only", z.Challenges)
		}
	})

	t.Run("plain name", func(t *testing.T) {
		orderURL, o := c.newOrder(t, a, "plain.example.test")
		if o.Status != "pending" || !strings.HasPrefix(orderURL, c.base()+"/") {
			t.Errorf("order %s status %q, want pending", orderURL, o.Status)
		}
		z := c.getAuthz(t, a, o.Authorizations[0])
		if z.Wildcard || z.Status != "pending" || z.Identifier.Value != "plain.example.test" {
			t.Errorf("authorization %+v, want a pending non-wildcard one for plain.example.test", z)
		}
		var types []string
		tokens, urls := map[string]bool{}, map[string]bool{}
		for _, ch := range z.Challenges {
			types = append(types, ch.Type)
			if len(ch.Token) < 22 || ch.Status != "pending" {
				t.Errorf("challenge %+v: want pending with a token of 128 bits or more", ch)
			}
			tokens[ch.Token], urls[ch.URL] = true, true
		}
		if want := []string{"http-01", "dns-01", "tls-alpn-01"}; !slices.Equal(types, want) {
			t.Errorf("challenge types %v, want %v", types, want)
		}
		if len(tokens) != len(z.Challenges) || len(urls) != len(z.Challenges) {
			t.Errorf("challenges share tokens or URLs: %+v", z.Challenges)
		}
	})

	t.Run("second order reuses the pending authorization", func(t *testing.T) {
		url1, o1 := c.newOrder(t, a, "reuse.example.test")
		url2, o2 := c.newOrder(t, a, "reuse.example.test")
		if url1 == url2 {
			t.Errorf("both orders are %s", url1)
		}
		if !slices.Equal(o1.Authorizations, o2.Authorizations) {
			t.Errorf("authorizations %v then %v, want the same", o1.Authorizations, o2.Authorizations)
		}
	})
}

// TestProtocolAuthorization covers §7.5 and §7.5.2.
func TestProtocolAuthorization(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	a, b := c.newAccount(t), c.newAccount(t)
	orderURL, o := c.newOrder(t, a, "deactivate.example.test")
	authzURL := o.Authorizations[0]

	for _, tc := range []struct {
		name    string
		payload any
	}{
		{"another account reads it", nil},
		{"another account deactivates it", map[string]any{"status": "deactivated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.wantProblem(t, c.postAs(t, b, authzURL, tc.payload), http.StatusForbidden, "unauthorized")
		})
	}

	t.Run("deactivate pending", func(t *testing.T) {
		r := c.postAs(t, a, authzURL, map[string]any{"status": "deactivated"})
		wantStatus(t, r, http.StatusOK)
		var z acmeAuthz
		r.decode(t, &z)
		if z.Status != "deactivated" {
			t.Errorf("authorization status %q, want deactivated", z.Status)
		}
		if z = c.getAuthz(t, a, authzURL); z.Status != "deactivated" {
			t.Errorf("authorization read back as %q, want deactivated", z.Status)
		}
		if o := c.getOrder(t, a, orderURL); o.Status != "invalid" {
			t.Errorf("order status %q after deactivating its authorization, want invalid", o.Status)
		}
	})
}

// TestProtocolChallengeFailure: http-01 with nothing listening fails with a
// connection problem, and the failure reaches the authorization and order.
func TestProtocolChallengeFailure(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	a := c.newAccount(t)
	const name = "unreachable.example.test"
	orderURL, o := c.newOrder(t, a, name)
	ch := c.getAuthz(t, a, o.Authorizations[0]).challenge(t, "http-01")

	r := c.postAs(t, a, ch.URL, map[string]any{})
	wantStatus(t, r, http.StatusOK)
	up := "<" + o.Authorizations[0] + `>;rel="up"`
	if !slices.Contains(r.Header.Values("Link"), up) {
		t.Errorf("challenge response Link %q lacks %s", r.Header.Values("Link"), up)
	}

	poll(t, "challenge", "invalid", func() string { return c.getChallenge(t, a, ch.URL).Status })
	got := c.getChallenge(t, a, ch.URL)
	wantURL := fmt.Sprintf("http://%s:%d%s%s", name, ca.ChallPort, challengePath, ch.Token)
	if got.Error == nil || got.Error.Type != errNS+"connection" || !strings.Contains(got.Error.Detail, wantURL) {
		t.Errorf("challenge error %+v, want connection naming %s", got.Error, wantURL)
	}
	if z := c.getAuthz(t, a, o.Authorizations[0]); z.Status != "invalid" {
		t.Errorf("authorization status %q, want invalid", z.Status)
	}
	if o := c.getOrder(t, a, orderURL); o.Status != "invalid" || o.Error == nil {
		t.Errorf("order status %q error %+v, want invalid with an error", o.Status, o.Error)
	}
}

// TestProtocolFinalize covers §7.4 finalize and §7.4.2 download.
func TestProtocolFinalize(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	rs := startResponder(t, ca)
	a := c.newAccount(t)
	names := []string{"fin.example.test", "www.fin.example.test"}
	orderURL, o := c.newOrder(t, a, names...)
	certKey := newAcmeKey(t, "p256").priv
	finalize := func(t *testing.T, csr string) *rawResponse {
		return c.postAs(t, a, o.Finalize, map[string]any{"csr": csr})
	}

	t.Run("before validation", func(t *testing.T) {
		c.wantProblem(t, finalize(t, makeCSR(t, certKey, names...)), http.StatusForbidden, "orderNotReady", "pending")
	})

	if o = c.authorize(t, rs, a, orderURL); o.Status != "ready" {
		t.Fatalf("order is %s, want ready", o.Status)
	}

	for _, tc := range []struct {
		name   string
		csr    func(t *testing.T) string
		detail string
	}{
		{"CSR not base64url", func(*testing.T) string { return "MII+/not base64url!" }, "base64url"},
		{"CSR with an extra name", func(t *testing.T) string {
			return makeCSR(t, certKey, append(slices.Clone(names), "extra.example.test")...)
		}, "extra.example.test"},
		{"CSR missing a name", func(t *testing.T) string { return makeCSR(t, certKey, names[0]) }, names[1]},
		{"CSR with the account key", func(t *testing.T) string { return makeCSR(t, a.Key.priv, names...) }, "account key"},
		{"CSR with an RSA 1024 key", func(t *testing.T) string {
			return makeCSR(t, newAcmeKey(t, "rsa1024").priv, names...)
		}, "1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.wantProblem(t, finalize(t, tc.csr(t)), http.StatusBadRequest, "badCSR", tc.detail)
			if o := c.getOrder(t, a, orderURL); o.Status != "ready" {
				t.Errorf("order is %s after a bad CSR, want still ready", o.Status)
			}
		})
	}

	t.Run("good CSR", func(t *testing.T) {
		r := finalize(t, makeCSR(t, certKey, names...))
		wantStatus(t, r, http.StatusOK)
		var fin acmeOrder
		r.decode(t, &fin)
		if fin.Status != "valid" || fin.Certificate == "" {
			t.Fatalf("order after finalize is %s with certificate %q, want valid with a URL", fin.Status, fin.Certificate)
		}
		r = c.postAs(t, a, fin.Certificate, nil)
		wantStatus(t, r, http.StatusOK)
		c.wantCommonHeaders(t, r)
		if ct := r.Header.Get("Content-Type"); ct != pemChainType {
			t.Errorf("certificate Content-Type %q, want %s", ct, pemChainType)
		}
		if chain := parsePEMCerts(t, r.Body); len(chain) != 2 {
			t.Errorf("chain has %d certificates, want leaf and intermediate", len(chain))
		}
		verifyLeaf(t, ca, r.Body, names)
	})

	t.Run("finalize again", func(t *testing.T) {
		c.wantProblem(t, finalize(t, makeCSR(t, certKey, names...)), http.StatusForbidden, "orderNotReady", "valid")
	})
}

// TestProtocolRevokeCert covers §7.6.
func TestProtocolRevokeCert(t *testing.T) {
	ca := startCA(t, "")
	c := newRawClient(t, ca)
	rs := startResponder(t, ca)
	owner, holder, stranger := c.newAccount(t), c.newAccount(t), c.newAccount(t)
	certKey := newAcmeKey(t, "p256")
	leaf := c.issue(t, rs, owner, certKey.priv, "revoke.example.test")[0]
	revocation := func(cert []byte, reason int) map[string]any {
		return map[string]any{"certificate": b64(cert), "reason": reason}
	}

	for _, reason := range []int{2, 7} {
		t.Run("reason "+strconv.Itoa(reason), func(t *testing.T) {
			r := c.postAs(t, owner, c.dir.RevokeCert, revocation(leaf.Raw, reason))
			c.wantProblem(t, r, http.StatusBadRequest, "badRevocationReason", strconv.Itoa(reason))
		})
	}

	t.Run("account without authorizations", func(t *testing.T) {
		r := c.postAs(t, stranger, c.dir.RevokeCert, revocation(leaf.Raw, 0))
		c.wantProblem(t, r, http.StatusForbidden, "unauthorized", "revoke.example.test")
	})

	t.Run("certificate key", func(t *testing.T) {
		r := c.post(t, c.dir.RevokeCert, certKey, "", revocation(leaf.Raw, 1))
		wantStatus(t, r, http.StatusOK)
		c.wantCommonHeaders(t, r)
	})

	t.Run("already revoked", func(t *testing.T) {
		r := c.post(t, c.dir.RevokeCert, certKey, "", revocation(leaf.Raw, 1))
		c.wantProblem(t, r, http.StatusBadRequest, "alreadyRevoked")
	})

	t.Run("account holding authorizations for all names", func(t *testing.T) {
		names := []string{"held.example.test", "www.held.example.test"}
		other := c.issue(t, rs, owner, newAcmeKey(t, "p256").priv, names...)[0]
		orderURL, _ := c.newOrder(t, holder, names...)
		c.authorize(t, rs, holder, orderURL)
		r := c.postAs(t, holder, c.dir.RevokeCert, revocation(other.Raw, 4))
		wantStatus(t, r, http.StatusOK)
	})
}
