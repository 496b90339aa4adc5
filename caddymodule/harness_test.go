package caddymodule

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/challenge/http01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
)

// TestMain keeps Caddy's data (instance ID, autosave) out of the home folder.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "acmeca-test-home")
	if err != nil {
		panic(err)
	}
	os.Setenv("HOME", dir)
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testCA is a real Caddy, in this process, serving the acme_ca handler over
// HTTPS on loopback, with a real DNS server answering 127.0.0.1 for every
// name and http-01 validation pointed at ChallPort.
type testCA struct {
	t          testing.TB
	StorageDir string
	DNS        *testdns.Server
	HTTPSPort  int
	HTTPPort   int
	ChallPort  int // where validation connects for http-01 (a client's responder listens here)
	ALPNPort   int // where validation connects for tls-alpn-01
	Options    string
	DirURL     string
	Roots      *x509.CertPool
	Root       *x509.Certificate
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCA starts Caddy with options added inside the acme_ca block.
func startCA(t testing.TB, options string) *testCA {
	t.Helper()
	dns := testdns.Start(t)
	dns.SetDefaultA("127.0.0.1")
	c := &testCA{
		t:          t,
		StorageDir: t.TempDir(),
		DNS:        dns,
		HTTPSPort:  freePort(t),
		HTTPPort:   freePort(t),
		ChallPort:  freePort(t),
		ALPNPort:   freePort(t),
		Options:    options,
	}
	c.DirURL = fmt.Sprintf("https://localhost:%d/acme/directory", c.HTTPSPort)
	c.load()
	t.Cleanup(func() { caddy.Stop() })
	return c
}

func (c *testCA) caddyfile() string {
	return fmt.Sprintf(`{
	admin off
	storage file_system %s
	skip_install_trust
	http_port %d
	https_port %d
	auto_https disable_redirects
	persist_config off
	log {
		level ERROR
	}
}
https://localhost:%d {
	tls internal
	acme_ca {
		resolvers %s
		challenges {
			http-01 {
				port %d
			}
			dns-01
			tls-alpn-01 {
				port %d
			}
		}
		%s
	}
	respond "not the CA" 404
}
`, c.StorageDir, c.HTTPPort, c.HTTPSPort, c.HTTPSPort, c.DNS.Addr(), c.ChallPort, c.ALPNPort, c.Options)
}

// load (re)loads the config into the running Caddy, or starts it.
func (c *testCA) load() {
	c.t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warns, err := adapter.Adapt([]byte(c.caddyfile()), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		c.t.Fatalf("adapting Caddyfile: %v", err)
	}
	for _, w := range warns {
		if strings.Contains(w.Message, "not formatted") {
			continue
		}
		c.t.Logf("Caddyfile warning: %s", w.String())
	}
	if err := caddy.Load(cfg, true); err != nil {
		c.t.Fatalf("loading config: %v", err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(c.StorageDir, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		c.t.Fatalf("reading root: %v", err)
	}
	c.Roots = x509.NewCertPool()
	if !c.Roots.AppendCertsFromPEM(rootPEM) {
		c.t.Fatal("root.crt does not parse")
	}
	c.Root = parsePEMCerts(c.t, rootPEM)[0]
	c.waitReady()
}

// reload applies a changed config, as `caddy reload` does.
func (c *testCA) reload(options string) {
	c.t.Helper()
	c.Options = options
	c.load()
}

// restart stops Caddy entirely and starts it again on the same storage, as a
// process restart would (the in-memory state is gone).
func (c *testCA) restart() {
	c.t.Helper()
	if err := caddy.Stop(); err != nil {
		c.t.Fatalf("stopping caddy: %v", err)
	}
	c.load()
}

func (c *testCA) waitReady() {
	c.t.Helper()
	client := c.HTTPClient()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(c.DirURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("directory not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// HTTPClient trusts the CA's root (the site runs on `tls internal`).
func (c *testCA) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: c.Roots},
		},
	}
}

// legoUser is a lego registration.User.
type legoUser struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount
}

func (u *legoUser) GetEmail() string                       { return u.email }
func (u *legoUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.Signer           { return u.key }

func newKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// legoClient returns a lego client for a new user, its http-01 responder on
// ChallPort. register says whether to create the account.
func (c *testCA) legoClient(t testing.TB, user *legoUser, register bool) *lego.Client {
	t.Helper()
	cfg := lego.NewConfig(user)
	cfg.CADirURL = c.DirURL
	cfg.HTTPClient = c.HTTPClient()
	cfg.Certificate.Timeout = 30 * time.Second
	client, err := lego.NewClient(cfg)
	if err != nil {
		t.Fatalf("lego client: %v", err)
	}
	if err := client.Challenge.SetHTTP01Provider(http01.NewProviderServer("127.0.0.1", strconv.Itoa(c.ChallPort))); err != nil {
		t.Fatal(err)
	}
	if register {
		reg, err := client.Registration.Register(context.Background(), registration.RegisterOptions{TermsOfServiceAgreed: true})
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		user.reg = reg
	}
	return client
}

func parsePEMCerts(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("parsing certificate: %v", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM")
	}
	return out
}
