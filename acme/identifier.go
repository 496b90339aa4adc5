package acme

import (
	"fmt"
	"net"
	"strings"

	"golang.org/x/net/idna"

	"github.com/acmeca/caddy-acmeca/storage"
	"github.com/acmeca/caddy-acmeca/validate"
)

// normalizeIdentifiers checks the identifiers of a newOrder against syntax
// and the CA's policy, and returns them lower-cased and de-duplicated. Every
// bad identifier gets a subproblem, so the client learns about all of them
// at once: malformed for bad syntax (as Boulder does), rejectedIdentifier or
// unsupportedIdentifier for what the policy refuses.
func normalizeIdentifiers(ids []storage.Identifier, policy *validate.Policy) ([]storage.Identifier, *Problem) {
	if policy == nil {
		policy = &validate.Policy{}
	}
	max := policy.MaxIdentifiers
	if max <= 0 {
		max = validate.DefaultMaxIdentifiers
	}
	if len(ids) == 0 {
		return nil, Malformed("the order has no identifiers")
	}
	if len(ids) > max {
		return nil, NewProblem(ErrRejectedIdentifier, "the order has %d identifiers; at most %d are allowed", len(ids), max)
	}
	var subs []Subproblem
	seen := make(map[string]bool, len(ids))
	out := make([]storage.Identifier, 0, len(ids))
	for _, id := range ids {
		var value string
		switch id.Type {
		case "dns":
			value = strings.ToLower(id.Value)
			if reason := checkDNSName(value); reason != "" {
				subs = append(subs, SubproblemOf(ErrMalformed, id, "%q is not a valid domain name: %s", id.Value, reason))
				continue
			}
		case "ip":
			ip := net.ParseIP(id.Value)
			if ip == nil || strings.Contains(id.Value, "%") {
				subs = append(subs, SubproblemOf(ErrMalformed, id, "%q is not an IP address", id.Value))
				continue
			}
			value = ip.String() // RFC 8738 §3: the canonical text form
		default:
			subs = append(subs, SubproblemOf(ErrUnsupportedIdentifier, id, "identifier type %q is not supported; use \"dns\" (or \"ip\" where the CA allows it)", id.Type))
			continue
		}
		if p := policy.Check(validate.Identifier{Type: id.Type, Value: value}); p != nil {
			subs = append(subs, SubproblemOf(p.Type, id, "%s", p.Detail))
			continue
		}
		if seen[id.Type+":"+value] {
			continue
		}
		seen[id.Type+":"+value] = true
		out = append(out, storage.Identifier{Type: id.Type, Value: value})
	}
	if len(subs) > 0 {
		return nil, Compound("the order has identifiers this CA will not issue for", subs)
	}
	return out, nil
}

// checkDNSName says what is wrong with a lower-case DNS name, or "".
func checkDNSName(name string) string {
	base := strings.TrimPrefix(name, "*.")
	switch {
	case name == "":
		return "it is empty"
	case strings.HasSuffix(name, "."):
		return "it has a trailing dot"
	case len(name) > 253:
		return "it is longer than 253 characters"
	case strings.Contains(base, "*"):
		return "a wildcard must be the whole leftmost label (*.example.com)"
	}
	labels := strings.Split(base, ".")
	if len(labels) < 2 {
		return "it is not fully qualified (a single label)"
	}
	for _, l := range labels {
		if l == "" {
			return "it has an empty label"
		}
		if len(l) > 63 {
			return "a label is longer than 63 characters"
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "a label starts or ends with a hyphen"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "it has a character other than letters, digits and hyphens (internationalized names must be in A-label form, xn--)"
			}
		}
		if len(l) >= 4 && l[2:4] == "--" {
			if l[:2] != "xn" {
				return "a label has hyphens in the third and fourth positions but is not an A-label (xn--)"
			}
			if _, err := idna.Registration.ToUnicode(l); err != nil {
				return fmt.Sprintf("label %q is not a valid A-label: %v", l, err)
			}
		}
	}
	if tld := labels[len(labels)-1]; tld[0] >= '0' && tld[0] <= '9' {
		return "the top-level label is numeric (IP addresses are not dns identifiers)"
	}
	return ""
}
