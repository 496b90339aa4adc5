package ratelimit

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// LimitConfig is one limit's count and window. Pending authorizations have
// no window.
type LimitConfig struct {
	Count  int            `json:"count"`
	Window caddy.Duration `json:"window,omitempty"`
}

// Override gives one bucket of a limit another count (and window).
type Override struct {
	// The limit's name.
	Limit string `json:"limit"`
	// The bucket: a registered domain, an account ID, a hostname, an IP
	// address or a CIDR range (for the per-IP limits).
	Key    string         `json:"key"`
	Count  int            `json:"count"`
	Window caddy.Duration `json:"window,omitempty"`

	network *net.IPNet // set at Provision for IP and CIDR keys
}

// Defaults are the limits a public CA publishes (Buypass Go SSL's).
var Defaults = map[string]LimitConfig{
	CertificatesPerRegisteredDomain: {Count: 20, Window: caddy.Duration(168 * time.Hour)},
	DuplicateCertificates:           {Count: 5, Window: caddy.Duration(168 * time.Hour)},
	FailedValidations:               {Count: 5, Window: caddy.Duration(time.Hour)},
	PendingAuthorizations:           {Count: 300},
	NewRequests:                     {Count: 20, Window: caddy.Duration(time.Second)},
	DirectoryRequests:               {Count: 40, Window: caddy.Duration(time.Second)},
}

// Names lists the limits in a stable order.
var Names = []string{
	CertificatesPerRegisteredDomain,
	DuplicateCertificates,
	FailedValidations,
	PendingAuthorizations,
	NewRequests,
	DirectoryRequests,
}

// perNode limits are kept in each node's memory: they guard a node against
// floods, and a storage write per request would cost more than the request.
var perNode = map[string]bool{NewRequests: true, DirectoryRequests: true}

// Config is the rate_limits block of the handler.
type Config struct {
	// Counts and windows by limit name; a limit not named keeps its
	// default (see Defaults).
	Limits map[string]LimitConfig `json:"limits,omitempty"`

	// Other counts for particular buckets.
	Overrides []Override `json:"overrides,omitempty"`

	// Limits switched off, by name, or "all".
	Disable []string `json:"disable,omitempty"`

	// The backend that keeps the counting limits' state, a module in the
	// acme_ca.ratelimit namespace. Default: storage, which keeps it in
	// Caddy's storage so every node sharing that storage enforces the same
	// limits.
	BackendRaw json.RawMessage `json:"backend,omitempty" caddy:"namespace=acme_ca.ratelimit inline_key=backend"`
}

// effective returns every limit's count and window after the config's
// changes, and which limits are off.
func (c *Config) effective() (map[string]LimitConfig, map[string]bool, error) {
	limits := make(map[string]LimitConfig, len(Defaults))
	for name, l := range Defaults {
		limits[name] = l
	}
	disabled := map[string]bool{}
	if c == nil {
		return limits, disabled, nil
	}
	for name, l := range c.Limits {
		if _, ok := Defaults[name]; !ok {
			return nil, nil, fmt.Errorf("rate_limits: unknown limit %q (known: %s)", name, strings.Join(Names, ", "))
		}
		if l.Count < 1 {
			return nil, nil, fmt.Errorf("rate_limits: %s: count must be at least 1, not %d", name, l.Count)
		}
		switch {
		case name == PendingAuthorizations:
			l.Window = 0 // a count, not a rate
		case l.Window <= 0:
			l.Window = Defaults[name].Window
		}
		limits[name] = l
	}
	for _, name := range c.Disable {
		if name == "all" || name == "off" {
			for _, n := range Names {
				disabled[n] = true
			}
			continue
		}
		if _, ok := Defaults[name]; !ok {
			return nil, nil, fmt.Errorf("rate_limits: disable: unknown limit %q", name)
		}
		disabled[name] = true
	}
	for i := range c.Overrides {
		o := &c.Overrides[i]
		if _, ok := Defaults[o.Limit]; !ok {
			return nil, nil, fmt.Errorf("rate_limits: override: unknown limit %q", o.Limit)
		}
		if o.Count < 1 || o.Key == "" {
			return nil, nil, fmt.Errorf("rate_limits: override %s %q: needs a key and a count of at least 1", o.Limit, o.Key)
		}
		if strings.Contains(o.Key, "/") {
			if _, n, err := net.ParseCIDR(o.Key); err == nil {
				o.network = n
			}
		} else if ip := net.ParseIP(o.Key); ip != nil {
			bits := 128
			if ip.To4() != nil {
				bits = 32
			}
			o.network = &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}
		}
	}
	return limits, disabled, nil
}

// InForce describes the limits in force, for the README-like page the CA
// serves and for logs.
type InForce struct {
	Name     string `json:"name"`
	Count    int    `json:"count"`
	Window   string `json:"window,omitempty"`
	Key      string `json:"per"`
	Disabled bool   `json:"disabled,omitempty"`
	PerNode  bool   `json:"per_node,omitempty"`
}

var keyDescriptions = map[string]string{
	CertificatesPerRegisteredDomain: "registered domain (Public Suffix List)",
	DuplicateCertificates:           "exact set of names",
	FailedValidations:               "account and hostname",
	PendingAuthorizations:           "account",
	NewRequests:                     "client IP (newAccount, newOrder, finalize)",
	DirectoryRequests:               "client IP",
}

func describe(limits map[string]LimitConfig, disabled map[string]bool) []InForce {
	out := make([]InForce, 0, len(Names))
	for _, name := range Names {
		l := limits[name]
		f := InForce{Name: name, Count: l.Count, Key: keyDescriptions[name], Disabled: disabled[name], PerNode: perNode[name]}
		if l.Window > 0 {
			f.Window = time.Duration(l.Window).String()
		}
		out = append(out, f)
	}
	return out
}
