package validate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// certSpec describes a tls-alpn-01 challenge certificate, correct unless a
// field says otherwise.
type certSpec struct {
	dnsNames    []string
	ips         []net.IP
	keyAuth     string // digested into the extension
	omitExt     bool
	nonCritical bool
	rawExtValue []byte // replaces the extension value when set
}

func makeCert(t *testing.T, s certSpec) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "acme challenge"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     s.dnsNames,
		IPAddresses:  s.ips,
	}
	if !s.omitExt {
		val := s.rawExtValue
		if val == nil {
			sum := sha256.Sum256([]byte(s.keyAuth))
			val, err = asn1.Marshal(sum[:])
			if err != nil {
				t.Fatal(err)
			}
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: IDPeACMEIdentifier, Critical: !s.nonCritical, Value: val}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startTLS serves TLS handshakes on a loopback port with cert, offering
// protos for ALPN, and records the SNI names clients sent.
func startTLS(t *testing.T, cert tls.Certificate, protos []string) (port int, snis func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   protos,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			mu.Lock()
			seen = append(seen, hello.ServerName)
			mu.Unlock()
			return nil, nil
		},
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_ = conn.(*tls.Conn).Handshake()
				// Wait for the client to hang up, as a challenge
				// responder does.
				_, _ = conn.Read(make([]byte, 1))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func TestTLSALPN01(t *testing.T) {
	srv, r := newDNS(t)
	srv.SetA("example.test", "127.0.0.1")
	acme := []string{ACMETLS1Protocol}
	want := sha256.Sum256([]byte(testKeyAuth))
	other := sha256.Sum256([]byte("something else"))

	tests := []struct {
		name     string
		ident    Identifier
		cert     certSpec
		protos   []string
		refused  bool
		wantSNI  string
		wantType string
		wantIn   []string
	}{
		{
			name:    "success",
			cert:    certSpec{dnsNames: []string{"example.test"}, keyAuth: testKeyAuth},
			protos:  acme,
			wantSNI: "example.test",
		},
		{
			name:    "success, SAN in other case",
			cert:    certSpec{dnsNames: []string{"Example.TEST"}, keyAuth: testKeyAuth},
			protos:  acme,
			wantSNI: "example.test",
		},
		{
			name:    "success for an ip identifier",
			ident:   Identifier{Type: "ip", Value: "127.0.0.1"},
			cert:    certSpec{ips: []net.IP{net.ParseIP("127.0.0.1")}, keyAuth: testKeyAuth},
			protos:  acme,
			wantSNI: "1.0.0.127.in-addr.arpa",
		},
		{
			name:     "missing ALPN",
			cert:     certSpec{dnsNames: []string{"example.test"}, keyAuth: testKeyAuth},
			wantType: ProblemTLS,
			wantIn:   []string{`did not negotiate the "acme-tls/1" ALPN protocol`, "no protocol", "example.test"},
		},
		{
			name:     "server refuses acme-tls/1",
			cert:     certSpec{dnsNames: []string{"example.test"}, keyAuth: testKeyAuth},
			protos:   []string{"h2", "http/1.1"},
			wantType: ProblemTLS,
			wantIn:   []string{"TLS handshake with example.test", "failed"},
		},
		{
			name:     "wrong digest",
			cert:     certSpec{dnsNames: []string{"example.test"}, keyAuth: "something else"},
			protos:   acme,
			wantType: ProblemIncorrectResponse,
			wantIn:   []string{fmt.Sprintf("expected %x, got %x", want[:], other[:])},
		},
		{
			name:     "non-critical extension",
			cert:     certSpec{dnsNames: []string{"example.test"}, keyAuth: testKeyAuth, nonCritical: true},
			protos:   acme,
			wantType: ProblemTLS,
			wantIn:   []string{"not marked critical"},
		},
		{
			name:     "missing extension",
			cert:     certSpec{dnsNames: []string{"example.test"}, omitExt: true},
			protos:   acme,
			wantType: ProblemTLS,
			wantIn:   []string{"no acmeIdentifier extension", "1.3.6.1.5.5.7.1.31"},
		},
		{
			name:     "extension not an OCTET STRING",
			cert:     certSpec{dnsNames: []string{"example.test"}, rawExtValue: []byte{0x05, 0x00}},
			protos:   acme,
			wantType: ProblemTLS,
			wantIn:   []string{"malformed acmeIdentifier extension"},
		},
		{
			name:     "two SANs",
			cert:     certSpec{dnsNames: []string{"example.test", "www.example.test"}, keyAuth: testKeyAuth},
			protos:   acme,
			wantType: ProblemTLS,
			wantIn:   []string{"exactly one subjectAltName, found 2", "www.example.test"},
		},
		{
			name:     "DNS name and IP address",
			cert:     certSpec{dnsNames: []string{"example.test"}, ips: []net.IP{net.ParseIP("127.0.0.1")}, keyAuth: testKeyAuth},
			protos:   acme,
			wantType: ProblemTLS,
			wantIn:   []string{"exactly one subjectAltName, found 2"},
		},
		{
			name:     "wrong name",
			cert:     certSpec{dnsNames: []string{"other.test"}, keyAuth: testKeyAuth},
			protos:   acme,
			wantType: ProblemTLS,
			wantIn:   []string{`DNS name "other.test"`, "expected DNS name example.test"},
		},
		{
			name:     "DNS name for an ip identifier",
			ident:    Identifier{Type: "ip", Value: "127.0.0.1"},
			cert:     certSpec{dnsNames: []string{"example.test"}, keyAuth: testKeyAuth},
			protos:   acme,
			wantType: ProblemTLS,
			wantIn:   []string{"expected IP address 127.0.0.1"},
		},
		{
			name:     "connection refused",
			refused:  true,
			wantType: ProblemConnection,
			wantIn:   []string{"Connecting to example.test", "connection refused"},
		},
		{
			name:     "NXDOMAIN",
			ident:    Identifier{Type: "dns", Value: "nx.test"},
			refused:  true,
			wantType: ProblemDNS,
			wantIn:   []string{"NXDOMAIN looking up A/AAAA for nx.test"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var port int
			snis := func() []string { return nil }
			if tt.refused {
				port = freePort(t)
			} else {
				port, snis = startTLS(t, makeCert(t, tt.cert), tt.protos)
			}
			chall := dnsChallenge("tls-alpn-01", "example.test", r)
			if tt.ident.Type != "" {
				chall.Identifier = tt.ident
			}
			err := (&TLSALPN01{Port: port}).Validate(context.Background(), chall)
			wantProblem(t, err, tt.wantType, tt.wantIn...)
			if tt.wantSNI != "" {
				if got := snis(); len(got) != 1 || got[0] != tt.wantSNI {
					t.Errorf("server saw SNI %q, want [%q]", got, tt.wantSNI)
				}
			}
		})
	}
}

// A server that accepts and never speaks TLS must not hold a validation
// past its timeout.
func TestTLSALPN01Timeout(t *testing.T) {
	srv, r := newDNS(t)
	srv.SetA("example.test", "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	v := &TLSALPN01{Port: ln.Addr().(*net.TCPAddr).Port, Timeout: caddyDuration(150 * time.Millisecond)}
	start := time.Now()
	err = v.Validate(context.Background(), dnsChallenge("tls-alpn-01", "example.test", r))
	wantProblem(t, err, ProblemConnection, "timed out")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("validation took %s", d)
	}
}

func TestCountGeneralNames(t *testing.T) {
	// Hostile extension values must give errors, not panics.
	for _, der := range [][]byte{nil, {0x30}, {0x30, 0x05, 0x82}, {0x04, 0x00}, {0x30, 0x00, 0x00}} {
		if _, err := countGeneralNames(der); err == nil {
			t.Errorf("countGeneralNames(%x) succeeded", der)
		}
	}
	if n, err := countGeneralNames([]byte{0x30, 0x00}); err != nil || n != 0 {
		t.Errorf("empty SEQUENCE: %d, %v", n, err)
	}
}
