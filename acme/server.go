// Package acme is the server side of RFC 8555: it authenticates JWS
// requests, renders ACME resources, and moves orders, authorizations and
// challenges through their states. It asks validate to prove control of
// identifiers, ratelimit whether a request may proceed, a Signer for
// certificates, and keeps every record in storage.
package acme

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/acmeca/caddy-acmeca/internal/keylock"
	"github.com/acmeca/caddy-acmeca/ratelimit"
	"github.com/acmeca/caddy-acmeca/storage"
	"github.com/acmeca/caddy-acmeca/validate"
)

// Signer issues certificates with the serial given. The leaf and its
// issuers up to but excluding the root come back, leaf first.
type Signer interface {
	Sign(ctx context.Context, csr *x509.CertificateRequest, names []string, serial *big.Int) ([]*x509.Certificate, error)
}

// Config is what a Server needs; the caddymodule package fills it in from
// the Caddyfile or JSON config.
type Config struct {
	Store      *storage.Store
	Shared     *Shared
	Signer     Signer
	Limiter    ratelimit.Limiter
	Resolver   *validate.Resolver
	Validators map[string]validate.Validator // by challenge type
	Policy     *validate.Policy              // which identifiers may be ordered
	CAA        bool                          // check CAA records (RFC 8659)
	Logger     *zap.Logger
	ClientIP   func(*http.Request) string // the client's address; default: RemoteAddr

	PathPrefix     string // e.g. "/acme"
	TermsOfService string
	Website        string
	CAAIdentities  []string // the CA's issuer domain names for CAA (the caddymodule sets a default)

	OrderLifetime        time.Duration // pending orders expire after this
	PendingAuthzLifetime time.Duration // pending authorizations expire after this
	ValidAuthzLifetime   time.Duration // a valid authorization is reused for this long
	Now                  func() time.Time
}

// Default lifetimes, as Let's Encrypt uses them.
const (
	DefaultOrderLifetime        = 7 * 24 * time.Hour
	DefaultPendingAuthzLifetime = 7 * 24 * time.Hour
	DefaultValidAuthzLifetime   = 30 * 24 * time.Hour
	// reuseMargin: an authorization is reused only while it stays valid
	// at least this long, so it does not expire under a fresh order.
	reuseMargin = 24 * time.Hour
	// staleAfter: a challenge or order left in processing this long was
	// abandoned by a process that stopped; it is taken up again.
	staleAfter = 2 * time.Minute
)

// Shared is the state one CA keeps across config reloads: nonces, the
// validations in flight and in-process locks. The caddymodule package keeps
// it in a caddy.UsagePool.
type Shared struct {
	Nonces      *Nonces
	serialKey   []byte         // derives certificate serials from order IDs
	inflight    sync.Map       // authz ID -> struct{}
	validations sync.WaitGroup // validations in flight
	locks       keylock.Set    // in-process record locks
	accounts    accountCache   // recently used accounts
}

// NewShared wraps a nonce source.
func NewShared(n *Nonces) *Shared {
	m := hmac.New(sha256.New, n.secret)
	m.Write([]byte("certificate serials"))
	return &Shared{Nonces: n, serialKey: m.Sum(nil)}
}

// serialFor is the serial of the certificate an order gets: 128 bits of
// HMAC-SHA256 of the order ID under a secret every node shares. It is as
// unpredictable as a random serial to anyone without the secret, yet known
// from the order alone, so finalize stores the certificate and nothing
// else: the order is valid once a certificate with its serial exists.
func (sh *Shared) serialFor(orderID string) *big.Int {
	m := hmac.New(sha256.New, sh.serialKey)
	m.Write([]byte(orderID))
	serial := new(big.Int).SetBytes(m.Sum(nil)[:16])
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	return serial
}

// lock serialises read-modify-write of one record within this process. Each
// key has its own mutex, so a request may hold two records' locks at once.
func (sh *Shared) lock(key string) func() { return sh.locks.Lock(key) }

