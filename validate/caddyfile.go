package validate

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the http-01 validator from Caddyfile tokens.
// Syntax (the block is optional):
//
//	http-01 {
//		port    <port>
//		timeout <duration>
//	}
func (h *HTTP01) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalPortTimeout(d, "http-01", &h.Port, &h.Timeout)
}

// UnmarshalCaddyfile sets up the dns-01 validator from Caddyfile tokens.
// Syntax (the block is optional):
//
//	dns-01 {
//		timeout <duration>
//	}
func (v *DNS01) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalPortTimeout(d, "dns-01", nil, &v.Timeout)
}

// UnmarshalCaddyfile sets up the tls-alpn-01 validator from Caddyfile
// tokens. Syntax (the block is optional):
//
//	tls-alpn-01 {
//		port    <port>
//		timeout <duration>
//	}
func (t *TLSALPN01) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalPortTimeout(d, "tls-alpn-01", &t.Port, &t.Timeout)
}

// unmarshalPortTimeout parses the block all built-in challenge types share.
// port is nil for types without a port. The dispenser may sit on the
// challenge-type token already (a parent iterating its block) or just
// before it (a fresh segment dispenser); both are accepted.
func unmarshalPortTimeout(d *caddyfile.Dispenser, typ string, port *int, timeout *caddy.Duration) error {
	if d.Val() != typ && !d.Next() {
		return d.EOFErr()
	}
	if d.Val() != typ {
		return d.Errf("expected %q, got %q", typ, d.Val())
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "port":
			if port == nil {
				return d.Errf("%s has no port to configure", typ)
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 || n > 65535 {
				return d.Errf("port: %q is not a TCP port (1-65535)", d.Val())
			}
			*port = n
		case "timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("timeout: %v", err)
			}
			if dur <= 0 {
				return d.Errf("timeout: must be positive, got %s", d.Val())
			}
			*timeout = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized %s option %q", typ, d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*HTTP01)(nil)
	_ caddyfile.Unmarshaler = (*DNS01)(nil)
	_ caddyfile.Unmarshaler = (*TLSALPN01)(nil)
)
