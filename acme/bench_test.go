package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/acmeca/caddy-acmeca/storage"
)

// benchServer is a Server on file storage with one account, and a signer
// that makes flattened JWS requests for it.
func benchServer(b *testing.B) (*Server, func(url, nonce string, payload []byte) []byte) {
	store := newTestStore(b)
	nonces := newTestNonces(b, store, "bench")
	s := NewServer(Config{Store: store, Shared: NewShared(nonces)})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key.Public()}
	thumb, _ := thumbprint(&jwk)
	keyJSON, _ := jwk.MarshalJSON()
	acct := &storage.Account{ID: accountIDFor(thumb), Status: storage.StatusValid, Key: keyJSON, Thumbprint: thumb}
	if err := store.PutAccount(context.Background(), acct); err != nil {
		b.Fatal(err)
	}
	kid := "https://ca.test/acme/account/" + acct.ID
	sign := func(url, nonce string, payload []byte) []byte {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, &jose.SignerOptions{
			ExtraHeaders: map[jose.HeaderKey]any{"kid": kid, "url": url, "nonce": nonce},
		})
		if err != nil {
			b.Fatal(err)
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			b.Fatal(err)
		}
		out := jws.FullSerialize()
		return []byte(out)
	}
	return s, sign
}

// BenchmarkVerifyJWS: the cost of authenticating one request (envelope,
// account lookup, ES256 signature, nonce).
func BenchmarkVerifyJWS(b *testing.B) {
	s, sign := benchServer(b)
	ctx := context.WithValue(context.Background(), baseURLKey, "https://ca.test/acme")
	url := "https://ca.test/acme/new-order"
	bodies := make([][]byte, b.N)
	payload, _ := json.Marshal(map[string]any{"identifiers": []any{}})
	for i := range bodies {
		bodies[i] = sign(url, s.nonces.New(), payload)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, p := s.verifyJWS(ctx, bodies[i], url, useKID, true); p != nil {
			b.Fatal(p)
		}
	}
}
