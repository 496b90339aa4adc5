package main

// End-to-end tests with ACME clients other than certbot's standalone mode,
// all against one Caddy CA that offers every challenge type: the lego CLI
// (tls-alpn-01, and dns-01 through its exec provider), certbot's manual
// plugin with hooks (dns-01), and a second Caddy that gets its site's
// certificate through its own automation (http-01 and tls-alpn-01).

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// TestClients starts the CA and its DNS once for every client: starting
// Caddy and its local CA costs a few seconds. The subtests run one after
// another, because the lego tls-alpn-01 server and the second Caddy take
// turns on the one port the CA validates tls-alpn-01 on, and they use
// separate names, accounts and storage so that none depends on another.
func TestClients(t *testing.T) {
	ca := startCA(t, withCaddyfile("clients.Caddyfile.tmpl"))
	dns := startDNSControl(t, ca.DNS)
	t.Logf("CA directory %s; DNS %s; http-01 port %d; tls-alpn-01 port %d",
		ca.DirectoryURL, ca.DNS.Addr(), ca.ValidationPort, ca.TLSALPNPort)

	t.Run("LegoTLSALPN01", func(t *testing.T) { testLegoTLSALPN(t, ca) })
	t.Run("LegoDNSExecWildcard", func(t *testing.T) { testLegoDNSExec(t, ca, dns) })
	t.Run("CertbotManualDNSWildcard", func(t *testing.T) { testCertbotManualDNS(t, ca, dns) })
	t.Run("CaddyClientHTTP01", func(t *testing.T) { testCaddyClient(t, ca, "http-01", "app.example.test") })
	t.Run("CaddyClientTLSALPN01", func(t *testing.T) { testCaddyClient(t, ca, "tls-alpn-01", "app2.example.test") })
}

// intermediate reads the CA's current intermediate certificate, which
// Caddy keeps beside the root.
func (ca *testCA) intermediate(t *testing.T) *x509.Certificate {
	t.Helper()
	path := filepath.Join(filepath.Dir(ca.RootPath), "intermediate.crt")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseOneCert(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// checkIssued checks what a client got from the CA, the leaf first and
// then the chain as the client stored or served it: the leaf names exactly
// wantNames and nothing else, it is signed by the CA's intermediate, which
// comes next in the chain, the chain does not carry the root, and the leaf
// verifies to the CA's root for every name as a TLS server certificate.
func checkIssued(t *testing.T, ca *testCA, certs []*x509.Certificate, wantNames ...string) *x509.Certificate {
	t.Helper()
	if len(certs) < 2 {
		t.Fatalf("got %d certificates; want the leaf and the CA's intermediate", len(certs))
	}
	leaf, chain := certs[0], certs[1:]

	checkLeafNames(t, leaf, wantNames)

	inter := ca.intermediate(t)
	if !chain[0].Equal(inter) {
		t.Errorf("the certificate after the leaf is %q (serial %x), not the CA's intermediate %q (serial %x)",
			chain[0].Subject, chain[0].SerialNumber, inter.Subject, inter.SerialNumber)
	}
	if err := leaf.CheckSignatureFrom(inter); err != nil {
		t.Errorf("leaf is not signed by the CA's intermediate: %v", err)
	}
	for i, c := range chain {
		if bytes.Equal(c.Raw, ca.Root.Raw) {
			t.Errorf("chain certificate %d is the root itself", i+1)
		}
	}

	ca.checkVerifies(t, leaf, chain, wantNames)
	return leaf
}
