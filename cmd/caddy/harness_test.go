package main

// Shared harness for the end-to-end tests of this package: it builds the
// real Caddy binary once, and runs it as an ACME CA on loopback with a real
// DNS server beside it, so ACME clients (certbot, lego) can be pointed at it
// exactly as a user would.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
)

// binDir holds the Caddy binary built for this test run. TestMain owns it so
// the binary outlives any single test and is removed once at the end.
var binDir string

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-acmeca-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating binary dir:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// caddyBinary builds this package into a real executable, once per test
// run. It is lazy so that a run where every end-to-end test skips does not
// pay for the build. `go test` puts its own GOROOT/bin first in PATH, so
// "go" here is the toolchain that is running the tests.
func caddyBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out := filepath.Join(binDir, "caddy")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
		combined, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, combined)
			return
		}
		buildPath = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// testCA is a running Caddy that serves the acme_ca handler.
type testCA struct {
	Dir            string // the test's temp dir holding the config, storage and log
	DNS            *testdns.Server
	HTTPSPort      int // Caddy's https_port, where the ACME directory is
	HTTPPort       int // Caddy's http_port; unused by the tests but kept off :80
	ValidationPort int // where the CA connects for http-01
	TLSALPNPort    int // where the CA connects for tls-alpn-01, if the Caddyfile offers it
	DirectoryURL   string
	RootPath       string // Caddy's local root certificate, PEM
	Root           *x509.Certificate
	Roots          *x509.CertPool

	*caddyProcess // set once Caddy has started

	mu        sync.Mutex
	logDumped bool // a failure already printed the relevant part of Caddy's log
}

// caddyfileParams fills the CA's Caddyfile templates in testdata. Each
// template uses the fields it needs.
type caddyfileParams struct {
	Storage        string
	HTTPPort       int
	HTTPSPort      int
	ValidationPort int
	TLSALPNPort    int
	DNS            string
	RateLimits     string // a rate_limits block, or empty
}

// caOption changes how startCA sets up the CA, for tests that need more
// than the certbot walk-through's configuration.
type caOption func(*caSetup)

// caSetup is what the options choose; startCA fills in the defaults.
type caSetup struct {
	template     string // the Caddyfile template, a file in testdata
	rateLimits   string // the template's RateLimits
	readyTimeout time.Duration

	// What the CA shares with other nodes of a cluster; startCA makes its
	// own when these are unset.
	storage        string
	dns            *testdns.Server
	validationPort int
}

// withCaddyfile makes startCA fill testdata/name instead of
// certbot.Caddyfile.tmpl. The template gets a caddyfileParams.
func withCaddyfile(name string) caOption {
	return func(s *caSetup) { s.template = name }
}

// withRateLimits hands the template a rate_limits block, for
// ratelimit.Caddyfile.tmpl.
func withRateLimits(block string) caOption {
	return func(s *caSetup) { s.rateLimits = block }
}

// inCluster makes the CA one node of a cluster: it keeps its state in the
// shared storage, resolves names through the shared DNS server, and
// validates http-01 on the port where the test's one responder listens. A
// node joining the storage of another may wait for that node's storage
// locks, so it is given longer to answer.
func inCluster(storage string, dns *testdns.Server, validationPort int) caOption {
	return func(s *caSetup) {
		s.storage, s.dns, s.validationPort = storage, dns, validationPort
		s.readyTimeout = 60 * time.Second
	}
}

