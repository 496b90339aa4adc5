package caddymodule

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testIssuer is a root and an intermediate made in memory.
type testIssuer struct {
	root  *x509.Certificate
	chain []*x509.Certificate
	key   crypto.Signer
}

func (i *testIssuer) IntermediateCertificateChain() []*x509.Certificate { return i.chain }
func (i *testIssuer) IntermediateKey() crypto.Signer                    { return i.key }

func newTestIssuer(t testing.TB, interLifetime time.Duration) *testIssuer {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(interLifetime),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, MaxPathLenZero: true}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(interDER)
	return &testIssuer{root: root, chain: []*x509.Certificate{inter}, key: interKey}
}

func testCSR(t testing.TB, names ...string) *x509.CertificateRequest {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr
}

// TestSignerLeaf: the leaf names the identifiers (DNS and IP), has the
// serial given, TLS server usages, SKI and AKI, and chains to the root.
func TestSignerLeaf(t *testing.T) {
	iss := newTestIssuer(t, 30*24*time.Hour)
	s := &caSigner{ca: iss, lifetime: 7 * 24 * time.Hour}
	serial := new(big.Int).Lsh(big.NewInt(1), 127)
	chain, err := s.Sign(context.Background(), testCSR(t, "a.example.test"), []string{"a.example.test", "192.0.2.7"}, serial)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if leaf.SerialNumber.Cmp(serial) != 0 {
		t.Errorf("serial %x, want %x", leaf.SerialNumber, serial)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "a.example.test" || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("192.0.2.7")) {
		t.Errorf("names %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if len(leaf.SubjectKeyId) == 0 || string(leaf.AuthorityKeyId) != string(iss.chain[0].SubjectKeyId) {
		t.Errorf("SKI %x AKI %x, issuer SKI %x", leaf.SubjectKeyId, leaf.AuthorityKeyId, iss.chain[0].SubjectKeyId)
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Error("leaf can sign certificates")
	}
	roots := x509.NewCertPool()
	roots.AddCert(iss.root)
	inter := x509.NewCertPool()
	inter.AddCert(iss.chain[0])
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "a.example.test", Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatal(err)
	}
}

// TestSignerClampsToIssuer: a leaf never outlives its intermediate.
func TestSignerClampsToIssuer(t *testing.T) {
	iss := newTestIssuer(t, 48*time.Hour)
	s := &caSigner{ca: iss, lifetime: 30 * 24 * time.Hour}
	chain, err := s.Sign(context.Background(), testCSR(t, "a.example.test"), []string{"a.example.test"}, big.NewInt(42))
	if err != nil {
		t.Fatal(err)
	}
	if !chain[0].NotAfter.Equal(iss.chain[0].NotAfter) {
		t.Errorf("leaf expires %s, want the intermediate's %s", chain[0].NotAfter, iss.chain[0].NotAfter)
	}
	if _, err := s.Sign(context.Background(), testCSR(t, "a.example.test"), []string{"a.example.test"}, big.NewInt(0)); err == nil {
		t.Error("a zero serial was accepted")
	}
}

// BenchmarkSign is the cost of signing one leaf (ECDSA P-256 intermediate).
func BenchmarkSign(b *testing.B) {
	iss := newTestIssuer(b, 30*24*time.Hour)
	s := &caSigner{ca: iss, lifetime: 7 * 24 * time.Hour}
	csr := testCSR(b, "a.example.test")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Sign(context.Background(), csr, []string{"a.example.test"}, big.NewInt(int64(i+1))); err != nil {
			b.Fatal(err)
		}
	}
}
