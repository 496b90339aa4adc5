// Package caddymodule registers the acme_ca HTTP handler, which turns a
// Caddy server into an ACME certificate authority (RFC 8555) signing with a
// CA of Caddy's pki app.
package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"go.uber.org/zap"

	"github.com/acmeca/caddy-acmeca/acme"
	"github.com/acmeca/caddy-acmeca/ratelimit"
	"github.com/acmeca/caddy-acmeca/storage"
	"github.com/acmeca/caddy-acmeca/validate"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Default values of the handler's options.
const (
	DefaultPathPrefix = "/acme"
	DefaultLifetime   = 7 * 24 * time.Hour
)

// Handler serves an ACME CA below PathPrefix and passes every other request
// to the next handler, so the CA's site can serve other content too.
type Handler struct {
	// The ID of the pki app's CA that signs certificates. Its root and
	// intermediate live in Caddy storage and Caddy renews the intermediate.
	// Default: "local".
	CA string `json:"ca,omitempty"`

	// Where the ACME resources live; the directory is at
	// <path_prefix>/directory. Default: "/acme".
	PathPrefix string `json:"path_prefix,omitempty"`

	// The validity period of issued certificates. A certificate never
	// outlives the intermediate that signs it: its lifetime is cut short to
	// the intermediate's expiry. Default: 168h (7 days).
	Lifetime caddy.Duration `json:"lifetime,omitempty"`

	// DNS servers ("host:port") for every validation and CAA lookup.
	// Default: those of /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	// Static addresses for validation, keyed by exact name or "*.suffix"
	// pattern, answered before DNS: for labs whose names are in no DNS.
	// CAA is not checked for these names. Default: none.
	Hosts map[string][]string `json:"hosts,omitempty"`

	// URL of the terms of service, published in the directory. When set,
	// newAccount requests must agree to it.
	TermsOfService string `json:"terms_of_service,omitempty"`

	// URL of a page about this CA, published in the directory.
	Website string `json:"website,omitempty"`

	// Domain names that identify this CA in CAA "issue" records, published
	// in the directory. Default: this machine's host name. Set it to the
	// names the CA is known by; it is never taken from requests, since a
	// client chooses its Host header.
	CAAIdentities []string `json:"caa_identities,omitempty"`

	// The challenge types offered, keyed by type, each a module in the
	// acme_ca.challenges namespace. Default: http-01, dns-01 and
	// tls-alpn-01 with their defaults.
	ChallengesRaw caddy.ModuleMap `json:"challenges,omitempty" caddy:"namespace=acme_ca.challenges"`

	// Which identifiers this CA will sign for. Default: any syntactically
	// valid DNS name that is not a public suffix, wildcards included, no IP
	// addresses, at most 100 per order.
	Policy *validate.Policy `json:"policy,omitempty"`

	// The rate limits. Default: the limits public CAs publish (see
	// ratelimit.Defaults), kept in Caddy's storage so that every node
	// sharing it enforces the same counts.
	RateLimits *ratelimit.Config `json:"rate_limits,omitempty"`

	// Whether CAA records (RFC 8659, RFC 8657) are checked at validation
	// and again at finalize for authorizations older than 8 hours.
	// Default: true. Turn it off only in labs whose DNS cannot answer.
	CAA *bool `json:"caa,omitempty"`

	server *acme.Server // set at Provision
	shared *sharedState // set at Provision, released at Cleanup
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.acme_ca",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the CA: the signer, the storage, the validators and the
// state shared across reloads.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.CA == "" {
		h.CA = caddypki.DefaultCAID
	}
	if h.PathPrefix == "" {
		h.PathPrefix = DefaultPathPrefix
	}
	if h.Lifetime == 0 {
		h.Lifetime = caddy.Duration(DefaultLifetime)
	}

	pkiApp, err := ctx.App("pki")
	if err != nil {
		return fmt.Errorf("loading pki app: %w", err)
	}
	ca, err := pkiApp.(*caddypki.PKI).GetCA(ctx, h.CA)
	if err != nil {
		return fmt.Errorf("acme_ca: ca %q: %w", h.CA, err)
	}

	if h.ChallengesRaw == nil {
		h.ChallengesRaw = caddy.ModuleMap{}
		for _, t := range []string{"http-01", "dns-01", "tls-alpn-01"} {
			if _, err := caddy.GetModule("acme_ca.challenges." + t); err == nil {
				h.ChallengesRaw[t] = json.RawMessage(`{}`)
			}
		}
	}
	mods, err := ctx.LoadModule(h, "ChallengesRaw")
	if err != nil {
		return fmt.Errorf("loading challenge validators: %w", err)
	}
	validators := make(map[string]validate.Validator)
	for typ, m := range mods.(map[string]any) {
		v, ok := m.(validate.Validator)
		if !ok {
			return fmt.Errorf("challenge module %s is not a validator", typ)
		}
		validators[typ] = v
	}

	if len(h.CAAIdentities) == 0 {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return fmt.Errorf("acme_ca: caa_identities is not set and the host name cannot be read (%v); set caa_identities", err)
		}
		h.CAAIdentities = []string{strings.ToLower(host)}
	}
	if h.Policy == nil {
		h.Policy = &validate.Policy{}
	}
	if err := h.Policy.Provision(); err != nil {
		return fmt.Errorf("acme_ca: %w", err)
	}

	store := storage.New(ctx.Storage(), h.CA)
	h.shared, err = loadShared(ctx, store, h.CA)
	if err != nil {
		return err
	}

	var hosts []validate.StaticHost
	for pattern, addrs := range h.Hosts {
		sh := validate.StaticHost{Pattern: pattern}
		for _, a := range addrs {
			ip := net.ParseIP(a)
			if ip == nil {
				return fmt.Errorf("acme_ca: hosts: %q for %s is not an IP address", a, pattern)
			}
			sh.IPs = append(sh.IPs, ip)
		}
		hosts = append(hosts, sh)
	}

	limiter, err := h.provisionLimits(ctx)
	if err != nil {
		return err
	}
	if b, ok := limiter.Backend().(interface{ SetCluster(ratelimit.Cluster) }); ok {
		b.SetCluster(h.shared.Nonces)
	}

	h.server = acme.NewServer(acme.Config{
		Limiter:        limiter,
		ClientIP:       clientIP,
		Store:          store,
		Shared:         h.shared.Shared,
		Signer:         &caSigner{ca: ca, lifetime: time.Duration(h.Lifetime)},
		Resolver:       validate.NewResolver(h.Resolvers, 0).WithHosts(hosts),
		Validators:     validators,
		Policy:         h.Policy,
		CAA:            h.CAA == nil || *h.CAA,
		Logger:         h.logger,
		PathPrefix:     h.PathPrefix,
		TermsOfService: h.TermsOfService,
		Website:        h.Website,
		CAAIdentities:  h.CAAIdentities,
	})
	return nil
}

