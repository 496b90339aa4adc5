package validate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(HTTP01{})
}

const (
	// DefaultHTTPPort is where http-01 connects (RFC 8555 §8.3).
	DefaultHTTPPort = 80
	// DefaultTimeout bounds one validation attempt of any challenge type.
	DefaultTimeout = 10 * time.Second

	// maxRedirects is how many redirects http-01 follows, as Boulder does.
	maxRedirects = 10
	// maxBodySize caps what http-01 reads. A key authorization is under
	// 100 bytes; anything near this size is not one.
	maxBodySize = 64 << 10
	// maxDetailBody is how much of a response body a problem detail quotes.
	maxDetailBody = 128
	// httpsPort is the only port an https redirect may target.
	httpsPort = 443
)

// HTTP01 validates the http-01 challenge (RFC 8555 §8.3): it fetches
// http://<name>/.well-known/acme-challenge/<token> and expects the key
// authorization as the body.
type HTTP01 struct {
	// Port is the TCP port the first request goes to. Default: 80. Only
	// change it for testing or when a port forward stands in front of
	// every subscriber; public CAs always use 80. Redirects may go to
	// ports 80 and 443 and, for http, to this port.
	Port int `json:"port,omitempty"`

	// Timeout bounds the whole validation, DNS lookups and redirects
	// included. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	logger *zap.Logger // set at Provision
}

// CaddyModule returns the Caddy module information.
func (HTTP01) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "acme_ca.challenges.http-01",
		New: func() caddy.Module { return new(HTTP01) },
	}
}

// Provision applies defaults and checks the configuration.
func (h *HTTP01) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Port == 0 {
		h.Port = DefaultHTTPPort
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(DefaultTimeout)
	}
	return checkPortTimeout(h.Port, h.Timeout)
}

// checkPortTimeout rejects configuration that cannot work, naming the
// field, so the mistake shows up at config load rather than as failed
// validations.
func checkPortTimeout(port int, timeout caddy.Duration) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port: %d is not a TCP port (1-65535)", port)
	}
	if timeout < 0 {
		return fmt.Errorf("timeout: must not be negative, got %s", time.Duration(timeout))
	}
	return nil
}

// Validate fetches the key authorization resource and compares it with
// chall.KeyAuthorization.
func (h *HTTP01) Validate(ctx context.Context, chall Challenge) error {
	port := orDefault(h.Port, DefaultHTTPPort)
	timeout := orDefaultDuration(h.Timeout, DefaultTimeout)

	host, prob := identifierHost(chall.Identifier)
	if prob != nil {
		return prob
	}
	if !validToken(chall.Token) {
		return Problemf(ProblemServerInternal, "challenge token %q is not base64url text", sanitize([]byte(chall.Token), 64))
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	f := &httpFetch{
		port:    port,
		isIP:    chall.Identifier.Type == "ip",
		ip:      net.ParseIP(chall.Identifier.Value),
		dialer:  &dialer{resolver: resolverFor(chall), allowIP: chall.Identifier.Type == "ip"},
		current: "http://" + hostPort(host, port, DefaultHTTPPort) + "/.well-known/acme-challenge/" + chall.Token,
	}
	err := f.check(ctx, host, chall.KeyAuthorization, timeout)
	if l := logger(h.logger); err != nil {
		if c := l.Check(zap.DebugLevel, "http-01 validation failed"); c != nil {
			c.Write(zap.String("identifier", chall.Identifier.Value), zap.Error(err))
		}
	}
	return err
}

// httpFetch is the state of one http-01 validation.
type httpFetch struct {
	port   int
	isIP   bool
	ip     net.IP // the identifier, for ip identifiers
	dialer *dialer

	mu      sync.Mutex
	current string // URL of the request in flight; redirects move it
}

func (f *httpFetch) url() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current
}

// redirectError is a redirect http-01 refuses to follow.
type redirectError struct {
	from, to, reason string
}

func (e *redirectError) Error() string { return e.reason }

