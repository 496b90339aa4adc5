package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-jose/go-jose/v4"

	"github.com/acmeca/caddy-acmeca/storage"
)

// MaxRequestBody bounds a JWS request body. The largest legitimate request,
// a revokeCert or finalize carrying an RSA-4096 certificate or CSR, is a few
// KiB.
const MaxRequestBody = 64 << 10

// SignatureAlgorithms are the JWS algorithms accepted on account keys.
var SignatureAlgorithms = []string{"RS256", "ES256", "ES384", "ES512", "EdDSA"}

var joseAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// keyUse says whether an endpoint authenticates with an account (kid) or
// with a bare key (jwk).
type keyUse int

const (
	useKID      keyUse = iota // every endpoint but the two below
	useJWK                    // newAccount
	useJWKOrKID               // revokeCert
)

// signedRequest is an authenticated POST body.
type signedRequest struct {
	Payload   []byte
	PostAsGet bool // the payload is the empty string (RFC 8555 §6.3)
	URL       string
	Account   *storage.Account // set when the JWS names an account (kid)
	JWK       *jose.JSONWebKey // set when the JWS carries its key (jwk)
}

// protectedHeader is the part of the JWS protected header ACME cares about,
// parsed by us so we can tell apart absent and empty fields.
type protectedHeader struct {
	Alg   string          `json:"alg"`
	Nonce *string         `json:"nonce"`
	URL   *string         `json:"url"`
	KID   *string         `json:"kid"`
	JWK   json.RawMessage `json:"jwk"`
}

// readJWS reads and checks the flattened JWS of a request (RFC 8555 §6.2),
// in the order that gives a client the most useful answer: the envelope, the
// algorithm, the URL, the key, the signature, then the nonce (so a forged
// request cannot burn a nonce).
func (s *Server) readJWS(r *http.Request, use keyUse) (*signedRequest, *Problem) {
	if ct := r.Header.Get("Content-Type"); !strings.EqualFold(strings.TrimSpace(strings.Split(ct, ";")[0]), "application/jose+json") {
		return nil, Malformed("Content-Type must be application/jose+json, not %q", ct).WithStatus(http.StatusUnsupportedMediaType)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBody+1))
	if err != nil {
		return nil, Malformed("reading request body: %v", err)
	}
	if len(body) > MaxRequestBody {
		return nil, Malformed("request body is larger than %d bytes", MaxRequestBody).WithStatus(http.StatusRequestEntityTooLarge)
	}
	return s.verifyJWS(r.Context(), body, s.requestURL(r), use, true)
}

