package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The two servers of a run.
const (
	ours   = "ours"
	theirs = "theirs"
)

// server is one running `caddy run` process.
type server struct {
	name         string // ours or theirs
	handler      string // acme_ca or acme_server
	dir          string // everything of this server: Caddyfile, storage, HOME, log
	storage      string // Caddy's storage (file_system)
	port         int    // https_port, where the directory is
	adminAddr    string // set when -server-pprof turns the admin endpoint on
	directoryURL string
	logPath      string

	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been reaped
	waitErr error         // set before exited is closed

	root  *x509.Certificate // set by waitReady
	roots *x509.CertPool
	dir0  directory // the directory, set by waitReady

	mu        sync.Mutex
	logOffset int64 // how much of the log has been read by newLogLines
}

// directory is the part of an ACME directory the bench uses.
type directory struct {
	NewNonce   string `json:"newNonce"`
	NewAccount string `json:"newAccount"`
	NewOrder   string `json:"newOrder"`
}

// buildCaddy builds the Caddy of this repository (./cmd/caddy) into dir.
// It needs to run inside the module, which `go run ./cmd/acmeca-bench` and
// `go test` do.
func buildCaddy(ctx context.Context, dir string, progress io.Writer) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module (go env GOMOD): %v; pass a Caddy binary with -caddy", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the caddy-acmeca module, so ./cmd/caddy cannot be built; run from the repository or pass -caddy")
	}
	out := filepath.Join(dir, "caddy")
	fmt.Fprintln(progress, "building ./cmd/caddy ...")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/acmeca/caddy-acmeca/cmd/caddy")
	cmd.Dir = filepath.Dir(mod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, b)
	}
	fmt.Fprintf(progress, "built %s in %s\n", out, time.Since(start).Round(100*time.Millisecond))
	return out, nil
}

// startServer writes the server's Caddyfile and starts Caddy. It does not
// wait for it: call waitReady.
func startServer(name, bin, parent, dnsAddr string, cfg *config) (*server, error) {
	s := &server{name: name, handler: "acme_server", dir: filepath.Join(parent, name), exited: make(chan struct{})}
	if name == ours {
		s.handler = "acme_ca"
	}
	s.storage = filepath.Join(s.dir, "storage")
	s.logPath = filepath.Join(s.dir, "caddy.log")
	home := filepath.Join(s.dir, "home")
	xdgData := filepath.Join(s.dir, "xdg-data") // Caddy's acme_server keeps its bbolt database here
	xdgConfig := filepath.Join(s.dir, "xdg-config")
	for _, d := range []string{s.storage, home, xdgData, xdgConfig} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}

	n := 2
	if cfg.serverPprof != "" {
		n = 3
	}
	ports, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	s.port = ports[0]
	admin := "off"
	if cfg.serverPprof != "" {
		s.adminAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
		admin = s.adminAddr
	}
	caddyfile, err := renderCaddyfile(caddyfileParams{
		Admin:     admin,
		Storage:   s.storage,
		HTTPPort:  ports[1],
		HTTPSPort: s.port,
		DNS:       dnsAddr,
		Ours:      name == ours,
		Challenge: cfg.challenge,
	})
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(s.dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, caddyfile, 0o600); err != nil {
		return nil, err
	}
	s.directoryURL = fmt.Sprintf("https://localhost:%d/acme/directory", s.port)
	if name == theirs {
		// smallstep's ACME API lives under the provisioner's name.
		s.directoryURL = fmt.Sprintf("https://localhost:%d/acme/local/directory", s.port)
	}

	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	s.cmd.Dir = s.dir
	s.cmd.Env = serverEnv(name, home, xdgData, xdgConfig)
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	// Its own process group, so a Ctrl-C at the terminal reaches only the
	// bench, which then stops Caddy itself; and if the bench dies without
	// stopping it, the kernel kills Caddy.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %v", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	return s, nil
}

// serverEnv is the bench's environment with HOME and the XDG directories
// moved into the server's own directory, so Caddy neither reads nor writes
// the user's config and data, and without proxy settings, except one:
//
// Caddy's acme_server (smallstep) fetches http-01 with an http.Client that
// resolves names through the system resolver, not through its `resolvers`
// (those serve only dns-01 TXT lookups). The system resolver here cannot
// know the bench's names, so that client is pointed at the bench's port 80
// as its HTTP proxy (its transport honours HTTP_PROXY): the request still
// reaches 127.0.0.1:80, with no A lookup. Our CA resolves the name through
// the bench's DNS server, so it does one DNS query more per validation.
func serverEnv(name, home, xdgData, xdgConfig string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", strings.HasPrefix(k, "XDG_"), strings.HasSuffix(strings.ToUpper(k), "_PROXY"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home, "XDG_DATA_HOME="+xdgData, "XDG_CONFIG_HOME="+xdgConfig)
	if name == theirs {
		env = append(env, "HTTP_PROXY=http://127.0.0.1:80", "http_proxy=http://127.0.0.1:80")
	}
	return env
}

// waitReady polls the directory until it answers, trusting only the root
// Caddy wrote into the server's storage.
func (s *server) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("%s: caddy exited before its directory answered: %v\n%s", s.name, s.waitErr, s.logTail(4096))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if last = s.tryDirectory(ctx); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: directory %s not ready after %s: %v\n%s", s.name, s.directoryURL, limit, last, s.logTail(4096))
}

func (s *server) tryDirectory(ctx context.Context) error {
	rootPath := filepath.Join(s.storage, "pki", "authorities", "local", "root.crt")
	b, err := os.ReadFile(rootPath)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return fmt.Errorf("%s: no PEM block", rootPath)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %v", rootPath, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.directoryURL, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", s.directoryURL, resp.Status)
	}
	var d directory
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return fmt.Errorf("decoding the directory: %v", err)
	}
	if d.NewNonce == "" || d.NewAccount == "" || d.NewOrder == "" {
		return fmt.Errorf("directory lacks newNonce, newAccount or newOrder: %+v", d)
	}
	s.root, s.roots, s.dir0 = root, pool, d
	return nil
}

// stop asks Caddy to stop, and kills it if it has not stopped in time.
// Our CA waits up to 15 s for validations in flight.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// alive reports an error if Caddy has exited.
func (s *server) alive() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s: caddy exited: %v\n%s", s.name, s.waitErr, s.logTail(4096))
	default:
		return nil
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// newLogLines returns the lines Caddy logged since the last call. Caddy
// logs at level ERROR, so every line is a server-side error.
func (s *server) newLogLines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(s.logPath)
	if err != nil {
		return []string{fmt.Sprintf("(reading %s: %v)", s.logPath, err)}
	}
	defer f.Close()
	if _, err := f.Seek(s.logOffset, io.SeekStart); err != nil {
		return nil
	}
	var lines []string
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // a partial last line is read next time
		}
		s.logOffset += int64(len(line))
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// logTail is the end of Caddy's log, for error messages.
func (s *server) logTail(max int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "--- " + s.logPath + ":\n" + string(b)
}

// version is what `caddy version` prints.
func caddyVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners
// are held until all are picked, so no port comes twice; Caddy binds them
// right after.
func freePorts(n int) ([]int, error) {
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
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
