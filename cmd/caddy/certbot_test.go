package main

// End-to-end tests with the real certbot binary against the real Caddy
// binary: the Certbot walk-through the README shows, run step by step, with
// every produced certificate checked to chain to the CA's root.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// certbot runs the certbot binary with its own config, work and logs dirs,
// so nothing touches /etc/letsencrypt and the runs of different subtests do
// not share accounts or lineages.
type certbot struct {
	path                       string
	ca                         *testCA
	configDir, workDir, logDir string
}

func newCertbot(t *testing.T, path string, ca *testCA) *certbot {
	dir := t.TempDir()
	return &certbot{
		path:      path,
		ca:        ca,
		configDir: mkdir(t, dir, "config"),
		workDir:   mkdir(t, dir, "work"),
		logDir:    mkdir(t, dir, "logs"),
	}
}

// run runs one certbot command and returns its combined output. The
// directory flags and --non-interactive come first; args are the
// subcommand and its flags. REQUESTS_CA_BUNDLE makes certbot (python
// requests) trust Caddy's local root for the HTTPS directory, as the README
// tells users of a private CA to do.
func (c *certbot) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{
		"--config-dir", c.configDir,
		"--work-dir", c.workDir,
		"--logs-dir", c.logDir,
		"--non-interactive",
	}, args...)
	return runClient(c.path, []string{"REQUESTS_CA_BUNDLE=" + c.ca.RootPath}, full...)
}

// mustRun runs a certbot command that must succeed. On failure it prints
// what a person would look at: certbot's output, the end of its log, and
// what Caddy logged while the command ran.
func (c *certbot) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	offset := c.ca.logSize()
	out, err := c.run(t, args...)
	if err != nil {
		c.fail(t, fmt.Sprintf("certbot %s: %v", strings.Join(args, " "), err), out, offset)
	}
	return out
}

func (c *certbot) fail(t *testing.T, msg, out string, caddyOffset int64) {
	t.Helper()
	t.Fatalf("%s\n--- certbot output:\n%s\n--- end of certbot's log:\n%s\n--- Caddy's log during the command:\n%s",
		msg, out, tailFile(filepath.Join(c.logDir, "letsencrypt.log"), 0, 16<<10), c.ca.caddyLogSince(caddyOffset))
}

// lineage reads and checks the files certbot wrote for one certificate name
// and returns the leaf. It checks rather than assumes that the leaf chains
// to the CA's root: x509.Verify with chain.pem as the only intermediates
// and Caddy's root.crt as the only root, for every wanted name.
func (c *certbot) lineage(t *testing.T, name string, wantNames ...string) *x509.Certificate {
	t.Helper()
	live := filepath.Join(c.configDir, "live", name)
	read := func(file string) []*x509.Certificate {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(live, file))
		if err != nil {
			t.Fatal(err)
		}
		certs, err := parseCerts(b)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(certs) == 0 {
			t.Fatalf("%s holds no certificate", file)
		}
		return certs
	}
	certs, chain, full := read("cert.pem"), read("chain.pem"), read("fullchain.pem")
	if len(certs) != 1 {
		t.Fatalf("cert.pem holds %d certificates, want 1", len(certs))
	}
	leaf := certs[0]

	checkLeafNames(t, leaf, wantNames)

	// The root must come from the trust store, never from the chain: a
	// chain that carries the root is wasted bytes at best and, if clients
	// trusted it, a way to smuggle in a root.
	for i, ic := range chain {
		if bytes.Equal(ic.Raw, c.ca.Root.Raw) {
			t.Errorf("chain.pem certificate %d is the root itself", i)
		}
		if bytes.Equal(ic.RawSubject, ic.RawIssuer) && ic.CheckSignatureFrom(ic) == nil {
			t.Errorf("chain.pem certificate %d (%s) is self-signed", i, ic.Subject)
		}
	}
	if wantFull := append([]*x509.Certificate{leaf}, chain...); !slices.EqualFunc(full, wantFull,
		func(a, b *x509.Certificate) bool { return a.Equal(b) }) {
		t.Errorf("fullchain.pem (%d certs) is not cert.pem followed by chain.pem (%d certs)", len(full), len(wantFull))
	}

	c.ca.checkVerifies(t, leaf, chain, wantNames)
	return leaf
}

// TestCertbot runs both certbot scenarios against one Caddy, started once:
// starting Caddy and its local CA costs a few seconds, and the subtests use
// separate certbot dirs and names so they do not depend on each other.
func TestCertbot(t *testing.T) {
	path := requireClient(t, "certbot")
	ca := startCA(t)
	t.Logf("certbot at %s; CA directory %s; DNS %s; http-01 port %d", path, ca.DirectoryURL, ca.DNS.Addr(), ca.ValidationPort)
	if out, err := exec.Command(path, "--version").CombinedOutput(); err == nil {
		t.Logf("%s", bytes.TrimSpace(out))
	}

	t.Run("Walkthrough", func(t *testing.T) { testCertbotWalkthrough(t, path, ca) })
	t.Run("ECDSASingleName", func(t *testing.T) { testCertbotECDSA(t, path, ca) })
}

