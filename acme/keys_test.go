package acme

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"math/big"
	"slices"
	"strings"
	"testing"
)

// rsaPub is an RSA public key with a modulus of exactly bits bits and
// exponent e. Only the size and exponent matter to the key policy, so the
// modulus need not be a product of two primes; that keeps large sizes fast.
func rsaPub(bits, e int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Add(n, big.NewInt(12345)) // odd, still bits long
	return &rsa.PublicKey{N: n, E: e}
}

func TestCheckAccountKey(t *testing.T) {
	ecdhKey, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		key    any
		ok     bool
		detail string // part of the detail when refused
	}{
		{"RSA 2048 (generated)", testKey(t, "rsa2048").Public(), true, ""},
		{"RSA 2048", rsaPub(2048, 65537), true, ""},
		{"RSA 3072", rsaPub(3072, 65537), true, ""},
		{"RSA 4096", rsaPub(4096, 65537), true, ""},
		{"RSA 8192", rsaPub(8192, 65537), true, ""},
		{"RSA exponent 3", rsaPub(2048, 3), true, ""},
		{"RSA 1024 (generated)", testKey(t, "rsa1024").Public(), false, "1024 bits is too small"},
		{"RSA 2047", rsaPub(2047, 65537), false, "2047 bits is too small"},
		{"RSA 8193", rsaPub(8193, 65537), false, "too large"},
		{"RSA exponent 1", rsaPub(2048, 1), false, "exponent 1"},
		{"RSA even exponent", rsaPub(2048, 65536), false, "exponent 65536"},
		{"RSA exponent 2", rsaPub(2048, 2), false, "exponent 2"},
		{"P-256", testKey(t, "p256").Public(), true, ""},
		{"P-384", testKey(t, "p384").Public(), true, ""},
		{"P-521 (accounts only, for ES512)", testKey(t, "p521").Public(), true, "P-521"},
		{"P-224", testKey(t, "p224").Public(), false, "P-224"},
		{"Ed25519", testKey(t, "ed25519").Public(), true, ""},
		{"X25519 (ECDH)", ecdhKey.PublicKey(), false, "not allowed"},
		{"RSA public key by value", *rsaPub(2048, 65537), false, "not allowed"},
		{"private key instead of public", testKey(t, "p256"), false, "not allowed"},
		{"nil", nil, false, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := CheckAccountKey(tt.key)
			if tt.ok {
				wantProblem(t, p, "")
			} else {
				wantProblem(t, p, ErrBadPublicKey, tt.detail)
			}
			// Certificate keys follow the same rules, but for P-521.
			p = CheckCertificateKey(tt.key)
			if tt.ok && !strings.HasPrefix(tt.name, "P-521") {
				wantProblem(t, p, "")
			} else {
				wantProblem(t, p, ErrBadPublicKey, tt.detail)
			}
		})
	}
}

func TestCheckAlgMatchesKey(t *testing.T) {
	rsaKey := rsaPub(2048, 65537)
	p256 := testKey(t, "p256").Public().(*ecdsa.PublicKey)
	p384 := testKey(t, "p384").Public().(*ecdsa.PublicKey)
	p521 := testKey(t, "p521").Public().(*ecdsa.PublicKey)
	ed := testKey(t, "ed25519").Public().(ed25519.PublicKey)
	tests := []struct {
		alg string
		key any
		ok  bool
	}{
		{"RS256", rsaKey, true},
		{"ES256", p256, true},
		{"ES384", p384, true},
		{"ES512", p521, true},
		{"EdDSA", ed, true},

		{"PS256", rsaKey, false},
		{"RS384", rsaKey, false},
		{"ES256", rsaKey, false},
		{"RS256", p256, false},
		{"ES384", p256, false},
		{"ES512", p256, false},
		{"ES256", p384, false},
		{"ES256", p521, false},
		{"RS256", ed, false},
		{"ES256", ed, false},
		{"EdDSA", p256, false},
		{"none", p256, false},
		{"", ed, false},
		{"EdDSA", "not a key", false},
	}
	for _, tt := range tests {
		t.Run(tt.alg+" "+keyDescription(tt.key), func(t *testing.T) {
			p := checkAlgMatchesKey(tt.alg, tt.key)
			if tt.ok {
				wantProblem(t, p, "")
				return
			}
			wantProblem(t, p, ErrBadSignatureAlgorithm, keyDescription(tt.key))
			if !slices.Equal(p.Algorithms, SignatureAlgorithms) {
				t.Errorf("Algorithms = %v, want %v", p.Algorithms, SignatureAlgorithms)
			}
		})
	}
}

// Every algorithm offered for account keys must have a key type that
// CheckAccountKey accepts; otherwise a client following the
// badSignatureAlgorithm list can never succeed with it.
func TestSignatureAlgorithmsHaveAcceptedKeys(t *testing.T) {
	keys := []any{
		rsaPub(2048, 65537),
		testKey(t, "p256").Public(),
		testKey(t, "p384").Public(),
		testKey(t, "p521").Public(),
		testKey(t, "ed25519").Public(),
	}
	for _, alg := range SignatureAlgorithms {
		usable := false
		for _, k := range keys {
			if checkAlgMatchesKey(alg, k) == nil && CheckAccountKey(k) == nil {
				usable = true
			}
		}
		if !usable {
			t.Errorf("algorithm %s is advertised but no key it fits passes CheckAccountKey", alg)
		}
	}
}
