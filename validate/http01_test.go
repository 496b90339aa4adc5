package validate

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const challPath = "/.well-known/acme-challenge/" + testToken

// startHTTP serves h on a loopback port and returns the port.
func startHTTP(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

// freePort returns a loopback TCP port where nothing listens.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestHTTP01(t *testing.T) {
	srv, r := newDNS(t)
	srv.SetA("example.test", "127.0.0.1")
	srv.SetA("other.test", "127.0.0.1")
	// ::1 comes first and nothing listens there (or IPv6 is missing), so
	// validation must fall back to IPv4.
	srv.SetA("dual.test", "::1", "127.0.0.1")

	// serveKeyAuth answers the challenge path with the key authorization,
	// but only when the Host header is the bare name, as RFC 8555 §8.3 asks.
	serveKeyAuth := func(host string) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			if req.Host != host {
				http.Error(w, "wrong host "+req.Host, http.StatusBadRequest)
				return
			}
			fmt.Fprint(w, testKeyAuth+"\r\n \t\n")
		}
	}

	tests := []struct {
		name     string
		ident    Identifier
		handler  func(port int) http.HandlerFunc
		port     func(serverPort int) int // the port the validator is told to use
		timeout  time.Duration
		wantType string
		wantIn   func(port int) []string
	}{
		{
			name:    "success",
			handler: func(int) http.HandlerFunc { return serveKeyAuth("example.test") },
		},
		{
			name:    "success for an ip identifier",
			ident:   Identifier{Type: "ip", Value: "127.0.0.1"},
			handler: func(int) http.HandlerFunc { return serveKeyAuth("127.0.0.1") },
		},
		{
			name:    "IPv6 tried first, IPv4 fallback",
			ident:   Identifier{Type: "dns", Value: "dual.test"},
			handler: func(int) http.HandlerFunc { return serveKeyAuth("dual.test") },
		},
		{
			name:  "redirect to an IP address for an ip identifier",
			ident: Identifier{Type: "ip", Value: "127.0.0.1"},
			handler: func(port int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					if req.URL.Path == challPath {
						http.Redirect(w, req, fmt.Sprintf("http://127.0.0.1:%d/x", port), http.StatusFound)
						return
					}
					serveKeyAuth("127.0.0.1")(w, req)
				}
			},
		},
		{
			name: "wrong content",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "not\x00the key auth\n") }
			},
			wantType: ProblemIncorrectResponse,
			wantIn: func(port int) []string {
				return []string{fmt.Sprintf("http://example.test:%d%s", port, challPath), `got "not?the key auth"`, testKeyAuth}
			},
		},
		{
			name: "404",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no such file", http.StatusNotFound) }
			},
			wantType: ProblemUnauthorized,
			wantIn: func(port int) []string {
				return []string{fmt.Sprintf("http://example.test:%d%s", port, challPath), "127.0.0.1:" + strconv.Itoa(port), "HTTP 404", "no such file"}
			},
		},
		{
			name: "redirect to a path on the same host",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					if req.URL.Path == challPath {
						http.Redirect(w, req, "/moved/"+testToken, http.StatusFound)
						return
					}
					serveKeyAuth("example.test")(w, req)
				}
			},
		},
		{
			name: "redirect to another name",
			handler: func(port int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					if req.Host == "example.test" {
						http.Redirect(w, req, fmt.Sprintf("http://other.test:%d/x", port), http.StatusMovedPermanently)
						return
					}
					serveKeyAuth("other.test")(w, req)
				}
			},
		},
		{
			name: "redirect loop",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					http.Redirect(w, req, challPath, http.StatusFound)
				}
			},
			wantType: ProblemConnection,
			wantIn:   func(int) []string { return []string{"too many redirects", challPath} },
		},
		{
			name: "redirect to an IP address",
			handler: func(port int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					http.Redirect(w, req, fmt.Sprintf("http://127.0.0.1:%d/x", port), http.StatusFound)
				}
			},
			wantType: ProblemConnection,
			wantIn: func(port int) []string {
				return []string{fmt.Sprintf("http://127.0.0.1:%d/x", port), "IP addresses are not allowed"}
			},
		},
		{
			name: "redirect to a port not allowed",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					http.Redirect(w, req, "http://example.test:8081/x", http.StatusFound)
				}
			},
			wantType: ProblemConnection,
			wantIn:   func(int) []string { return []string{"http://example.test:8081/x", "not 8081"} },
		},
		{
			name: "redirect to https on the http port",
			handler: func(port int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					http.Redirect(w, req, fmt.Sprintf("https://example.test:%d/x", port), http.StatusFound)
				}
			},
			wantType: ProblemConnection,
			wantIn:   func(port int) []string { return []string{fmt.Sprintf("not %d", port)} },
		},
		{
			name: "redirect to another scheme",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					w.Header().Set("Location", "ftp://example.test/x")
					w.WriteHeader(http.StatusFound)
				}
			},
			wantType: ProblemConnection,
			wantIn:   func(int) []string { return []string{"ftp://example.test/x", "only http and https"} },
		},
		{
			name: "redirect to a name that does not resolve",
			handler: func(port int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					http.Redirect(w, req, fmt.Sprintf("http://nx.test:%d/x", port), http.StatusFound)
				}
			},
			wantType: ProblemDNS,
			wantIn:   func(int) []string { return []string{"NXDOMAIN looking up A/AAAA for nx.test"} },
		},
		{
			name: "body too large",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) {
					fmt.Fprint(w, testKeyAuth+strings.Repeat(" ", 70000))
				}
			},
			wantType: ProblemIncorrectResponse,
			wantIn:   func(int) []string { return []string{"larger than 65536 bytes"} },
		},
		{
			name: "connection refused",
			handler: func(int) http.HandlerFunc {
				return func(http.ResponseWriter, *http.Request) {}
			},
			port:     func(int) int { return freePort(t) },
			wantType: ProblemConnection,
			wantIn: func(port int) []string {
				return []string{fmt.Sprintf("http://example.test:%d%s", port, challPath), fmt.Sprintf("127.0.0.1:%d", port), "connection refused"}
			},
		},
		{
			name:     "connection refused on both families",
			ident:    Identifier{Type: "dns", Value: "dual.test"},
			handler:  func(int) http.HandlerFunc { return func(http.ResponseWriter, *http.Request) {} },
			port:     func(int) int { return freePort(t) },
			wantType: ProblemConnection,
			wantIn:   func(port int) []string { return []string{fmt.Sprintf("[::1]:%d, 127.0.0.1:%d", port, port)} },
		},
		{
			name: "oversized headers",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("X-Junk", strings.Repeat("j", 32<<10))
					fmt.Fprint(w, testKeyAuth)
				}
			},
			wantType: ProblemConnection,
			wantIn:   func(int) []string { return []string{challPath, "header"} },
		},
		{
			name:     "NXDOMAIN",
			ident:    Identifier{Type: "dns", Value: "nx.test"},
			handler:  func(int) http.HandlerFunc { return serveKeyAuth("nx.test") },
			wantType: ProblemDNS,
			wantIn:   func(int) []string { return []string{"NXDOMAIN looking up A/AAAA for nx.test"} },
		},
		{
			name: "timeout",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, req *http.Request) {
					select {
					case <-req.Context().Done():
					case <-time.After(2 * time.Second):
					}
				}
			},
			timeout:  200 * time.Millisecond,
			wantType: ProblemConnection,
			wantIn:   func(int) []string { return []string{"timed out", challPath} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var port int
			port = startHTTP(t, func(w http.ResponseWriter, req *http.Request) { tt.handler(port)(w, req) })
			if tt.port != nil {
				port = tt.port(port)
			}
			h := &HTTP01{Port: port}
			if tt.timeout != 0 {
				h.Timeout = caddyDuration(tt.timeout)
			}
			chall := dnsChallenge("http-01", "example.test", r)
			if tt.ident.Type != "" {
				chall.Identifier = tt.ident
			}
			err := h.Validate(context.Background(), chall)
			var want []string
			if tt.wantIn != nil {
				want = tt.wantIn(port)
			}
			wantProblem(t, err, tt.wantType, want...)
		})
	}
}

