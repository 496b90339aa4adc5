package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRouting: requests outside path_prefix go on to the next handler (here
// a respond), and path_prefix moves every ACME resource.
func TestRouting(t *testing.T) {
	ca := startCA(t, "")
	client := ca.HTTPClient()
	base := fmt.Sprintf("https://localhost:%d", ca.HTTPSPort)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	for _, path := range []string{"/", "/index.html", "/acmefoo/directory", "/pki/directory"} {
		if code, body := get(path); code != http.StatusNotFound || body != "not the CA" {
			t.Errorf("GET %s = %d %q, want the next handler's 404 \"not the CA\"", path, code, body)
		}
	}
	if code, body := get("/acme/directory"); code != http.StatusOK || !strings.Contains(body, base+"/acme/new-nonce") {
		t.Errorf("GET /acme/directory = %d %q", code, body)
	}
	if code, body := get("/acme/nothing-here"); code != http.StatusNotFound || !strings.Contains(body, "urn:ietf:params:acme:error:malformed") {
		t.Errorf("GET /acme/nothing-here = %d %q, want an ACME 404 problem", code, body)
	}

	ca.DirURL = base + "/pki/directory"
	ca.reload("path_prefix /pki")
	if code, body := get("/pki/directory"); code != http.StatusOK || !strings.Contains(body, base+"/pki/new-order") {
		t.Errorf("GET /pki/directory = %d %q", code, body)
	}
	if code, body := get("/acme/directory"); code != http.StatusNotFound || body != "not the CA" {
		t.Errorf("after moving the prefix, GET /acme/directory = %d %q, want the next handler", code, body)
	}
}
