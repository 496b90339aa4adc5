package caddymodule

import (
	"context"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
)

// verifyLeaf checks that a PEM chain's leaf carries exactly names and chains
// to the CA's root through the served intermediates.
func verifyLeaf(t *testing.T, ca *testCA, chainPEM []byte, names []string) *x509.Certificate {
	t.Helper()
	chain := parsePEMCerts(t, chainPEM)
	leaf := chain[0]
	got := slices.Clone(leaf.DNSNames)
	want := slices.Clone(names)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("certificate names = %v, want %v", got, want)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c.Equal(ca.Root) {
			t.Fatal("the served chain includes the root")
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       names[0],
		Roots:         ca.Roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("certificate does not chain to the CA root: %v", err)
	}
	if leaf.SerialNumber.BitLen() < 100 {
		t.Errorf("serial %x has only %d bits", leaf.SerialNumber, leaf.SerialNumber.BitLen())
	}
	if len(leaf.SubjectKeyId) == 0 || len(leaf.AuthorityKeyId) == 0 {
		t.Error("certificate lacks SKI or AKI")
	}
	if leaf.NotAfter.After(chain[1].NotAfter) {
		t.Errorf("leaf expires %s, after its issuer %s", leaf.NotAfter, chain[1].NotAfter)
	}
	return leaf
}

// TestLegoIssueAndRevoke drives account → order → http-01 → finalize →
// download → revoke with lego.
func TestLegoIssueAndRevoke(t *testing.T) {
	ca := startCA(t, "")
	user := &legoUser{email: "ops@example.test", key: newKey(t)}
	client := ca.legoClient(t, user, true)
	ctx := context.Background()

	names := []string{"www.example.test", "example.test"}
	res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: names, Bundle: true, KeyType: certcrypto.EC256})
	if err != nil {
		t.Fatalf("obtain: %v", err)
	}
	leaf := verifyLeaf(t, ca, res.Certificate, names)
	if d := time.Until(leaf.NotAfter); d <= 0 || d > DefaultLifetime+time.Minute {
		t.Errorf("lifetime %s, want at most %s", d, DefaultLifetime)
	}

	if err := client.Certificate.Revoke(ctx, res.Certificate); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	err = client.Certificate.Revoke(ctx, res.Certificate)
	assertProblem(t, err, "urn:ietf:params:acme:error:alreadyRevoked")
}