// startCA starts a DNS server that answers 127.0.0.1 for every name and a
// Caddy process configured as an ACME CA that uses it, and waits until the
// ACME directory answers. Both are stopped when t ends.
func startCA(t *testing.T, opts ...caOption) *testCA {
	t.Helper()
	setup := caSetup{template: "certbot.Caddyfile.tmpl", readyTimeout: 30 * time.Second}
	for _, o := range opts {
		o(&setup)
	}
	// Built before the ports are picked, so that they stay unbound only
	// for as long as Caddy takes to start.
	caddyBinary(t)
	dir := t.TempDir()
	if setup.storage == "" {
		setup.storage = filepath.Join(dir, "storage")
	}
	if setup.dns == nil {
		// Every name resolves to loopback, so the CA's http-01 connection
		// for any identifier lands on the client's standalone server on
		// 127.0.0.1.
		setup.dns = testdns.Start(t)
		setup.dns.SetDefaultA("127.0.0.1")
	}

	ports := freePorts(t, 4)
	ca := &testCA{
		Dir:            dir,
		DNS:            setup.dns,
		HTTPSPort:      ports[0],
		HTTPPort:       ports[1],
		ValidationPort: ports[2],
		TLSALPNPort:    ports[3],
		RootPath:       filepath.Join(setup.storage, "pki", "authorities", "local", "root.crt"),
	}
	if setup.validationPort != 0 {
		ca.ValidationPort = setup.validationPort
	}
	ca.DirectoryURL = fmt.Sprintf("https://localhost:%d/acme/directory", ca.HTTPSPort)

	writeCaddyfile(t, dir, setup.template, caddyfileParams{
		Storage:        setup.storage,
		HTTPPort:       ca.HTTPPort,
		HTTPSPort:      ca.HTTPSPort,
		ValidationPort: ca.ValidationPort,
		TLSALPNPort:    ca.TLSALPNPort,
		DNS:            ca.DNS.Addr(),
		RateLimits:     setup.rateLimits,
	})
	ca.caddyProcess = startCaddy(t, "caddy", dir, func(p *caddyProcess) {
		ca.mu.Lock()
		dumped := ca.logDumped
		ca.mu.Unlock()
		if !dumped {
			t.Logf("Caddy's log (%s):\n%s", p.logPath, tailFile(p.logPath, 0, 64<<10))
		}
	})
	ca.waitReady(t, setup.readyTimeout)
	return ca
}

// writeCaddyfile fills testdata/tmplName with params and writes the result
// to dir/Caddyfile, where startCaddy reads it. It returns the Caddyfile.
func writeCaddyfile(t *testing.T, dir, tmplName string, params any) string {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join("testdata", tmplName))
	if err != nil {
		t.Fatal(err)
	}
	var cfg bytes.Buffer
	if err := tmpl.Execute(&cfg, params); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg.String()
}

// caddyProcess is a running `caddy run`.
type caddyProcess struct {
	logPath string        // Caddy's stdout and stderr
	exited  chan struct{} // closed once the process has exited
	waitErr error         // how it exited; set before exited is closed
}

// startCaddy runs the Caddy binary on dir/Caddyfile with dir as its working
// directory, logging to dir/caddy.log. HOME and the XDG dirs point into dir
// so Caddy neither reads nor writes the developer's own config, autosave or
// data. The process is killed when t ends; if t failed, onFailure then runs
// to show what went wrong. name says which Caddy it is in an error.
func startCaddy(t *testing.T, name, dir string, onFailure func(*caddyProcess)) *caddyProcess {
	t.Helper()
	bin := caddyBinary(t)
	p := &caddyProcess{logPath: filepath.Join(dir, "caddy.log"), exited: make(chan struct{})}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HOME="+mkdir(t, dir, "home"),
		"XDG_DATA_HOME="+mkdir(t, dir, "xdg-data"),
		"XDG_CONFIG_HOME="+mkdir(t, dir, "xdg-config"),
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			onFailure(p)
		}
	})
	return p
}

// waitReady polls the ACME directory until it answers 200 with a JSON
// directory, trusting only Caddy's own root, which Caddy writes at startup.
func (ca *testCA) waitReady(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-ca.exited:
			ca.failWithLog(t, fmt.Sprintf("caddy exited before the ACME directory answered: %v", ca.waitErr), 0)
		default:
		}
		lastErr = ca.tryDirectory()
		if lastErr == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	ca.failWithLog(t, fmt.Sprintf("ACME directory %s not ready after %s: %v", ca.DirectoryURL, limit, lastErr), 0)
}

