package main

// The lego command (Debian's lego 4.9) against the real Caddy binary: a
// certificate by tls-alpn-01 with lego's own TLS server, and a wildcard by
// dns-01 with lego's exec provider publishing the records.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// legoCLI runs lego with its own data dir, so runs share no account or
// certificate and nothing lands in the working directory.
type legoCLI struct {
	path string
	ca   *testCA
	dir  string // lego's --path
}

func newLego(t *testing.T, ca *testCA) *legoCLI {
	return &legoCLI{path: requireClient(t, "lego"), ca: ca, dir: t.TempDir()}
}

// mustRun runs `lego <global flags> run` and fails t with lego's output and
// Caddy's log of the run if lego fails. LEGO_CA_CERTIFICATES makes lego
// trust Caddy's local root for the HTTPS directory.
func (l *legoCLI) mustRun(t *testing.T, env []string, flags ...string) string {
	t.Helper()
	args := append([]string{
		"--server", l.ca.DirectoryURL,
		"--email", "a@example.test",
		"--accept-tos",
		"--path", l.dir,
	}, flags...)
	args = append(args, "run")

	offset := l.ca.logSize()
	out, err := runClient(l.path, append([]string{"LEGO_CA_CERTIFICATES=" + l.ca.RootPath}, env...), args...)
	if err != nil {
		t.Fatalf("lego %s: %v\n--- lego output:\n%s\n--- Caddy's log during the command:\n%s",
			strings.Join(args, " "), err, out, l.ca.caddyLogSince(offset))
	}
	return out
}

// certificate reads what lego stored for the order whose first domain is
// name and checks it: <name>.crt is the leaf followed by the issuer that
// <name>.issuer.crt holds alone, and the whole is checked by checkIssued.
// lego writes a wildcard's files with "_" in place of "*".
func (l *legoCLI) certificate(t *testing.T, name string, wantNames ...string) {
	t.Helper()
	base := filepath.Join(l.dir, "certificates", strings.ReplaceAll(name, "*", "_"))
	read := func(path string) []byte {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			entries, _ := os.ReadDir(filepath.Dir(path))
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Fatalf("%v (the directory holds %q)", err, names)
		}
		return b
	}
	bundle, err := parseCerts(read(base + ".crt"))
	if err != nil {
		t.Fatalf("%s.crt: %v", base, err)
	}
	issuer, err := parseCerts(read(base + ".issuer.crt"))
	if err != nil {
		t.Fatalf("%s.issuer.crt: %v", base, err)
	}
	if len(bundle) < 2 || len(issuer) == 0 || !bundle[1].Equal(issuer[0]) {
		t.Errorf("%s.crt (%d certificates) is not the leaf followed by %s.issuer.crt (%d certificates)",
			base, len(bundle), base, len(issuer))
	}
	if key := read(base + ".key"); !bytes.Contains(key, []byte("PRIVATE KEY")) {
		t.Errorf("%s.key holds no private key", base)
	}
	checkIssued(t, l.ca, bundle, wantNames...)
}

// testLegoTLSALPN has lego answer tls-alpn-01 with its built-in TLS server
// on the port the CA validates tls-alpn-01 on.
func testLegoTLSALPN(t *testing.T, ca *testCA) {
	l := newLego(t, ca)
	l.mustRun(t, nil, "--tls", "--tls.port", fmt.Sprintf("127.0.0.1:%d", ca.TLSALPNPort),
		"-d", "tls.example.test")
	l.certificate(t, "tls.example.test", "tls.example.test")
}

// testLegoDNSExec gets a wildcard and its base name, which share one TXT
// name, with lego's exec provider calling the DNS hook. lego checks that
// the record is published by asking the test DNS server, and only that
// server (--dns.disable-cp skips the walk to the zone's authoritative
// servers, which a .test name does not have).
//
// The exec provider solves one challenge at a time and by default waits
// 60 s between them; EXEC_SEQUENCE_INTERVAL shortens that, and the polling
// interval only matters if the first look misses the record.
func testLegoDNSExec(t *testing.T, ca *testCA, dns *dnsControl) {
	l := newLego(t, ca)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		dns.env(),
		"EXEC_PATH=" + exe,
		"EXEC_SEQUENCE_INTERVAL=1",
		"EXEC_POLLING_INTERVAL=1",
		"EXEC_PROPAGATION_TIMEOUT=30",
	}
	dns.logOnFailure(t)
	l.mustRun(t, env, "--dns", "exec", "--dns.resolvers", ca.DNS.Addr(), "--dns.disable-cp",
		"-d", "*.wild.example.test", "-d", "wild.example.test")
	l.certificate(t, "*.wild.example.test", "*.wild.example.test", "wild.example.test")
	dns.checkCleanedUp(t, "wild.example.test")
}
