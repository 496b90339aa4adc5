package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
)

// TestJSONConfig: the handler configured in Caddy's native JSON, with
// guest modules for challenges and the rate-limit backend, serves the CA
// and applies what the JSON says.
func TestJSONConfig(t *testing.T) {
	dns := testdns.Start(t)
	dir := t.TempDir()
	httpsPort, httpPort := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`{
	"admin": {"disabled": true},
	"storage": {"module": "file_system", "root": %q},
	"apps": {
		"pki": {"certificate_authorities": {"local": {"install_trust": false}}},
		"tls": {"automation": {"policies": [{"subjects": ["localhost"], "issuers": [{"module": "internal"}]}]}},
		"http": {
			"http_port": %d,
			"https_port": %d,
			"servers": {"ca": {
				"listen": [":%d"],
				"automatic_https": {"disable_redirects": true},
				"routes": [{"match": [{"host": ["localhost"]}], "handle": [{
					"handler": "acme_ca",
					"path_prefix": "/ca",
					"lifetime": "24h",
					"resolvers": [%q],
					"terms_of_service": "https://example.test/tos",
					"caa_identities": ["ca.example.test"],
					"challenges": {"http-01": {"port": 8088, "timeout": "5s"}, "dns-01": {}},
					"policy": {"wildcards": false, "max_identifiers": 3},
					"rate_limits": {
						"limits": {"duplicate_certificates": {"count": 1, "window": "1h"}},
						"backend": {"backend": "storage"}
					}
				}]}]
			}}
		}
	}
}`, dir, httpPort, httpsPort, httpsPort, dns.Addr())
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatalf("loading JSON config: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })

	rootPEM, err := os.ReadFile(filepath.Join(dir, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	base := fmt.Sprintf("https://localhost:%d/ca", httpsPort)

	// Caddy obtains the site's own certificate in the background.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/directory")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("directory not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	var dirObj struct {
		NewOrder string `json:"newOrder"`
		Meta     struct {
			TermsOfService string   `json:"termsOfService"`
			CAAIdentities  []string `json:"caaIdentities"`
		} `json:"meta"`
	}
	getJSON(t, client, base+"/directory", &dirObj)
	if dirObj.NewOrder != base+"/new-order" || dirObj.Meta.TermsOfService != "https://example.test/tos" ||
		len(dirObj.Meta.CAAIdentities) != 1 || dirObj.Meta.CAAIdentities[0] != "ca.example.test" {
		t.Errorf("directory %+v does not reflect the JSON config", dirObj)
	}
	var limits struct {
		Limits []struct {
			Name   string `json:"name"`
			Count  int    `json:"count"`
			Window string `json:"window"`
		} `json:"limits"`
	}
	getJSON(t, client, base+"/rate-limits", &limits)
	found := false
	for _, l := range limits.Limits {
		if l.Name == "duplicate_certificates" {
			found = l.Count == 1 && l.Window == "1h0m0s"
		}
	}
	if !found {
		t.Errorf("rate-limits page %+v does not show duplicate_certificates 1 per 1h", limits)
	}
}

func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
