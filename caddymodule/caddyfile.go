package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/acmeca/caddy-acmeca/ratelimit"
	"github.com/acmeca/caddy-acmeca/validate"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("acme_ca", parseCaddyfile)
	// Before respond, so a catch-all respond does not shadow the CA.
	httpcaddyfile.RegisterDirectiveOrder("acme_ca", httpcaddyfile.Before, "respond")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	acme_ca [<matcher>] {
//		ca               <pki-ca-id>
//		path_prefix      <path>
//		lifetime         <duration>
//		resolvers        <host:port...>
//		terms_of_service <url>
//		website          <url>
//		caa_identities   <domain...>
//		hosts {
//			<name|*.suffix> <ip...>
//		}
//		caa              on|off
//		policy {
//			allow_domains    <pattern...>
//			deny_domains     <pattern...>
//			allow_ip_ranges  <cidr...>
//			deny_ip_ranges   <cidr...>
//			wildcards        on|off
//			ip_identifiers   on|off
//			public_tlds_only on|off
//			max_identifiers  <n>
//		}
//		rate_limits {
//			certificates_per_registered_domain <count> <window>
//			duplicate_certificates             <count> <window>
//			failed_validations                 <count> <window>
//			pending_authorizations             <count>
//			new_requests                       <count> <window>
//			directory_requests                 <count> <window>
//			override <limit> <key> <count> [<window>]
//			disable  <limit...>|off
//		}
//		challenges {
//			http-01     [{ port <n>  timeout <duration> }]
//			dns-01      [{ timeout <duration> }]
//			tls-alpn-01 [{ port <n>  timeout <duration> }]
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "ca", "path_prefix", "terms_of_service", "website":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch opt {
			case "ca":
				h.CA = v
			case "path_prefix":
				h.PathPrefix = v
			case "terms_of_service":
				h.TermsOfService = v
			case "website":
				h.Website = v
			}
		case "lifetime":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("lifetime: %v", err)
			}
			h.Lifetime = caddy.Duration(dur)
		case "resolvers":
			h.Resolvers = append(h.Resolvers, d.RemainingArgs()...)
			if len(h.Resolvers) == 0 {
				return d.Errf("resolvers needs at least one host:port")
			}
		case "caa_identities":
			h.CAAIdentities = append(h.CAAIdentities, d.RemainingArgs()...)
			if len(h.CAAIdentities) == 0 {
				return d.Errf("caa_identities needs at least one domain name")
			}
		case "challenges":
			if err := h.unmarshalChallenges(d); err != nil {
				return err
			}
		case "hosts":
			if d.NextArg() {
				return d.Errf("hosts takes a block of <name> <ip...> lines")
			}
			if h.Hosts == nil {
				h.Hosts = map[string][]string{}
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				name, ips := d.Val(), d.RemainingArgs()
				if len(ips) == 0 {
					return d.Errf("hosts: %s needs at least one IP address", name)
				}
				h.Hosts[strings.ToLower(name)] = append(h.Hosts[strings.ToLower(name)], ips...)
			}
		case "caa":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			h.CAA = &on
		case "rate_limits":
			if err := h.unmarshalRateLimits(d); err != nil {
				return err
			}
		case "policy":
			if err := h.unmarshalPolicy(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized acme_ca option %q", opt)
		}
	}
	return nil
}

// unmarshalChallenges reads the challenges block; each line names a
// challenge module and may carry that module's own block.
func (h *Handler) unmarshalChallenges(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("challenges takes a block, not arguments")
	}
	if h.ChallengesRaw == nil {
		h.ChallengesRaw = caddy.ModuleMap{}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		typ := d.Val()
		if _, dup := h.ChallengesRaw[typ]; dup {
			return d.Errf("challenge type %s is listed twice", typ)
		}
		unm, err := caddyfile.UnmarshalModule(d, "acme_ca.challenges."+typ)
		if err != nil {
			return err
		}
		h.ChallengesRaw[typ] = caddyconfig.JSON(unm, nil)
	}
	if len(h.ChallengesRaw) == 0 {
		return d.Errf("challenges block lists no challenge type")
	}
	return nil
}

