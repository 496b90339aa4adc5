package validate

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(DNS01{})
}

// maxListedTXT is how many of the TXT values found a dns-01 problem detail
// lists; enough to spot a stale record, short enough to read.
const maxListedTXT = 5

// DNS01 validates the dns-01 challenge (RFC 8555 §8.4): a TXT record at
// _acme-challenge.<name> holding the base64url SHA-256 digest of the key
// authorization. CNAMEs are followed, so subscribers can delegate the
// record to a zone their ACME client can update.
type DNS01 struct {
	// Timeout bounds the whole validation, including every DNS query and
	// CNAME hop. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	logger *zap.Logger // set at Provision
}

// CaddyModule returns the Caddy module information.
func (DNS01) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "acme_ca.challenges.dns-01",
		New: func() caddy.Module { return new(DNS01) },
	}
}

// Provision applies defaults and checks the configuration.
func (d *DNS01) Provision(ctx caddy.Context) error {
	d.logger = ctx.Logger()
	if d.Timeout == 0 {
		d.Timeout = caddy.Duration(DefaultTimeout)
	}
	if d.Timeout < 0 {
		return fmt.Errorf("timeout: must not be negative, got %s", time.Duration(d.Timeout))
	}
	return nil
}

// DNS01Digest is the TXT value dns-01 expects for a key authorization:
// base64url without padding of its SHA-256 digest (RFC 8555 §8.4).
func DNS01Digest(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Validate looks up the TXT records and succeeds if any of them matches.
func (d *DNS01) Validate(ctx context.Context, chall Challenge) error {
	err := d.validate(ctx, chall)
	if err != nil {
		if c := logger(d.logger).Check(zap.DebugLevel, "dns-01 validation failed"); c != nil {
			c.Write(zap.String("identifier", chall.Identifier.Value), zap.Error(err))
		}
	}
	return err
}

func (d *DNS01) validate(ctx context.Context, chall Challenge) error {
	if chall.Identifier.Type != "dns" {
		// RFC 8738 §7: there is no reverse-zone form of dns-01.
		return Problemf(ProblemRejected, "dns-01 cannot validate %q identifiers", chall.Identifier.Type)
	}
	name := strings.TrimSuffix(strings.ToLower(chall.Identifier.Value), ".")
	if _, ok := dns.IsDomainName(name); !ok || name == "" {
		return Problemf(ProblemRejected, "%q is not a valid DNS name", sanitize([]byte(chall.Identifier.Value), 256))
	}
	name = "_acme-challenge." + name

	ctx, cancel := context.WithTimeout(ctx, orDefaultDuration(d.Timeout, DefaultTimeout))
	defer cancel()

	values, lerr := resolverFor(chall).lookupTXT(ctx, name)
	if lerr != nil {
		if lerr.netErr == nil && lerr.rcode == dns.RcodeNameError {
			// A missing record is the subscriber's to fix, not a DNS
			// failure; word it so.
			via := ""
			if lerr.alias != "" {
				via = " via CNAME " + displayName(lerr.alias)
			}
			return Problemf(ProblemUnauthorized, "no TXT record found at %s (NXDOMAIN%s)", name, via)
		}
		return lerr.problem("TXT")
	}
	if len(values) == 0 {
		return Problemf(ProblemUnauthorized, "no TXT record found at %s", name)
	}

	want := DNS01Digest(chall.KeyAuthorization)
	for _, v := range values {
		if v == want {
			return nil
		}
	}

	listed := make([]string, 0, maxListedTXT)
	for i, v := range values {
		if i == maxListedTXT {
			break
		}
		listed = append(listed, fmt.Sprintf("%q", sanitize([]byte(v), 128)))
	}
	more := ""
	if n := len(values) - len(listed); n > 0 {
		more = fmt.Sprintf(" (and %d more)", n)
	}
	return Problemf(ProblemIncorrectResponse, "incorrect TXT record %s%s found at %s, expected %q",
		strings.Join(listed, ", "), more, name, want)
}

// Interface guards
var (
	_ caddy.Module      = (*DNS01)(nil)
	_ caddy.Provisioner = (*DNS01)(nil)
	_ Validator         = (*DNS01)(nil)
)
