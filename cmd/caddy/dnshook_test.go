package main

// A way for ACME clients in other processes to publish dns-01 TXT records
// in the in-process test DNS server: a control endpoint on loopback, and a
// hook that lego's exec provider and certbot's manual plugin run. The hook
// is this test binary itself, started again with dnsHookEnv set, so the
// tests need neither a second build nor curl.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
)

// dnsHookEnv, when set, turns this test binary into the DNS hook: it sends
// one record change to the control endpoint whose URL the variable holds,
// and exits before any test runs.
const dnsHookEnv = "ACMECA_TEST_DNS_HOOK"

func init() {
	if u := os.Getenv(dnsHookEnv); u != "" {
		os.Exit(runDNSHook(u, os.Args[1:]))
	}
}

// runDNSHook is the hook's main. Its first argument is present or cleanup.
// lego's exec provider adds the record's FQDN and value; certbot's manual
// plugin passes nothing more and sets CERTBOT_DOMAIN and CERTBOT_VALIDATION
// instead.
func runDNSHook(control string, args []string) int {
	var action, name, value string
	switch len(args) {
	case 3: // lego: present|cleanup <fqdn> <value>
		action, name, value = args[0], args[1], args[2]
	case 1: // certbot: present|cleanup, the rest in the environment
		action = args[0]
		domain, validation := os.Getenv("CERTBOT_DOMAIN"), os.Getenv("CERTBOT_VALIDATION")
		if domain == "" || validation == "" {
			fmt.Fprintf(os.Stderr, "dns hook: CERTBOT_DOMAIN=%q CERTBOT_VALIDATION=%q: both must be set\n", domain, validation)
			return 2
		}
		name, value = "_acme-challenge."+domain+".", validation
	default:
		fmt.Fprintf(os.Stderr, "dns hook: usage: present|cleanup [<fqdn> <value>], got %q\n", args)
		return 2
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.PostForm(control, url.Values{"action": {action}, "name": {name}, "value": {value}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "dns hook: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "dns hook: %s %s: %s: %s\n", action, name, resp.Status, body)
		return 1
	}
	fmt.Printf("dns hook: %s %s %q\n", action, name, value)
	return 0
}

// dnsControl keeps the dns-01 TXT records the hooks asked for and mirrors
// them into the test DNS server. A name can hold several values at once:
// an order for example.test and *.example.test needs two records at
// _acme-challenge.example.test, and a client may present both before the
// CA looks.
type dnsControl struct {
	dns *testdns.Server
	url string

	mu    sync.Mutex
	txt   map[string][]string // by lower-case FQDN with the trailing dot
	calls []string            // every change, for failure messages
}

// startDNSControl serves the control endpoint on loopback until t ends.
func startDNSControl(t *testing.T, dns *testdns.Server) *dnsControl {
	t.Helper()
	c := &dnsControl{dns: dns, txt: make(map[string][]string)}
	srv := httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

// logOnFailure shows the record changes if t fails, beside the client's
// output that the failure prints.
func (c *dnsControl) logOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("DNS record changes so far:\n%s", c.history())
		}
	})
}

// env is what a client's environment needs so that the hook finds the
// control endpoint.
func (c *dnsControl) env() string { return dnsHookEnv + "=" + c.url }

// hookCommand is the hook as a shell command line with its action, for
// certbot, which runs hooks through the shell. The path goes in unquoted:
// certbot 2.1 checks that a hook exists by looking up its first
// whitespace-separated word, quotes and all, so a quoted path is "not
// found". go test's build dirs never need quoting.
func hookCommand(t *testing.T, action string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsFunc(exe, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == '+' ||
			'0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) {
		t.Skipf("test binary path %q needs shell quoting, which certbot's hook check does not understand", exe)
	}
	return exe + " " + action
}

func (c *dnsControl) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	action, value := r.PostFormValue("action"), r.PostFormValue("value")
	name := strings.ToLower(r.PostFormValue("name"))
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	if !strings.HasPrefix(name, "_acme-challenge.") || value == "" {
		http.Error(w, fmt.Sprintf("want an _acme-challenge name and a value, got %q %q", name, value),
			http.StatusBadRequest)
		return
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fmt.Sprintf("%s %s %q", action, name, value))
	switch action {
	case "present":
		if !slices.Contains(c.txt[name], value) {
			c.txt[name] = append(c.txt[name], value)
		}
	case "cleanup":
		c.txt[name] = slices.DeleteFunc(c.txt[name], func(v string) bool { return v == value })
	default:
		http.Error(w, fmt.Sprintf("unknown action %q", action), http.StatusBadRequest)
		return
	}
	if vals := c.txt[name]; len(vals) > 0 {
		c.dns.SetTXT(name, vals...)
	} else {
		delete(c.txt, name)
		c.dns.Clear(name)
	}
	fmt.Fprintln(w, "ok")
}

// history lists the record changes so far, one a line.
func (c *dnsControl) history() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.calls, "\n")
}

// checkCleanedUp fails t if a record below any of the names is still
// published: a client that leaves its challenge records behind litters
// the user's zone.
func (c *dnsControl) checkCleanedUp(t *testing.T, names ...string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		fqdn := "_acme-challenge." + strings.ToLower(n) + "."
		if vals := c.txt[fqdn]; len(vals) > 0 {
			t.Errorf("the client left TXT %q at %s after it finished; record changes:\n%s",
				vals, fqdn, strings.Join(c.calls, "\n"))
		}
	}
}