// Hostile or broken input must give a problem, not a panic.
func TestHTTP01BadInput(t *testing.T) {
	_, r := newDNS(t)
	tests := []struct {
		name  string
		chall Challenge
		want  string
	}{
		{"unknown identifier type", Challenge{Identifier: Identifier{Type: "email", Value: "a@b"}, Token: testToken, Resolver: r}, ProblemRejected},
		{"bad ip", Challenge{Identifier: Identifier{Type: "ip", Value: "300.1.1.1"}, Token: testToken, Resolver: r}, ProblemRejected},
		{"empty name", Challenge{Identifier: Identifier{Type: "dns"}, Token: testToken, Resolver: r}, ProblemRejected},
		{"token with a slash", Challenge{Identifier: Identifier{Type: "dns", Value: "a.test"}, Token: "../../etc", Resolver: r}, ProblemServerInternal},
		{"empty token", Challenge{Identifier: Identifier{Type: "dns", Value: "a.test"}, Resolver: r}, ProblemServerInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, (&HTTP01{Port: freePort(t)}).Validate(context.Background(), tt.chall), tt.want)
		})
	}
}

// TestHTTP01RefusesUnreachableAddresses: validation never connects to
// link-local (cloud metadata), unspecified or multicast addresses, even when
// a subscriber's name points there; an IP identifier may redirect only to
// its own address.
func TestHTTP01RefusesUnreachableAddresses(t *testing.T) {
	srv, r := newDNS(t)
	srv.SetA("meta.test", "169.254.169.254")
	srv.SetA("zero.test", "0.0.0.0")
	for _, name := range []string{"meta.test", "zero.test"} {
		t.Run(name, func(t *testing.T) {
			err := (&HTTP01{Port: freePort(t)}).Validate(context.Background(), dnsChallenge("http-01", name, r))
			wantProblem(t, err, ProblemConnection, "refusing to connect")
		})
	}
	t.Run("ip identifier redirecting to another address", func(t *testing.T) {
		var port int
		port = startHTTP(t, func(w http.ResponseWriter, req *http.Request) {
			http.Redirect(w, req, fmt.Sprintf("http://127.0.0.2:%d/x", port), http.StatusFound)
		})
		chall := dnsChallenge("http-01", "example.test", r)
		chall.Identifier = Identifier{Type: "ip", Value: "127.0.0.1"}
		err := (&HTTP01{Port: port}).Validate(context.Background(), chall)
		wantProblem(t, err, ProblemConnection, "its own address")
	})
}
