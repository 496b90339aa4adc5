package acme

import (
	"strings"

	"github.com/acmeca/caddy-acmeca/storage"
)

// maxIdentifiers bounds the identifiers of one order.
const maxIdentifiers = 100

// normalizeIdentifiers checks the identifiers of a newOrder and returns them
// lower-cased and de-duplicated. Every bad identifier gets a subproblem, so
// the client learns about all of them at once.
func normalizeIdentifiers(ids []storage.Identifier) ([]storage.Identifier, *Problem) {
	if len(ids) == 0 {
		return nil, Malformed("the order has no identifiers")
	}
	if len(ids) > maxIdentifiers {
		return nil, NewProblem(ErrRejectedIdentifier, "the order has %d identifiers; at most %d are allowed", len(ids), maxIdentifiers)
	}
	var subs []Subproblem
	seen := make(map[string]bool, len(ids))
	out := make([]storage.Identifier, 0, len(ids))
	for _, id := range ids {
		if id.Type != "dns" {
			subs = append(subs, SubproblemOf(ErrUnsupportedIdentifier, id, "identifier type %q is not supported; only \"dns\" is", id.Type))
			continue
		}
		name := strings.ToLower(id.Value)
		if reason := checkDNSName(name); reason != "" {
			subs = append(subs, SubproblemOf(ErrRejectedIdentifier, id, "%q is not a valid domain name: %s", id.Value, reason))
			continue
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		out = append(out, storage.Identifier{Type: "dns", Value: name})
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
	}
	if tld := labels[len(labels)-1]; tld[0] >= '0' && tld[0] <= '9' {
		return "the top-level label is numeric (IP addresses are not dns identifiers)"
	}
	return ""
}
