package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/acmeca/caddy-acmeca/storage"
)

// Test keys are made once per process: RSA generation is slow under -race.
var (
	testKeysOnce sync.Once
	testKeys     map[string]crypto.Signer
)

func testKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	testKeysOnce.Do(func() {
		must := func(k crypto.Signer, err error) crypto.Signer {
			if err != nil {
				panic(err)
			}
			return k
		}
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		testKeys = map[string]crypto.Signer{
			"p224":    must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader)),
			"p256":    must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)),
			"p256b":   must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)),
			"p384":    must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)),
			"p521":    must(ecdsa.GenerateKey(elliptic.P521(), rand.Reader)),
			"rsa1024": must(rsa.GenerateKey(rand.Reader, 1024)),
			"rsa2048": must(rsa.GenerateKey(rand.Reader, 2048)),
			"ed25519": ed,
		}
	})
	k, ok := testKeys[name]
	if !ok {
		t.Fatalf("no test key %q", name)
	}
	return k
}

// jwkJSON is the public JWK of a key, as an account stores it.
func jwkJSON(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	b, err := (&jose.JSONWebKey{Key: k.Public()}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type csrSpec struct {
	key    string // test key name; default p256
	cn     string
	dns    []string
	ips    []string
	emails []string
	uris   []string
}

func makeCSR(t *testing.T, s csrSpec) []byte {
	t.Helper()
	if s.key == "" {
		s.key = "p256"
	}
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: s.cn},
		DNSNames:       s.dns,
		EmailAddresses: s.emails,
	}
	for _, ip := range s.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	for _, u := range s.uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, testKey(t, s.key))
	if err != nil {
		t.Fatalf("creating CSR: %v", err)
	}
	return der
}

func TestCheckCSR(t *testing.T) {
	order := []storage.Identifier{dnsID("example.com"), dnsID("www.example.com")}
	acct := &storage.Account{ID: "acct", Key: jwkJSON(t, testKey(t, "p256b"))}

	tests := []struct {
		name     string
		der      func(t *testing.T) []byte
		idents   []storage.Identifier // default: order
		wantType string               // "" for a good CSR
		detail   []string
	}{
		{
			name: "SANs only",
			der:  func(t *testing.T) []byte { return makeCSR(t, csrSpec{dns: []string{"example.com", "www.example.com"}}) },
		},
		{
			name: "CN one of the SANs",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{cn: "www.example.com", dns: []string{"example.com", "www.example.com"}})
			},
		},
		{
			name: "mixed case names",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{cn: "WWW.Example.com", dns: []string{"Example.COM", "www.EXAMPLE.com"}})
			},
		},
		{
			name: "CN carries a name the SANs lack",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{cn: "www.example.com", dns: []string{"example.com"}})
			},
		},
		{
			name: "duplicate SANs",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{dns: []string{"example.com", "www.example.com", "example.com"}})
			},
		},
		{
			name:   "wildcard",
			idents: []storage.Identifier{dnsID("*.example.com")},
			der:    func(t *testing.T) []byte { return makeCSR(t, csrSpec{dns: []string{"*.example.com"}}) },
		},
		{
			name: "RSA 2048 key",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{key: "rsa2048", dns: []string{"example.com", "www.example.com"}})
			},
		},
		{
			name: "Ed25519 key",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{key: "ed25519", dns: []string{"example.com", "www.example.com"}})
			},
		},
		{
			name:   "IP SAN for an ip order",
			idents: []storage.Identifier{ipID("192.0.2.1"), ipID("2001:db8::1")},
			der:    func(t *testing.T) []byte { return makeCSR(t, csrSpec{ips: []string{"192.0.2.1", "2001:db8::1"}}) },
		},

		{
			name: "extra SAN",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{dns: []string{"example.com", "www.example.com", "evil.example"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"evil.example", "order does not have"},
		},
		{
			name:     "missing SAN",
			der:      func(t *testing.T) []byte { return makeCSR(t, csrSpec{dns: []string{"example.com"}}) },
			wantType: ErrBadCSR,
			detail:   []string{"lacks", "www.example.com"},
		},
		{
			name:     "no names at all",
			der:      func(t *testing.T) []byte { return makeCSR(t, csrSpec{}) },
			wantType: ErrBadCSR,
			detail:   []string{"lacks", "example.com, www.example.com"},
		},
		{
			name: "CN not in the order",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{cn: "other.example", dns: []string{"example.com", "www.example.com"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"common name", "other.example"},
		},
		{
			name: "IP SAN",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{dns: []string{"example.com", "www.example.com"}, ips: []string{"192.0.2.1"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"192.0.2.1", "order does not have"},
		},
		{
			// RFC 8738 §3: an ip identifier goes in an iPAddress SAN, not a
			// dNSName holding its text.
			name:     "IP written as a dNSName",
			idents:   []storage.Identifier{ipID("192.0.2.1")},
			der:      func(t *testing.T) []byte { return makeCSR(t, csrSpec{dns: []string{"192.0.2.1"}}) },
			wantType: ErrBadCSR,
			detail:   []string{"192.0.2.1"},
		},
		{
			name: "email SAN",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{dns: []string{"example.com", "www.example.com"}, emails: []string{"a@example.com"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"email"},
		},
		{
			name: "URI SAN",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{dns: []string{"example.com", "www.example.com"}, uris: []string{"https://example.com/"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"URI"},
		},
		{
			name: "bad signature",
			der: func(t *testing.T) []byte {
				der := makeCSR(t, csrSpec{dns: []string{"example.com", "www.example.com"}})
				der[len(der)-1] ^= 0x01 // last byte of the signature
				return der
			},
			wantType: ErrBadCSR,
			detail:   []string{"signature"},
		},
		{
			name:     "not DER",
			der:      func(*testing.T) []byte { return []byte("not a CSR") },
			wantType: ErrBadCSR,
			detail:   []string{"does not parse"},
		},
		{
			name: "RSA 1024 key",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{key: "rsa1024", dns: []string{"example.com", "www.example.com"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"CSR key", "1024 bits", "too small"},
		},
		{
			name: "P-224 key",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{key: "p224", dns: []string{"example.com", "www.example.com"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"CSR key", "P-224"},
		},
		{
			name: "P-521 key",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{key: "p521", dns: []string{"example.com", "www.example.com"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"CSR key", "P-521"},
		},
		{
			name: "account key",
			der: func(t *testing.T) []byte {
				return makeCSR(t, csrSpec{key: "p256b", dns: []string{"example.com", "www.example.com"}})
			},
			wantType: ErrBadCSR,
			detail:   []string{"account key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idents := tt.idents
			if idents == nil {
				idents = order
			}
			csr, p := checkCSR(tt.der(t), idents, acct)
			wantProblem(t, p, tt.wantType, tt.detail...)
			if tt.wantType == "" && csr == nil {
				t.Error("good CSR: no CSR returned")
			}
			if tt.wantType != "" && csr != nil {
				t.Error("bad CSR returned along with the problem")
			}
		})
	}
}

// An account whose stored key does not parse does not stop finalize: the
// account-key comparison is skipped.
func TestCheckCSRUnparsableAccountKey(t *testing.T) {
	der := makeCSR(t, csrSpec{dns: []string{"example.com"}})
	_, p := checkCSR(der, []storage.Identifier{dnsID("example.com")}, &storage.Account{Key: []byte(`{}`)})
	wantProblem(t, p, "")
}
