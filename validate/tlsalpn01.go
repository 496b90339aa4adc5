package validate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(TLSALPN01{})
}

const (
	// DefaultTLSALPNPort is where tls-alpn-01 connects (RFC 8737 §3).
	DefaultTLSALPNPort = 443
	// ACMETLS1Protocol is the ALPN protocol of tls-alpn-01 (RFC 8737 §6.2).
	ACMETLS1Protocol = "acme-tls/1"
)

// IDPeACMEIdentifier is the OID of the acmeIdentifier certificate extension
// (RFC 8737 §6.1) that carries the key authorization digest.
var IDPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// oidSubjectAltName is id-ce-subjectAltName (RFC 5280 §4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// TLSALPN01 validates the tls-alpn-01 challenge (RFC 8737): a TLS server
// that, asked for the acme-tls/1 protocol, presents a certificate for the
// name carrying the SHA-256 digest of the key authorization.
type TLSALPN01 struct {
	// Port is the TCP port to connect to. Default: 443. Only change it for
	// testing or behind a port forward; public CAs always use 443.
	Port int `json:"port,omitempty"`

	// Timeout bounds the whole validation, DNS lookups, connecting and
	// the TLS handshake. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	logger *zap.Logger // set at Provision
}

// CaddyModule returns the Caddy module information.
func (TLSALPN01) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "acme_ca.challenges.tls-alpn-01",
		New: func() caddy.Module { return new(TLSALPN01) },
	}
}

// Provision applies defaults and checks the configuration.
func (t *TLSALPN01) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	if t.Port == 0 {
		t.Port = DefaultTLSALPNPort
	}
	if t.Timeout == 0 {
		t.Timeout = caddy.Duration(DefaultTimeout)
	}
	return checkPortTimeout(t.Port, t.Timeout)
}

// Validate connects, negotiates acme-tls/1 and checks the certificate.
func (t *TLSALPN01) Validate(ctx context.Context, chall Challenge) error {
	err := t.validate(ctx, chall)
	if err != nil {
		if c := logger(t.logger).Check(zap.DebugLevel, "tls-alpn-01 validation failed"); c != nil {
			c.Write(zap.String("identifier", chall.Identifier.Value), zap.Error(err))
		}
	}
	return err
}

func (t *TLSALPN01) validate(ctx context.Context, chall Challenge) error {
	port := orDefault(t.Port, DefaultTLSALPNPort)
	timeout := orDefaultDuration(t.Timeout, DefaultTimeout)

	host, prob := identifierHost(chall.Identifier)
	if prob != nil {
		return prob
	}
	isIP := chall.Identifier.Type == "ip"
	sni := host
	if isIP {
		// RFC 8738 §6: an IP address cannot be an SNI value, so the
		// reverse-mapping name stands in for it.
		arpa, err := dns.ReverseAddr(host)
		if err != nil {
			return Problemf(ProblemRejected, "cannot build reverse name for %s: %v", host, err)
		}
		sni = strings.TrimSuffix(arpa, ".")
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	d := &dialer{resolver: resolverFor(chall), allowIP: isIP}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		var p *Problem
		if errors.As(err, &p) {
			return p
		}
		return Problemf(ProblemConnection, "Connecting to %s (address %s): %v", host, d.addresses(), err)
	}
	defer conn.Close()
	addr := d.address()

	tc := tls.Client(conn, &tls.Config{
		ServerName: sni,
		NextProtos: []string{ACMETLS1Protocol},
		// The certificate is self-signed by design (RFC 8737 §3); what
		// proves control is the digest it carries, checked below.
		InsecureSkipVerify: true, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Problemf(ProblemConnection, "TLS handshake with %s (address %s, SNI %s): timed out after %s",
				host, addr, sni, timeout)
		}
		return Problemf(ProblemTLS, "TLS handshake with %s (address %s, SNI %s) failed: %v", host, addr, sni, err)
	}
	defer tc.Close()

	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != ACMETLS1Protocol {
		got := "no protocol"
		if cs.NegotiatedProtocol != "" {
			got = strconv.Quote(sanitize([]byte(cs.NegotiatedProtocol), 64))
		}
		return Problemf(ProblemTLS, "Server at %s (address %s) did not negotiate the %q ALPN protocol (got %s)",
			host, addr, ACMETLS1Protocol, got)
	}
	if len(cs.PeerCertificates) == 0 {
		return Problemf(ProblemTLS, "Server at %s (address %s) presented no certificate", host, addr)
	}
	return checkACMECert(cs.PeerCertificates[0], chall, host, addr)
}