// provisionLimits builds the rate limiter with its backend module (the
// storage backend by default).
func (h *Handler) provisionLimits(ctx caddy.Context) (*ratelimit.Engine, error) {
	if h.RateLimits == nil {
		h.RateLimits = &ratelimit.Config{}
	}
	var backend ratelimit.Backend
	if h.RateLimits.BackendRaw != nil {
		mod, err := ctx.LoadModule(h.RateLimits, "BackendRaw")
		if err != nil {
			return nil, fmt.Errorf("acme_ca: loading rate limit backend: %w", err)
		}
		b, ok := mod.(ratelimit.Backend)
		if !ok {
			return nil, fmt.Errorf("acme_ca: module %T is not a rate limit backend", mod)
		}
		backend = b
	} else {
		backend = ratelimit.NewStorageBackend(ctx.Storage())
	}
	engine, err := ratelimit.NewEngine(h.RateLimits, backend, path.Join("acme_ca", h.CA, "ratelimit"), h.logger.Named("ratelimit"))
	if err != nil {
		return nil, fmt.Errorf("acme_ca: %w", err)
	}
	return engine, nil
}

// clientIP is the client's address as Caddy determined it (honouring
// trusted_proxies), for the per-IP limits.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		return ip
	}
	return ""
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if !strings.HasPrefix(h.PathPrefix, "/") {
		return fmt.Errorf("acme_ca: path_prefix %q must start with /", h.PathPrefix)
	}
	if h.Lifetime < 0 || time.Duration(h.Lifetime) < time.Minute {
		return fmt.Errorf("acme_ca: lifetime %s is too short; use at least 1m", time.Duration(h.Lifetime))
	}
	for _, r := range h.Resolvers {
		if !strings.Contains(r, ":") {
			return fmt.Errorf("acme_ca: resolver %q must be host:port", r)
		}
	}
	return nil
}

// ServeHTTP serves ACME requests below the path prefix and passes the rest on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !h.server.Handles(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	h.server.ServeHTTP(w, r)
	return nil
}

// Cleanup releases the shared state; the last user (a stop, not a reload)
// waits for validations in flight and saves the nonce state.
func (h *Handler) Cleanup() error {
	if h.shared != nil {
		return h.shared.release()
	}
	return nil
}

// sharedState is what one CA keeps across config reloads, in sharedPool.
type sharedState struct {
	*acme.Shared
	key string
}

var sharedPool = caddy.NewUsagePool()

func loadShared(ctx caddy.Context, store *storage.Store, caID string) (*sharedState, error) {
	key := "acme_ca:" + caID
	val, _, err := sharedPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		instance, err := caddy.InstanceID()
		if err != nil {
			return nil, fmt.Errorf("reading instance ID: %w", err)
		}
		nonces, err := acme.LoadNonces(ctx, store, instance.String())
		if err != nil {
			return nil, err
		}
		return &sharedState{Shared: acme.NewShared(nonces), key: key}, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*sharedState), nil
}

func (s *sharedState) release() error {
	_, err := sharedPool.Delete(s.key)
	return err
}

// Destruct runs when the last handler using this state is cleaned up.
func (s *sharedState) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.Close(ctx, 15*time.Second)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Destructor            = (*sharedState)(nil)
)