// verifyJWS checks a flattened JWS for the request URL. With needNonce false
// (the inner JWS of a key change) the nonce must be absent instead.
func (s *Server) verifyJWS(ctx context.Context, body []byte, url string, use keyUse, needNonce bool) (*signedRequest, *Problem) {
	var envelope map[string]json.RawMessage
	if err := json.Unmarshal(body, &envelope); err != nil {
		return nil, Malformed("request body is not a JSON object: %v", err)
	}
	for k := range envelope {
		switch k {
		case "protected", "payload", "signature":
		case "signatures":
			return nil, Malformed("JWS must use the flattened JSON serialization, not the general one (no \"signatures\" array)")
		case "header":
			return nil, Malformed("JWS must not have an unprotected header")
		default:
			return nil, Malformed("JWS has an unknown field %q", k)
		}
	}
	for _, k := range []string{"protected", "payload", "signature"} {
		if _, ok := envelope[k]; !ok {
			return nil, Malformed("JWS is missing the %q field (flattened JSON serialization required)", k)
		}
	}
	var protectedB64 string
	if err := json.Unmarshal(envelope["protected"], &protectedB64); err != nil {
		return nil, Malformed("JWS \"protected\" must be a string")
	}
	protectedJSON, err := base64.RawURLEncoding.DecodeString(protectedB64)
	if err != nil {
		return nil, Malformed("JWS protected header is not base64url: %v", err)
	}
	var hdr protectedHeader
	if err := json.Unmarshal(protectedJSON, &hdr); err != nil {
		return nil, Malformed("JWS protected header is not a JSON object: %v", err)
	}

	if !contains(SignatureAlgorithms, hdr.Alg) {
		p := NewProblem(ErrBadSignatureAlgorithm, "JWS algorithm %q is not supported; use one of %s", hdr.Alg, strings.Join(SignatureAlgorithms, ", "))
		p.Algorithms = SignatureAlgorithms
		return nil, p
	}
	if hdr.URL == nil {
		return nil, Malformed("JWS protected header has no \"url\"")
	}
	if *hdr.URL != url {
		return nil, Unauthorized("JWS header \"url\" is %q but the request went to %q", *hdr.URL, url)
	}

	hasJWK, hasKID := len(hdr.JWK) > 0 && string(hdr.JWK) != "null", hdr.KID != nil
	if hasJWK == hasKID {
		return nil, Malformed("JWS protected header must have exactly one of \"jwk\" and \"kid\"")
	}
	if hasJWK && use == useKID {
		return nil, Malformed("this resource requires a \"kid\" naming your account, not a \"jwk\"")
	}
	if hasKID && use == useJWK {
		return nil, Malformed("newAccount requires a \"jwk\" with the account key, not a \"kid\"")
	}

	jws, err := jose.ParseSignedJSON(string(body), joseAlgorithms)
	if err != nil {
		return nil, Malformed("parsing JWS: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, Malformed("JWS must have exactly one signature")
	}

	req := &signedRequest{URL: url}
	var key *jose.JSONWebKey
	if hasJWK {
		key = jws.Signatures[0].Protected.JSONWebKey
		if key == nil || !key.Valid() || !key.IsPublic() {
			return nil, NewProblem(ErrBadPublicKey, "JWS \"jwk\" is not a valid public key")
		}
		if p := CheckAccountKey(key.Key); p != nil {
			return nil, p
		}
		req.JWK = key
	} else {
		acct, acctKey, p := s.accountByKID(ctx, *hdr.KID)
		if p != nil {
			return nil, p
		}
		key = acctKey
		req.Account = acct
	}
	if p := checkAlgMatchesKey(hdr.Alg, key.Key); p != nil {
		return nil, p
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, Malformed("JWS signature does not verify with the account key: %v", err)
	}

	if needNonce {
		if hdr.Nonce == nil || *hdr.Nonce == "" {
			return nil, NewProblem(ErrBadNonce, "JWS protected header has no \"nonce\"")
		}
		if err := s.nonces.Redeem(ctx, *hdr.Nonce); err != nil {
			if errors.Is(err, errBadNonce) {
				return nil, NewProblem(ErrBadNonce, "nonce %q is not valid: unknown, already used or expired; use the fresh one in this response's Replay-Nonce", *hdr.Nonce)
			}
			s.logger.Error("redeeming nonce", errField(err))
			return nil, Internal("could not check the nonce")
		}
	} else if hdr.Nonce != nil {
		return nil, Malformed("the inner JWS of a key change must not have a \"nonce\"")
	}

	if req.Account != nil && req.Account.Status != storage.StatusValid {
		return nil, Unauthorized("account %s is %s", s.accountURL(ctx, req.Account.ID), req.Account.Status)
	}
	req.Payload = payload
	req.PostAsGet = len(payload) == 0
	return req, nil
}

// accountByKID resolves a "kid" (the account URL) to the account and its
// parsed key, from the account cache when it can.
func (s *Server) accountByKID(ctx context.Context, kid string) (*storage.Account, *jose.JSONWebKey, *Problem) {
	prefix := s.baseURL(ctx) + "/account/"
	if !strings.HasPrefix(kid, prefix) || strings.Contains(kid[len(prefix):], "/") || len(kid) == len(prefix) {
		return nil, nil, NewProblem(ErrAccountDoesNotExist, "\"kid\" %q is not an account URL of this CA (expected %s<id>)", kid, prefix)
	}
	id := kid[len(prefix):]
	now := s.Now()
	if acct, key, ok := s.Shared.accounts.get(id, now); ok {
		return acct, key, nil
	}
	acct, err := s.store.Account(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, NewProblem(ErrAccountDoesNotExist, "account %q does not exist", kid)
	}
	if err != nil {
		s.logger.Error("loading account", errField(err))
		return nil, nil, Internal("could not load the account")
	}
	key, err := parseJWK(acct.Key)
	if err != nil {
		return nil, nil, Internal("stored account key does not parse")
	}
	s.Shared.accounts.put(acct, key, now)
	return acct, key, nil
}

// CheckAccountKey enforces key quality for account keys: what
// CheckCertificateKey allows, and ECDSA P-521 too, so that the ES512
// algorithm the CA advertises can be used.
func CheckAccountKey(k any) *Problem {
	if key, ok := k.(*ecdsa.PublicKey); ok && key.Curve == elliptic.P521() {
		return nil
	}
	return CheckCertificateKey(k)
}

// CheckCertificateKey enforces key quality for certificate keys: RSA of
// 2048 to 8192 bits with an odd exponent, ECDSA on P-256 or P-384, or
// Ed25519.
func CheckCertificateKey(k any) *Problem {
	switch key := k.(type) {
	case *rsa.PublicKey:
		if key.N.BitLen() < 2048 {
			return NewProblem(ErrBadPublicKey, "RSA key of %d bits is too small; at least 2048 bits are required", key.N.BitLen())
		}
		if key.N.BitLen() > 8192 {
			return NewProblem(ErrBadPublicKey, "RSA key of %d bits is too large; at most 8192 bits are allowed", key.N.BitLen())
		}
		if key.E < 3 || key.E%2 == 0 {
			return NewProblem(ErrBadPublicKey, "RSA public exponent %d is not allowed", key.E)
		}
	case *ecdsa.PublicKey:
		if key.Curve != elliptic.P256() && key.Curve != elliptic.P384() {
			return NewProblem(ErrBadPublicKey, "ECDSA curve %s is not allowed; use P-256 or P-384", key.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return NewProblem(ErrBadPublicKey, "key type %T is not allowed; use RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519", k)
	}
	return nil
}

func checkAlgMatchesKey(alg string, k any) *Problem {
	ok := false
	switch key := k.(type) {
	case *rsa.PublicKey:
		ok = alg == "RS256"
	case *ecdsa.PublicKey:
		ok = (alg == "ES256" && key.Curve == elliptic.P256()) ||
			(alg == "ES384" && key.Curve == elliptic.P384()) ||
			(alg == "ES512" && key.Curve == elliptic.P521())
	case ed25519.PublicKey:
		ok = alg == "EdDSA"
	}
	if !ok {
		p := NewProblem(ErrBadSignatureAlgorithm, "JWS algorithm %q does not fit the key (%s)", alg, keyDescription(k))
		p.Algorithms = SignatureAlgorithms
		return p
	}
	return nil
}

func keyDescription(k any) string {
	switch key := k.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d bits", key.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + key.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", k)
}

// thumbprint is the RFC 7638 JWK thumbprint, base64url.
func thumbprint(k *jose.JSONWebKey) (string, error) {
	b, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func parseJWK(b []byte) (*jose.JSONWebKey, error) {
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return &k, nil
}