// checkACMECert checks the challenge certificate (RFC 8737 §3): exactly
// one subjectAltName, equal to the identifier, and a critical acmeIdentifier
// extension holding SHA-256(key authorization).
func checkACMECert(cert *x509.Certificate, chall Challenge, host, addr string) error {
	where := fmt.Sprintf("Certificate from %s (address %s)", host, addr)

	// Count names in the raw extension: crypto/x509 only surfaces the
	// name forms it knows, and RFC 8737 allows exactly one of any kind.
	var sans int
	var sanSeen bool
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		if sanSeen {
			return Problemf(ProblemTLS, "%s has more than one subjectAltName extension", where)
		}
		sanSeen = true
		n, err := countGeneralNames(ext.Value)
		if err != nil {
			return Problemf(ProblemTLS, "%s has a malformed subjectAltName extension: %v", where, err)
		}
		sans = n
	}
	if sans != 1 {
		return Problemf(ProblemTLS, "%s must have exactly one subjectAltName, found %d (DNS names %q, IP addresses %q)",
			where, sans, truncateList(cert.DNSNames), truncateList(ipStrings(cert.IPAddresses)))
	}
	if chall.Identifier.Type == "ip" {
		want := net.ParseIP(host)
		if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(want) {
			return Problemf(ProblemTLS, "%s has subjectAltName %s, expected IP address %s",
				where, describeSAN(cert), host)
		}
	} else if len(cert.DNSNames) != 1 || !strings.EqualFold(strings.TrimSuffix(cert.DNSNames[0], "."), host) {
		return Problemf(ProblemTLS, "%s has subjectAltName %s, expected DNS name %s", where, describeSAN(cert), host)
	}

	var ext *pkix.Extension
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(IDPeACMEIdentifier) {
			if ext != nil {
				return Problemf(ProblemTLS, "%s has more than one acmeIdentifier extension", where)
			}
			ext = &cert.Extensions[i]
		}
	}
	if ext == nil {
		return Problemf(ProblemTLS, "%s has no acmeIdentifier extension (OID %s)", where, IDPeACMEIdentifier)
	}
	if !ext.Critical {
		return Problemf(ProblemTLS, "%s has an acmeIdentifier extension that is not marked critical", where)
	}
	var got []byte
	rest, err := asn1.Unmarshal(ext.Value, &got)
	if err != nil || len(rest) != 0 {
		return Problemf(ProblemTLS, "%s has a malformed acmeIdentifier extension: not a DER OCTET STRING", where)
	}
	want := sha256.Sum256([]byte(chall.KeyAuthorization))
	if !bytes.Equal(got, want[:]) {
		shown := got
		if len(shown) > 64 {
			shown = shown[:64]
		}
		return Problemf(ProblemIncorrectResponse,
			"%s has an acmeIdentifier extension with the wrong key authorization digest: expected %x, got %x",
			where, want[:], shown)
	}
	return nil
}

// countGeneralNames counts the entries of a GeneralNames SEQUENCE
// (RFC 5280 §4.2.1.6) without interpreting them.
func countGeneralNames(der []byte) (int, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return 0, err
	}
	if len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return 0, errors.New("not a SEQUENCE")
	}
	n := 0
	for b := seq.Bytes; len(b) > 0; n++ {
		var gn asn1.RawValue
		b, err = asn1.Unmarshal(b, &gn)
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

func describeSAN(cert *x509.Certificate) string {
	switch {
	case len(cert.DNSNames) > 0:
		return "DNS name " + strconv.Quote(sanitize([]byte(cert.DNSNames[0]), 256))
	case len(cert.IPAddresses) > 0:
		return "IP address " + cert.IPAddresses[0].String()
	}
	return "of another kind"
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// truncateList keeps a hostile certificate with thousands of names from
// flooding a problem detail.
func truncateList(names []string) []string {
	const limit = 5
	out := make([]string, 0, limit)
	for i, n := range names {
		if i == limit {
			out = append(out, fmt.Sprintf("... %d more", len(names)-limit))
			break
		}
		out = append(out, sanitize([]byte(n), 256))
	}
	return out
}

// Interface guards
var (
	_ caddy.Module      = (*TLSALPN01)(nil)
	_ caddy.Provisioner = (*TLSALPN01)(nil)
	_ Validator         = (*TLSALPN01)(nil)
)