// testCertbotWalkthrough is the README's Certbot walk-through: register,
// issue for two names with the standalone http-01 server, renew, revoke,
// and revoke again.
func testCertbotWalkthrough(t *testing.T, path string, ca *testCA) {
	cb := newCertbot(t, path, ca)
	// The standalone server listens where our CA connects: the test DNS
	// answers 127.0.0.1 for every name, and the CA uses the configured
	// http-01 port instead of 80.
	standalone := []string{"--standalone", "--http-01-port", itoa(ca.ValidationPort), "--http-01-address", "127.0.0.1"}

	cb.mustRun(t, "register", "--server", ca.DirectoryURL,
		"-m", "admin@example.test", "--agree-tos", "--no-eff-email")

	cb.mustRun(t, append([]string{"certonly", "--server", ca.DirectoryURL},
		append(standalone, "-d", "www.example.test", "-d", "example.test")...)...)
	first := cb.lineage(t, "www.example.test", "www.example.test", "example.test")

	// No --server or --http-01-* flags: certbot must take them from the
	// renewal config it wrote at issuance, as it does for a user's cron job.
	cb.mustRun(t, "renew", "--force-renewal", "--no-random-sleep-on-renew")
	renewed := cb.lineage(t, "www.example.test", "www.example.test", "example.test")
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("renewal returned the same serial %x", first.SerialNumber)
	}

	certPath := filepath.Join(cb.configDir, "live", "www.example.test", "cert.pem")
	revoke := []string{"revoke", "--server", ca.DirectoryURL, "--cert-path", certPath, "--no-delete-after-revoke"}
	cb.mustRun(t, revoke...)

	// A second revocation of the same certificate must be refused with
	// RFC 8555's alreadyRevoked.
	offset := ca.logSize()
	out, err := cb.run(t, revoke...)
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		cb.fail(t, "second revoke of the same certificate succeeded; want alreadyRevoked", out, offset)
	case !errors.As(err, &exitErr):
		cb.fail(t, fmt.Sprintf("second revoke: %v", err), out, offset)
	case !cb.reportedProblem(t, out, "alreadyRevoked", "already revoked"):
		cb.fail(t, "second revoke failed, but certbot did not report alreadyRevoked", out, offset)
	}
}

// reportedProblem tells whether certbot's last run reported an ACME problem
// of the given type (or said so in words). Certbot before 2.2 on Python 3.11
// and later, which is Debian 12's certbot 2.1.0, prints every ACME error
// as "AttributeError: can't set attribute" (certbot issue #9539: the
// immutable acme.messages.Error cannot take the __traceback__ Python 3.11
// sets), so the problem it received is then only in its log, on the line
// where it raised acme.messages.Error. That line is what certbot itself
// parsed from our response, not our raw JSON, so it still shows that
// certbot understood the problem.
func (c *certbot) reportedProblem(t *testing.T, out, typ, words string) bool {
	t.Helper()
	if strings.Contains(out, typ) || strings.Contains(strings.ToLower(out), words) {
		return true
	}
	if !strings.Contains(out, "AttributeError: can't set attribute") {
		return false
	}
	log, err := os.ReadFile(filepath.Join(c.logDir, "letsencrypt.log"))
	if err != nil {
		t.Logf("reading certbot's log: %v", err)
		return false
	}
	if !strings.Contains(string(log), "acme.messages.Error: urn:ietf:params:acme:error:"+typ+" ") {
		return false
	}
	t.Logf("certbot hid the %s problem behind its Python 3.11 AttributeError (certbot #9539); found it in its log", typ)
	return true
}

// testCertbotECDSA issues for a single name with an ECDSA key, registering
// implicitly without an email address, as `certbot certonly` does when no
// account exists yet. Certbot 2.x already defaults to ECDSA P-256, which the
// walk-through covers, so this asks for P-384 to exercise a second curve.
func testCertbotECDSA(t *testing.T, path string, ca *testCA) {
	cb := newCertbot(t, path, ca)
	cb.mustRun(t, "certonly", "--server", ca.DirectoryURL,
		"--register-unsafely-without-email", "--agree-tos",
		"--standalone", "--http-01-port", itoa(ca.ValidationPort), "--http-01-address", "127.0.0.1",
		"--key-type", "ecdsa", "--elliptic-curve", "secp384r1", "-d", "ecdsa.example.test")
	leaf := cb.lineage(t, "ecdsa.example.test", "ecdsa.example.test")
	switch k := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P384() {
			t.Fatalf("leaf key is on %s; asked for P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		t.Fatalf("leaf has an RSA %d-bit key; asked for ECDSA", k.N.BitLen())
	default:
		t.Fatalf("leaf key is %T; asked for ECDSA", k)
	}
}
