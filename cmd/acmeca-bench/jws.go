package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

var b64 = base64.RawURLEncoding

// accountKey is an ES256 account key with its JWK and thumbprint worked
// out once, so signing a request costs one ECDSA signature.
type accountKey struct {
	priv       *ecdsa.PrivateKey
	jwk        json.RawMessage // RFC 7638 canonical form, also sent in the header
	thumbprint string          // base64url SHA-256 of jwk
}

func newAccountKey() (*accountKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := priv.PublicKey.ECDH()
	if err != nil {
		return nil, err
	}
	point := pub.Bytes() // 0x04 || X || Y
	// Members in lexicographic order, no white space: the form RFC 7638
	// hashes. Base64url text needs no JSON escaping.
	jwk := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, b64.EncodeToString(point[1:33]), b64.EncodeToString(point[33:]))
	sum := sha256.Sum256([]byte(jwk))
	return &accountKey{priv: priv, jwk: json.RawMessage(jwk), thumbprint: b64.EncodeToString(sum[:])}, nil
}

// keyAuthorization is RFC 8555 §8.1's token.thumbprint.
func (k *accountKey) keyAuthorization(token string) string { return token + "." + k.thumbprint }

// dns01Digest is the TXT record value of dns-01 (RFC 8555 §8.4).
func dns01Digest(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return b64.EncodeToString(sum[:])
}

type protectedHeader struct {
	Alg   string          `json:"alg"`
	JWK   json.RawMessage `json:"jwk,omitempty"`
	KID   string          `json:"kid,omitempty"`
	Nonce string          `json:"nonce"`
	URL   string          `json:"url"`
}

type flattenedJWS struct {
	Protected string `json:"protected"`
	Payload   string `json:"payload"`
	Signature string `json:"signature"`
}

// sign makes a flattened JWS (RFC 8555 §6.2). With kid empty the header
// carries the JWK (newAccount); a nil payload makes a POST-as-GET.
func (k *accountKey) sign(url, nonce, kid string, payload []byte) ([]byte, error) {
	h := protectedHeader{Alg: "ES256", KID: kid, Nonce: nonce, URL: url}
	if kid == "" {
		h.JWK = k.jwk
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	protected := b64.EncodeToString(hdr)
	var pl string
	if payload != nil {
		pl = b64.EncodeToString(payload)
	}
	digest := sha256.Sum256([]byte(protected + "." + pl))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, digest[:])
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 64) // JWS ES256 is R || S, 32 bytes each (RFC 7518 §3.4)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return json.Marshal(flattenedJWS{Protected: protected, Payload: pl, Signature: b64.EncodeToString(sig)})
}

// keyPool holds account keys generated before the timing starts. A key
// serves one account of one server; keys that are used are dropped. When
// the pool runs dry, take makes a key on the spot and counts it, so the
// report can say so.
type keyPool struct {
	mu     sync.Mutex
	keys   []*accountKey
	inline atomic.Int64
}

func (p *keyPool) take() (*accountKey, error) {
	p.mu.Lock()
	if n := len(p.keys); n > 0 {
		k := p.keys[n-1]
		p.keys[n-1] = nil
		p.keys = p.keys[:n-1]
		p.mu.Unlock()
		return k, nil
	}
	p.mu.Unlock()
	p.inline.Add(1)
	return newAccountKey()
}

// fill generates keys, on every CPU, until the pool holds n.
func (p *keyPool) fill(ctx context.Context, n int) error {
	p.mu.Lock()
	missing := n - len(p.keys)
	p.mu.Unlock()
	if missing <= 0 {
		return nil
	}
	var left atomic.Int64
	left.Store(int64(missing))
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			var batch []*accountKey
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				k, err := newAccountKey()
				if err != nil {
					errs <- err
					return
				}
				batch = append(batch, k)
			}
			p.mu.Lock()
			p.keys = append(p.keys, batch...)
			p.mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}
