package caddymodule

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddypki"
)

// caSigner signs leaves with a pki app CA's intermediate.
type caSigner struct {
	ca       issuer // a *caddypki.CA
	lifetime time.Duration
}

// issuer is what signing needs of a pki app CA.
type issuer interface {
	IntermediateCertificateChain() []*x509.Certificate
	IntermediateKey() crypto.Signer
}

var _ issuer = (*caddypki.CA)(nil)

// backdate is how far before now certificates start, so a client whose
// clock runs a little slow accepts a fresh certificate.
const backdate = time.Minute

// Sign issues a TLS server certificate for names with the CSR's key. It
// asks the CA for its intermediate at each call, so certificates are always
// signed by the intermediate that is current, which Caddy renews.
func (s *caSigner) Sign(_ context.Context, csr *x509.CertificateRequest, names []string, serial *big.Int) ([]*x509.Certificate, error) {
	chain := s.ca.IntermediateCertificateChain()
	key := s.ca.IntermediateKey()
	if len(chain) == 0 || key == nil {
		return nil, errors.New("the CA has no intermediate certificate")
	}
	issuer := chain[0]

	if serial == nil || serial.Sign() <= 0 {
		return nil, errors.New("a certificate serial must be positive")
	}
	now := time.Now()
	notBefore := now.Add(-backdate)
	notAfter := now.Add(s.lifetime)
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter // never outlive the issuer
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("the intermediate expires at %s; it must be renewed before issuing", issuer.NotAfter)
	}

	spki, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return nil, err
	}
	ski := sha256.Sum256(spki)

	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := csr.PublicKey.(*rsa.PublicKey); isRSA {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	var dnsNames []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dnsNames = append(dnsNames, n)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski[:20], // RFC 7093 method 1: truncated SHA-256
		AuthorityKeyId:        issuer.SubjectKeyId,
	}
	if len(dnsNames) > 0 && len(dnsNames[0]) <= 64 {
		tmpl.Subject = pkix.Name{CommonName: dnsNames[0]}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, csr.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return append([]*x509.Certificate{leaf}, chain...), nil
}
