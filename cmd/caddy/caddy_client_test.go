package main

// A second Caddy, the same binary in its own process with its own storage
// and HOME, whose site gets its certificate from the CA under test through
// Caddy's ordinary automation: what a user with a private CA configures.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientCertTimeout bounds how long the second Caddy may take to get its
// certificate. It normally has it within a second of starting, and a
// failed attempt ends the wait at once (see testCaddyClient), so this only
// catches a client or CA that hangs.
const clientCertTimeout = 60 * time.Second

// clientCaddyfileParams fills testdata/client.Caddyfile.tmpl.
type clientCaddyfileParams struct {
	Storage   string
	HTTPPort  int
	HTTPSPort int
	Site      string
	Directory string
	Root      string
	Challenge string // the one challenge type left on: http-01 or tls-alpn-01
}

// startCaddyClient runs the second Caddy for site and stops it when t
// ends. Its http_port and https_port are the ports the CA validates
// http-01 and tls-alpn-01 on: Caddy answers http-01 on its http_port and
// tls-alpn-01 on its https_port, as it would on 80 and 443 with a public
// CA. The CA resolves site through the test DNS, which answers 127.0.0.1.
func startCaddyClient(t *testing.T, ca *testCA, site, challenge string) *caddyProcess {
	t.Helper()
	dir := t.TempDir()
	cfg := writeCaddyfile(t, dir, "client.Caddyfile.tmpl", clientCaddyfileParams{
		Storage:   filepath.Join(dir, "storage"),
		HTTPPort:  ca.ValidationPort,
		HTTPSPort: ca.TLSALPNPort,
		Site:      site,
		Directory: ca.DirectoryURL,
		Root:      ca.RootPath,
		Challenge: challenge,
	})
	// The client stops when its test ends, long before the CA does, so the
	// next client can take the same ports.
	return startCaddy(t, "the client caddy", dir, func(p *caddyProcess) {
		t.Logf("client Caddy's Caddyfile:\n%s\n--- client Caddy's log (%s):\n%s",
			cfg, p.logPath, tailFile(p.logPath, 0, 64<<10))
	})
}

// testCaddyClient starts the second Caddy with only one challenge type
// left on and waits until its site serves a certificate from the CA, by
// dialing it as a browser would: SNI site, trusting only the CA's root.
func testCaddyClient(t *testing.T, ca *testCA, challenge, site string) {
	offset := ca.logSize()
	client := startCaddyClient(t, ca, site, challenge)
	addr := fmt.Sprintf("127.0.0.1:%d", ca.TLSALPNPort)
	tlsConfig := &tls.Config{ServerName: site, RootCAs: ca.Roots}

	start := time.Now()
	deadline := start.Add(clientCertTimeout)
	var state tls.ConnectionState
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, tlsConfig)
		if err == nil {
			state = conn.ConnectionState()
			conn.Close()
			break
		}
		select {
		case <-client.exited:
			ca.failWithLog(t, fmt.Sprintf("the client Caddy exited: %v", client.waitErr), offset)
		default:
		}
		// certmagic retries a failed attempt only after a minute; its
		// log already says why, so there is no point waiting for it.
		if b, _ := os.ReadFile(client.logPath); bytes.Contains(b, []byte(`"msg":"could not get certificate from issuer"`)) {
			ca.failWithLog(t, fmt.Sprintf("the client Caddy could not get a certificate for %s (its log below says why)", site), offset)
		}
		if time.Now().After(deadline) {
			ca.failWithLog(t, fmt.Sprintf("no verifiable certificate for %s at %s after %s; last error: %v",
				site, addr, clientCertTimeout, err), offset)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("the client Caddy served a certificate for %s after %s", site, time.Since(start).Round(time.Millisecond))

	checkIssued(t, ca, state.PeerCertificates, site)

	// The certificate was obtained with the challenge type left on; the
	// other one is off in the client's config. certmagic logs the type it
	// solves, so a config that failed to turn one off shows here.
	logText := tailFile(client.logPath, 0, 1<<20)
	if !strings.Contains(logText, `"challenge_type":"`+challenge+`"`) {
		t.Errorf("the client Caddy's log does not mention solving %s", challenge)
	}

	// And the site itself answers over the new certificate.
	httpClient := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: tlsConfig,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		},
	}
	defer httpClient.CloseIdleConnections()
	url := fmt.Sprintf("https://%s:%d/", site, ca.TLSALPNPort)
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if want := "hello from " + site; resp.StatusCode != http.StatusOK || string(body) != want {
		t.Errorf("GET %s = %s %q, want 200 %q", url, resp.Status, body, want)
	}
}