// Server serves the ACME endpoints below PathPrefix.
type Server struct {
	Config
	store      *storage.Store
	nonces     *Nonces
	logger     *zap.Logger
	challOrder []string // offered challenge types, in stable order
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg Config) *Server {
	if cfg.Limiter == nil {
		cfg.Limiter = ratelimit.Unlimited{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Policy == nil {
		cfg.Policy = &validate.Policy{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OrderLifetime <= 0 {
		cfg.OrderLifetime = DefaultOrderLifetime
	}
	if cfg.PendingAuthzLifetime <= 0 {
		cfg.PendingAuthzLifetime = DefaultPendingAuthzLifetime
	}
	if cfg.ValidAuthzLifetime <= 0 {
		cfg.ValidAuthzLifetime = DefaultValidAuthzLifetime
	}
	cfg.PathPrefix = "/" + strings.Trim(cfg.PathPrefix, "/")
	s := &Server{Config: cfg, store: cfg.Store, nonces: cfg.Shared.Nonces, logger: cfg.Logger}
	s.challOrder = ChallengeOrder(cfg.Validators)
	return s
}

// ChallengeOrder lists challenge types in the stable order they are offered:
// http-01, dns-01, tls-alpn-01, then any others alphabetically.
func ChallengeOrder(validators map[string]validate.Validator) []string {
	var order []string
	for _, t := range []string{"http-01", "dns-01", "tls-alpn-01"} {
		if _, ok := validators[t]; ok {
			order = append(order, t)
		}
	}
	var rest []string
	for t := range validators {
		if !contains(order, t) {
			rest = append(rest, t)
		}
	}
	sortStrings(rest)
	return append(order, rest...)
}

type ctxKey int

const baseURLKey ctxKey = 0

// baseURL is the absolute URL of PathPrefix as the client reached it.
func (s *Server) baseURL(ctx context.Context) string {
	b, _ := ctx.Value(baseURLKey).(string)
	return b
}

func (s *Server) requestURL(r *http.Request) string {
	return requestOrigin(r) + r.URL.Path
}

func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// Handles reports whether path is below the server's prefix.
func (s *Server) Handles(path string) bool {
	return path == s.PathPrefix || strings.HasPrefix(path, s.PathPrefix+"/")
}

// ServeHTTP routes a request below PathPrefix.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := context.WithValue(r.Context(), baseURLKey, requestOrigin(r)+s.PathPrefix)
	r = r.WithContext(ctx)
	rest := strings.TrimPrefix(r.URL.Path, s.PathPrefix)
	parts := strings.Split(strings.Trim(rest, "/"), "/")

	h := w.Header()
	h.Set("Replay-Nonce", s.nonces.New())
	h.Add("Link", link(s.baseURL(ctx)+"/directory", "index"))
	h.Set("Cache-Control", "no-store")

	switch {
	case len(parts) == 1 && parts[0] == "directory":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.writeProblem(w, r, methodNotAllowed(r, "GET"))
			return
		}
		if p := s.limitClient(r, ratelimit.DirectoryRequests); p != nil {
			s.writeProblem(w, r, p)
			return
		}
		s.writeJSON(w, r, http.StatusOK, s.directory(ctx))
		return
	case len(parts) == 1 && parts[0] == "rate-limits":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.writeProblem(w, r, methodNotAllowed(r, "GET"))
			return
		}
		s.writeJSON(w, r, http.StatusOK, s.rateLimitsPage())
		return
	case len(parts) == 1 && parts[0] == "new-nonce":
		switch r.Method {
		case http.MethodHead:
			w.WriteHeader(http.StatusOK)
		case http.MethodGet:
			w.WriteHeader(http.StatusNoContent)
		default:
			s.writeProblem(w, r, methodNotAllowed(r, "HEAD, GET"))
		}
		return
	}

	route, args := s.route(parts)
	for _, a := range args {
		if !plainID(a) {
			route = nil // no record has such an ID, and it must not alias one
		}
	}
	if route == nil {
		s.writeProblem(w, r, Malformed("no ACME resource at %s", r.URL.Path).WithStatus(http.StatusNotFound))
		return
	}
	if r.Method != http.MethodPost {
		s.writeProblem(w, r, methodNotAllowed(r, "POST"))
		return
	}
	if route.newRequest {
		if p := s.limitClient(r, ratelimit.NewRequests); p != nil {
			s.writeProblem(w, r, p)
			return
		}
	}
	req, p := s.readJWS(r, route.use)
	if p != nil {
		s.writeProblem(w, r, p)
		return
	}
	if req.Account != nil {
		h.Set("X-Acme-Account", s.accountURL(ctx, req.Account.ID))
	}
	if p := route.handle(s, w, r, req, args); p != nil {
		s.writeProblem(w, r, p)
	}
}

type handlerFunc func(s *Server, w http.ResponseWriter, r *http.Request, req *signedRequest, args []string) *Problem

type route struct {
	use        keyUse
	handle     handlerFunc
	newRequest bool // counts against new_requests (newAccount, newOrder, finalize)
}

func (s *Server) route(parts []string) (*route, []string) {
	switch {
	case len(parts) == 1 && parts[0] == "new-account":
		return &route{use: useJWK, handle: (*Server).handleNewAccount, newRequest: true}, nil
	case len(parts) == 1 && parts[0] == "new-order":
		return &route{use: useKID, handle: (*Server).handleNewOrder, newRequest: true}, nil
	case len(parts) == 1 && parts[0] == "revoke-cert":
		return &route{use: useJWKOrKID, handle: (*Server).handleRevoke}, nil
	case len(parts) == 1 && parts[0] == "key-change":
		return &route{use: useKID, handle: (*Server).handleKeyChange}, nil
	case len(parts) == 2 && parts[0] == "account":
		return &route{use: useKID, handle: (*Server).handleAccount}, parts[1:]
	case len(parts) == 3 && parts[0] == "account" && parts[2] == "orders":
		return &route{use: useKID, handle: (*Server).handleAccountOrders}, parts[1:2]
	case len(parts) == 2 && parts[0] == "order":
		return &route{use: useKID, handle: (*Server).handleOrder}, parts[1:]
	case len(parts) == 3 && parts[0] == "order" && parts[2] == "finalize":
		return &route{use: useKID, handle: (*Server).handleFinalize, newRequest: true}, parts[1:2]
	case len(parts) == 2 && parts[0] == "authz":
		return &route{use: useKID, handle: (*Server).handleAuthz}, parts[1:]
	case len(parts) == 3 && parts[0] == "chall":
		return &route{use: useKID, handle: (*Server).handleChallenge}, parts[1:]
	case len(parts) == 2 && parts[0] == "cert":
		return &route{use: useKID, handle: (*Server).handleCertificate}, parts[1:]
	}
	return nil, nil
}

// limitClient spends a per-IP request-rate limit.
func (s *Server) limitClient(r *http.Request, limit string) *Problem {
	return s.limit(r.Context(), []ratelimit.Transaction{{Limit: limit, Key: s.clientIP(r)}}, true)
}

func (s *Server) clientIP(r *http.Request) string {
	if s.ClientIP != nil {
		if ip := s.ClientIP(r); ip != "" {
			return ip
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// plainID reports whether a URL segment can be a resource ID: base64url
// letters, and dots (order IDs). Anything else could name the same storage
// key as an ID in another spelling, and so slip past its lock.
func plainID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != "." && s != ".."
}

func methodNotAllowed(r *http.Request, allowed string) *Problem {
	p := Malformed("method %s is not allowed here; use %s", r.Method, allowed).WithStatus(http.StatusMethodNotAllowed)
	p.allow = allowed
	return p
}

// Directory is the RFC 8555 §7.1.1 directory object.
type Directory struct {
	NewNonce   string         `json:"newNonce"`
	NewAccount string         `json:"newAccount"`
	NewOrder   string         `json:"newOrder"`
	RevokeCert string         `json:"revokeCert"`
	KeyChange  string         `json:"keyChange"`
	Meta       *DirectoryMeta `json:"meta,omitempty"`
}

// DirectoryMeta is the directory's "meta" object.
type DirectoryMeta struct {
	TermsOfService          string   `json:"termsOfService,omitempty"`
	Website                 string   `json:"website,omitempty"`
	CAAIdentities           []string `json:"caaIdentities,omitempty"`
	ExternalAccountRequired bool     `json:"externalAccountRequired"`
	// RateLimits links the page listing the limits in force (not a field
	// RFC 8555 registers; clients ignore it).
	RateLimits string `json:"rateLimits,omitempty"`
}

// limitsDescriber is a Limiter that can list its limits.
type limitsDescriber interface {
	InForce() []ratelimit.InForce
}

type rateLimitsPage struct {
	Limits []ratelimit.InForce `json:"limits"`
	Note   string              `json:"note"`
}

func (s *Server) rateLimitsPage() rateLimitsPage {
	page := rateLimitsPage{
		Limits: []ratelimit.InForce{},
		Note:   "Rate limits use GCRA: a limit of N per window allows N at once, then one more every window/N. A refused request gets HTTP 429, urn:ietf:params:acme:error:rateLimited and a Retry-After header.",
	}
	if d, ok := s.Limiter.(limitsDescriber); ok {
		page.Limits = d.InForce()
	}
	return page
}

func (s *Server) directory(ctx context.Context) Directory {
	b := s.baseURL(ctx)
	return Directory{
		NewNonce:   b + "/new-nonce",
		NewAccount: b + "/new-account",
		NewOrder:   b + "/new-order",
		RevokeCert: b + "/revoke-cert",
		KeyChange:  b + "/key-change",
		Meta: &DirectoryMeta{
			TermsOfService: s.TermsOfService,
			Website:        s.Website,
			CAAIdentities:  s.CAAIdentities,
			RateLimits:     b + "/rate-limits",
		},
	}
}

func (s *Server) resourceURL(ctx context.Context, parts ...string) string {
	return s.baseURL(ctx) + "/" + strings.Join(parts, "/")
}

func (s *Server) accountURL(ctx context.Context, id string) string {
	return s.resourceURL(ctx, "account", id)
}

func link(url, rel string) string { return "<" + url + `>;rel="` + rel + `"` }

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		s.logger.Error("encoding response", errField(err))
		s.writeProblem(w, r, Internal("could not encode the response"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}

func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	if p.Status == 0 {
		p.Status = http.StatusBadRequest
	}
	h := w.Header()
	if p.location != "" {
		h.Set("Location", p.location)
	}
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	if p.allow != "" {
		h.Set("Allow", p.allow)
	}
	if c := s.logger.Check(zap.DebugLevel, "ACME problem"); c != nil {
		c.Write(zap.String("path", r.URL.Path), zap.String("type", p.Type), zap.String("detail", p.Detail), zap.Int("status", p.Status))
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	h.Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	w.Write(b)
}

func errField(err error) zap.Field { return zap.Error(err) }

// Close waits, up to timeout, for validations in flight, then saves the
// nonce state so nonces handed out before a clean stop stay valid after the
// next start. It is called when the last Server using sh is cleaned up.
func (sh *Shared) Close(ctx context.Context, timeout time.Duration) error {
	done := make(chan struct{})
	go func() { sh.validations.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
	err := sh.Nonces.Save(ctx)
	sh.Nonces.Stop(ctx)
	return err
}
