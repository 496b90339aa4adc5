package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