func (ca *testCA) tryDirectory() error {
	pemBytes, err := os.ReadFile(ca.RootPath)
	if err != nil {
		return err
	}
	root, err := parseOneCert(pemBytes)
	if err != nil {
		return fmt.Errorf("%s: %v", ca.RootPath, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	client := &http.Client{
		Timeout:   3 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get(ca.DirectoryURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	var dir struct {
		NewNonce   string `json:"newNonce"`
		NewAccount string `json:"newAccount"`
		NewOrder   string `json:"newOrder"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		return fmt.Errorf("decoding directory: %v", err)
	}
	if dir.NewNonce == "" || dir.NewAccount == "" || dir.NewOrder == "" {
		return fmt.Errorf("directory lacks newNonce/newAccount/newOrder: %+v", dir)
	}
	ca.Root, ca.Roots = root, pool
	return nil
}

// logSize is how much Caddy has logged so far, so a failure can show what
// Caddy said while one client command ran.
func (ca *testCA) logSize() int64 {
	fi, err := os.Stat(ca.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// failWithLog fails t with msg followed by Caddy's log from offset on.
func (ca *testCA) failWithLog(t *testing.T, msg string, offset int64) {
	t.Helper()
	ca.mu.Lock()
	ca.logDumped = true
	ca.mu.Unlock()
	t.Fatalf("%s\n--- Caddy's log from byte %d:\n%s", msg, offset, tailFile(ca.logPath, offset, 64<<10))
}

// caddyLogSince returns what Caddy logged from offset on, marking the log
// as shown so the cleanup does not print it again.
func (ca *testCA) caddyLogSince(offset int64) string {
	ca.mu.Lock()
	ca.logDumped = true
	ca.mu.Unlock()
	return tailFile(ca.logPath, offset, 64<<10)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. All listeners
// are held open until every port is picked so the kernel cannot hand out the
// same port twice; they are closed before returning, for Caddy and the ACME
// client to bind.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func mkdir(t testing.TB, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// tailFile returns the file's content from offset on, at most max bytes of
// its end, for failure messages.
func tailFile(path string, offset int64, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	if offset > 0 && offset <= int64(len(b)) {
		b = b[offset:]
	}
	if len(b) > max {
		b = append([]byte("...(cut)...\n"), b[len(b)-max:]...)
	}
	return string(b)
}

// clientTimeout bounds one command of an ACME client. A healthy run takes
// seconds; the bound only keeps a hung CA from hanging the whole test
// binary.
const clientTimeout = 2 * time.Minute

// requireClient returns the path of the ACME client command name, skipping
// the test on a developer machine without it. CI installs the clients
// (.ci/run), so there a missing binary is a broken setup and fails instead
// of silently skipping.
func requireClient(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found in PATH but CI is set: .ci/run must install it (apt-get install %s): %v", name, name, err)
		}
		t.Skipf("%s not installed (apt-get install %s): %v", name, name, err)
	}
	return path
}

// runClient runs an ACME client with env added to its environment, within
// clientTimeout, and returns its combined output.
func runClient(path string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", clientTimeout, err)
	}
	return out.String(), err
}

// checkLeafNames checks that leaf names exactly wantNames, in any order,
// and carries no other subject alternative name.
func checkLeafNames(t *testing.T, leaf *x509.Certificate, wantNames []string) {
	t.Helper()
	got := slices.Clone(leaf.DNSNames)
	want := slices.Clone(wantNames)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("leaf DNSNames = %q, want exactly %q", leaf.DNSNames, wantNames)
	}
	if len(leaf.IPAddresses)+len(leaf.EmailAddresses)+len(leaf.URIs) != 0 {
		t.Errorf("leaf has SANs beyond the requested names: IPs %v, emails %v, URIs %v",
			leaf.IPAddresses, leaf.EmailAddresses, leaf.URIs)
	}
}

// checkVerifies checks that leaf verifies as a TLS server certificate for
// every name in wantNames, with chain as the only intermediates and the
// CA's root as the only root, and that the chain it builds ends at that
// root.
func (ca *testCA) checkVerifies(t *testing.T, leaf *x509.Certificate, chain []*x509.Certificate, wantNames []string) {
	t.Helper()
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	for _, n := range wantNames {
		chains, err := leaf.Verify(x509.VerifyOptions{
			DNSName:       n,
			Intermediates: inter,
			Roots:         ca.Roots,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Fatalf("leaf for %s does not verify to the CA root: %v", n, err)
		}
		if top := chains[0][len(chains[0])-1]; !top.Equal(ca.Root) {
			t.Fatalf("leaf for %s chains to %s, not to the CA root", n, top.Subject)
		}
	}
}

// parseOneCert parses a PEM file that must hold exactly one certificate.
func parseOneCert(pemBytes []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(pemBytes)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("want 1 certificate, found %d", len(certs))
	}
	return certs[0], nil
}

// parseCerts parses every CERTIFICATE block and rejects anything else, so a
// stray key or garbage in a chain file is noticed.
func parseCerts(pemBytes []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after the last PEM block")
	}
	return certs, nil
}

// itoa keeps command lines readable.
func itoa(n int) string { return strconv.Itoa(n) }