func (f *httpFetch) check(ctx context.Context, host, keyAuth string, timeout time.Duration) error {
	tr := &http.Transport{
		DialContext: f.dialer.DialContext,
		// Public CAs do not verify certificates on http-01 redirects to
		// https: the subscriber may be validating precisely so that it
		// can get its first valid certificate.
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
		DisableKeepAlives:      true,
		DisableCompression:     true, // compare the bytes the server sent, and keep the size cap honest
		MaxResponseHeaderBytes: 16 << 10,
		// No Proxy: validation must reach the subscriber directly. No
		// per-phase timeouts either: the context bounds the whole fetch,
		// so the problem can say the validation timed out.
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: f.checkRedirect}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url(), nil)
	if err != nil {
		return Problemf(ProblemServerInternal, "building request for %s: %v", f.url(), err)
	}
	// RFC 8555 §8.3 asks for the bare domain name in Host, even when a
	// test or port-forward setup puts the server on another port.
	req.Host = hostPort(host, DefaultHTTPPort, DefaultHTTPPort)
	req.Header.Set("User-Agent", "caddy-acmeca validation (+https://caddyserver.com)")
	req.Header.Set("Accept", "*/*")

	resp, err := client.Do(req)
	if err != nil {
		return f.fetchProblem(ctx, err, timeout)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize+1))
	if err != nil {
		return Problemf(ProblemConnection, "Fetching %s (address %s): reading response body: %v",
			f.url(), f.dialer.address(), unwrapURLError(err))
	}
	if resp.StatusCode != http.StatusOK {
		return Problemf(ProblemUnauthorized, "Invalid response from %s (address %s): HTTP %d: %q",
			f.url(), f.dialer.address(), resp.StatusCode, sanitize(body, maxDetailBody))
	}
	if len(body) > maxBodySize {
		return Problemf(ProblemIncorrectResponse, "Invalid response from %s (address %s): body is larger than %d bytes",
			f.url(), f.dialer.address(), maxBodySize)
	}
	got := strings.TrimRight(string(body), "\r\n\t ")
	if got != keyAuth {
		return Problemf(ProblemIncorrectResponse,
			"The key authorization file from %s (address %s) does not match this challenge: got %q, expected %q",
			f.url(), f.dialer.address(), sanitize([]byte(got), maxDetailBody), keyAuth)
	}
	return nil
}

// checkRedirect is http.Client.CheckRedirect. It limits where validation
// traffic can be sent, because a redirect is chosen by whoever controls the
// web server, not necessarily whoever controls the name.
func (f *httpFetch) checkRedirect(req *http.Request, via []*http.Request) error {
	from := via[len(via)-1].URL.String()
	to := req.URL.String()
	refuse := func(format string, args ...any) error {
		return &redirectError{from: from, to: sanitize([]byte(to), 256), reason: fmt.Sprintf(format, args...)}
	}

	if len(via) > maxRedirects {
		return refuse("too many redirects (more than %d)", maxRedirects)
	}
	u := req.URL
	if u.Scheme != "http" && u.Scheme != "https" {
		return refuse("only http and https redirects are allowed, not %q", sanitize([]byte(u.Scheme), 16))
	}
	if u.User != nil {
		return refuse("redirect targets must not carry user information")
	}
	host := u.Hostname()
	if host == "" {
		return refuse("redirect target has no host")
	}

	port := DefaultHTTPPort
	if u.Scheme == "https" {
		port = httpsPort
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return refuse("invalid port %q", sanitize([]byte(p), 16))
		}
		port = n
	}
	if port != DefaultHTTPPort && port != httpsPort && (u.Scheme != "http" || port != f.port) {
		allowed := fmt.Sprintf("%d and %d", DefaultHTTPPort, httpsPort)
		if f.port != DefaultHTTPPort && f.port != httpsPort {
			allowed = fmt.Sprintf("%d, %d and %d (http only)", DefaultHTTPPort, httpsPort, f.port)
		}
		return refuse("only ports %s are allowed, not %d", allowed, port)
	}

	if ip := net.ParseIP(host); ip != nil {
		if !f.isIP {
			return refuse("redirects to IP addresses are not allowed for DNS identifiers")
		}
		if !ip.Equal(f.ip) {
			return refuse("an IP identifier may only redirect to its own address %s, not %s", f.ip, ip)
		}
		req.Host = hostPort(ip.String(), DefaultHTTPPort, DefaultHTTPPort)
	} else {
		if _, ok := dns.IsDomainName(host); !ok || strings.ContainsAny(host, " \\") {
			return refuse("invalid host name %q", sanitize([]byte(host), 256))
		}
		req.Host = strings.ToLower(host)
	}

	f.mu.Lock()
	f.current = to
	f.mu.Unlock()
	return nil
}

// fetchProblem explains why client.Do failed.
func (f *httpFetch) fetchProblem(ctx context.Context, err error, timeout time.Duration) error {
	var prob *Problem
	if errors.As(err, &prob) {
		// From the resolver: the name, or a redirect target, did not
		// resolve. Say which URL needed it.
		return Problemf(prob.Type, "Fetching %s: %s", f.url(), prob.Detail)
	}
	var re *redirectError
	if errors.As(err, &re) {
		return Problemf(ProblemConnection, "Fetching %s: refusing redirect to %s: %s", re.from, re.to, re.reason)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return Problemf(ProblemConnection, "Fetching %s (address %s): timed out after %s",
			f.url(), f.dialer.addresses(), timeout)
	}
	return Problemf(ProblemConnection, "Fetching %s (address %s): %v", f.url(), f.dialer.addresses(), unwrapURLError(err))
}

// unwrapURLError drops the "Get <url>:" prefix url.Error adds, because the
// detail names the URL already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func orDefaultDuration(d caddy.Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}

// logger returns l, or a no-op logger for validators used without
// Provision (as in tests and by callers that build them directly).
func logger(l *zap.Logger) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return l
}

// Interface guards
var (
	_ caddy.Module      = (*HTTP01)(nil)
	_ caddy.Provisioner = (*HTTP01)(nil)
	_ Validator         = (*HTTP01)(nil)
)
