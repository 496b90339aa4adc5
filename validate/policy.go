package validate

import (
	"fmt"
	"net"
	"strings"

	"github.com/weppos/publicsuffix-go/publicsuffix"
)

// DefaultMaxIdentifiers bounds the identifiers of one order.
const DefaultMaxIdentifiers = 100

// Policy says which identifiers this CA will ever sign for. Names that are
// public suffixes themselves (co.uk, github.io) are always refused.
type Policy struct {
	// Exact names and "*.suffix" patterns (any name below suffix). When
	// present, only names matching one of them are allowed.
	AllowDomains []string `json:"allow_domains,omitempty"`

	// Names refused even when allowed; the same pattern forms.
	DenyDomains []string `json:"deny_domains,omitempty"`

	// CIDR ranges IP identifiers must fall in, when present.
	AllowIPRanges []string `json:"allow_ip_ranges,omitempty"`

	// CIDR ranges IP identifiers must not fall in.
	DenyIPRanges []string `json:"deny_ip_ranges,omitempty"`

	// Whether wildcard names (*.example.com) may be ordered. Default: true.
	Wildcards *bool `json:"wildcards,omitempty"`

	// Whether IP address identifiers (RFC 8738) may be ordered; they are
	// proven by http-01 and tls-alpn-01. Default: false.
	IPIdentifiers bool `json:"ip_identifiers,omitempty"`

	// Whether names must be under a top-level domain of the ICANN section
	// of the Public Suffix List. Default: false, since private CAs issue
	// for .internal, .test, .home.arpa and corporate TLDs.
	PublicTLDsOnly bool `json:"public_tlds_only,omitempty"`

	// Most identifiers in one order. Default: 100.
	MaxIdentifiers int `json:"max_identifiers,omitempty"`

	allowNets, denyNets []*net.IPNet // set at Provision
}

// Provision parses the ranges and applies defaults.
func (p *Policy) Provision() error {
	if p.MaxIdentifiers == 0 {
		p.MaxIdentifiers = DefaultMaxIdentifiers
	}
	if p.MaxIdentifiers < 0 {
		return fmt.Errorf("policy: max_identifiers must be positive, not %d", p.MaxIdentifiers)
	}
	var err error
	if p.allowNets, err = parseCIDRs("allow_ip_ranges", p.AllowIPRanges); err != nil {
		return err
	}
	if p.denyNets, err = parseCIDRs("deny_ip_ranges", p.DenyIPRanges); err != nil {
		return err
	}
	for _, pat := range append(append([]string(nil), p.AllowDomains...), p.DenyDomains...) {
		base := strings.TrimPrefix(strings.ToLower(pat), "*.")
		if base == "" || strings.Contains(base, "*") || strings.HasSuffix(base, ".") {
			return fmt.Errorf("policy: domain pattern %q must be a name or *.suffix", pat)
		}
	}
	return nil
}

func parseCIDRs(field string, ranges []string) ([]*net.IPNet, error) {
	var nets []*net.IPNet
	for _, r := range ranges {
		if !strings.Contains(r, "/") {
			if ip := net.ParseIP(r); ip != nil {
				bits := 128
				if ip.To4() != nil {
					bits = 32
				}
				r = fmt.Sprintf("%s/%d", r, bits)
			}
		}
		_, n, err := net.ParseCIDR(r)
		if err != nil {
			return nil, fmt.Errorf("policy: %s: %q is not a CIDR range", field, r)
		}
		nets = append(nets, n)
	}
	return nets, nil
}

// WildcardsAllowed reports whether wildcard names may be ordered.
func (p *Policy) WildcardsAllowed() bool { return p.Wildcards == nil || *p.Wildcards }

// Check says why the policy refuses an identifier (a lower-case name,
// possibly "*."-prefixed, or an IP address), as a rejectedIdentifier or
// unsupportedIdentifier problem, or nil when it is allowed. The name's
// syntax has been checked before.
func (p *Policy) Check(id Identifier) *Problem {
	switch id.Type {
	case "ip":
		return p.checkIP(id.Value)
	case "dns":
		return p.checkName(id.Value)
	}
	return Problemf("unsupportedIdentifier", "identifier type %q is not supported", id.Type)
}

func (p *Policy) checkIP(value string) *Problem {
	if !p.IPIdentifiers {
		return Problemf("unsupportedIdentifier", "this CA does not issue for IP addresses (%s); its policy has ip_identifiers off", value)
	}
	ip := net.ParseIP(value)
	if ip == nil {
		return Problemf("malformed", "%q is not an IP address", value)
	}
	for _, n := range p.denyNets {
		if n.Contains(ip) {
			return Problemf(ProblemRejected, "%s is in the denied range %s", value, n)
		}
	}
	if len(p.allowNets) > 0 {
		for _, n := range p.allowNets {
			if n.Contains(ip) {
				return nil
			}
		}
		return Problemf(ProblemRejected, "%s is not in an allowed range (%s)", value, strings.Join(p.AllowIPRanges, ", "))
	}
	return nil
}

func (p *Policy) checkName(name string) *Problem {
	wildcard := strings.HasPrefix(name, "*.")
	base := strings.TrimPrefix(name, "*.")
	if wildcard && !p.WildcardsAllowed() {
		return Problemf(ProblemRejected, "this CA does not issue wildcard certificates (%s); its policy has wildcards off", name)
	}
	if IsPublicSuffix(base) {
		return Problemf(ProblemRejected, "%s is a public suffix (on the Public Suffix List); certificates are issued only for names below one", base)
	}
	if p.PublicTLDsOnly {
		if rule := publicsuffix.DefaultList.Find(base, &publicsuffix.FindOptions{IgnorePrivate: true}); rule == nil {
			return Problemf(ProblemRejected, "%s is not under a public top-level domain; this CA's policy has public_tlds_only on", name)
		}
	}
	for _, pat := range p.DenyDomains {
		if matchDomain(pat, name) {
			return Problemf(ProblemRejected, "%s is denied by this CA's policy (%s)", name, pat)
		}
		// A wildcard certificate would cover a denied name directly
		// below it.
		if wildcard && !strings.HasPrefix(pat, "*.") && parentDomain(strings.ToLower(pat)) == base {
			return Problemf(ProblemRejected, "%s would cover %s, which this CA's policy denies", name, pat)
		}
	}
	if len(p.AllowDomains) > 0 {
		for _, pat := range p.AllowDomains {
			if matchDomain(pat, name) {
				return nil
			}
		}
		return Problemf(ProblemRejected, "%s is not among the names this CA issues for (%s)", name, strings.Join(p.AllowDomains, ", "))
	}
	return nil
}

// matchDomain matches a policy pattern against a name: an exact name
// matches itself; "*.suffix" matches every name below suffix, and a
// wildcard for suffix itself (whose certificate covers only names below it).
func matchDomain(pattern, name string) bool {
	pattern = strings.ToLower(pattern)
	if pattern == name {
		return true
	}
	suffix, isPattern := strings.CutPrefix(pattern, "*.")
	if !isPattern {
		return false
	}
	base, wildcard := strings.CutPrefix(name, "*.")
	return strings.HasSuffix(base, "."+suffix) || (wildcard && base == suffix)
}

// IsPublicSuffix reports whether name is itself a public suffix (co.uk,
// github.io), by the Public Suffix List's ICANN and private sections.
// Names under TLDs the list does not know (.internal, .test) are not.
func IsPublicSuffix(name string) bool {
	rule := publicsuffix.DefaultList.Find(name, &publicsuffix.FindOptions{})
	if rule == nil {
		return false
	}
	d := rule.Decompose(name)
	return d[0] == ""
}