// unmarshalPolicy reads the policy block.
func (h *Handler) unmarshalPolicy(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("policy takes a block, not arguments")
	}
	if h.Policy == nil {
		h.Policy = &validate.Policy{}
	}
	p := h.Policy
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "allow_domains", "deny_domains", "allow_ip_ranges", "deny_ip_ranges":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("%s needs at least one value", opt)
			}
			switch opt {
			case "allow_domains":
				p.AllowDomains = append(p.AllowDomains, args...)
			case "deny_domains":
				p.DenyDomains = append(p.DenyDomains, args...)
			case "allow_ip_ranges":
				p.AllowIPRanges = append(p.AllowIPRanges, args...)
			case "deny_ip_ranges":
				p.DenyIPRanges = append(p.DenyIPRanges, args...)
			}
		case "wildcards":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			p.Wildcards = &on
		case "ip_identifiers":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			p.IPIdentifiers = on
		case "public_tlds_only":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			p.PublicTLDsOnly = on
		case "max_identifiers":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return d.Errf("max_identifiers must be a positive number, not %q", v)
			}
			p.MaxIdentifiers = n
		default:
			return d.Errf("unrecognized policy option %q", opt)
		}
	}
	return nil
}

// unmarshalRateLimits reads the rate_limits block.
func (h *Handler) unmarshalRateLimits(d *caddyfile.Dispenser) error {
	if h.RateLimits == nil {
		h.RateLimits = &ratelimit.Config{}
	}
	rl := h.RateLimits
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return d.Errf("rate_limits takes a block, or the single argument off")
		}
		rl.Disable = append(rl.Disable, "all")
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case ratelimit.CertificatesPerRegisteredDomain, ratelimit.DuplicateCertificates, ratelimit.FailedValidations,
			ratelimit.NewRequests, ratelimit.DirectoryRequests, ratelimit.PendingAuthorizations:
			args := d.RemainingArgs()
			want := 2
			if opt == ratelimit.PendingAuthorizations {
				want = 1
			}
			if len(args) != want {
				return d.Errf("%s takes %d argument(s): <count>%s", opt, want, map[bool]string{true: " <window>"}[want == 2])
			}
			l, err := parseCountWindow(d, args)
			if err != nil {
				return err
			}
			if rl.Limits == nil {
				rl.Limits = map[string]ratelimit.LimitConfig{}
			}
			rl.Limits[opt] = l
		case "override":
			args := d.RemainingArgs()
			if len(args) != 3 && len(args) != 4 {
				return d.Errf("override takes <limit> <key> <count> [<window>]")
			}
			l, err := parseCountWindow(d, args[2:])
			if err != nil {
				return err
			}
			rl.Overrides = append(rl.Overrides, ratelimit.Override{Limit: args[0], Key: args[1], Count: l.Count, Window: l.Window})
		case "disable":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("disable needs limit names, or off")
			}
			rl.Disable = append(rl.Disable, args...)
		default:
			return d.Errf("unrecognized rate_limits option %q", opt)
		}
	}
	return nil
}

// parseCountWindow reads "<count> [<window>]".
func parseCountWindow(d *caddyfile.Dispenser, args []string) (ratelimit.LimitConfig, error) {
	var l ratelimit.LimitConfig
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return l, d.Errf("count must be a positive number, not %q", args[0])
	}
	l.Count = n
	if len(args) > 1 {
		w, err := caddy.ParseDuration(args[1])
		if err != nil || w <= 0 {
			return l, d.Errf("window must be a positive duration such as 1h or 168h, not %q", args[1])
		}
		l.Window = caddy.Duration(w)
	}
	return l, nil
}

// onOff reads a single on|off argument.
func onOff(d *caddyfile.Dispenser) (bool, error) {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return false, d.ArgErr()
	}
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("%s must be on or off, not %q", opt, v)
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
