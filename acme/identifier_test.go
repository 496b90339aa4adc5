package acme

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/acmeca/caddy-acmeca/storage"
	"github.com/acmeca/caddy-acmeca/validate"
)

func dnsID(v string) storage.Identifier { return storage.Identifier{Type: "dns", Value: v} }

func TestCheckDNSName(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	// 63+1+63+1+63+1+61 = 253 characters.
	name253 := label63 + "." + label63 + "." + label63 + "." + strings.Repeat("b", 57) + ".com"
	if len(name253) != 253 {
		t.Fatalf("name253 has %d characters", len(name253))
	}
	tests := []struct {
		name   string
		in     string
		reason string // "" for a good name, else a part of the reason
	}{
		{"two labels", "example.com", ""},
		{"many labels", "a.b.c.d.example.com", ""},
		{"digits and hyphens", "a-1.0x.example.com", ""},
		{"63-char label", label63 + ".com", ""},
		{"253-char name", name253, ""},
		{"wildcard", "*.example.com", ""},
		{"A-label", "xn--bcher-kva.example", ""},
		{"A-label TLD", "example.xn--p1ai", ""},
		{"label starting with a digit", "3com.example", ""},

		{"empty", "", "empty"},
		{"trailing dot", "example.com.", "trailing dot"},
		{"254-char name", name253 + "x", "longer than 253"},
		{"254-char wildcard", "*." + name253[2:] + "x", "longer than 253"},
		{"64-char label", strings.Repeat("a", 64) + ".com", "longer than 63"},
		{"empty label", "a..example.com", "empty label"},
		{"leading dot", ".example.com", "empty label"},
		{"underscore", "_acme.example.com", "character other than"},
		{"space", "a b.example.com", "character other than"},
		{"upper case (not lowered here)", "Example.com", "character other than"},
		{"leading hyphen", "-a.example.com", "hyphen"},
		{"trailing hyphen", "a-.example.com", "hyphen"},
		{"hyphen TLD end", "example.com-", "hyphen"},
		{"single label", "localhost", "single label"},
		{"wildcard of a single label", "*.com", "single label"},
		{"numeric TLD", "example.123", "numeric"},
		{"IPv4 address", "192.0.2.1", "numeric"},
		{"double wildcard", "*.*.example.com", "wildcard"},
		{"inner wildcard", "a.*.example.com", "wildcard"},
		{"partial wildcard", "*example.com", "wildcard"},
		{"wildcard suffix label", "a*.example.com", "wildcard"},
		{"bare wildcard", "*", "wildcard"},
		{"U-label", "bücher.example", "A-label"},
		{"U-label TLD", "example.рф", "A-label"},
		{"IPv6 address", "2001:db8::1", "single label"},
		{"hyphens in 3rd and 4th place", "ab--cd.example", "third and fourth"},
		// RFC 5890 §2.3.2.1: an A-label is the ACE form of a valid
		// U-label; "xn--a" decodes to U+0080, a control character.
		{"undecodable A-label", "xn--a.example", "A-label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkDNSName(tt.in)
			switch {
			case tt.reason == "" && got != "":
				t.Errorf("checkDNSName(%q) = %q, want ok", tt.in, got)
			case tt.reason != "" && got == "":
				t.Errorf("checkDNSName(%q) = ok, want a reason with %q", tt.in, tt.reason)
			case tt.reason != "" && !strings.Contains(got, tt.reason):
				t.Errorf("checkDNSName(%q) = %q, want a reason with %q", tt.in, got, tt.reason)
			}
		})
	}
}

func ipID(v string) storage.Identifier { return storage.Identifier{Type: "ip", Value: v} }

func TestNormalizeIdentifiers(t *testing.T) {
	withIPs := &validate.Policy{IPIdentifiers: true}
	if err := withIPs.Provision(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		in       []storage.Identifier
		policy   *validate.Policy // nil: the default policy
		want     []storage.Identifier
		wantType string       // top-level problem type, "" for success
		wantSubs []Subproblem // checked by type and identifier
	}{
		{
			name: "lower-cased",
			in:   []storage.Identifier{dnsID("WWW.Example.COM")},
			want: []storage.Identifier{dnsID("www.example.com")},
		},
		{
			name: "duplicates merged in order",
			in:   []storage.Identifier{dnsID("b.example"), dnsID("a.example"), dnsID("B.EXAMPLE"), dnsID("a.example")},
			want: []storage.Identifier{dnsID("b.example"), dnsID("a.example")},
		},
		{
			name: "wildcard and base name are distinct",
			in:   []storage.Identifier{dnsID("*.example.com"), dnsID("example.com")},
			want: []storage.Identifier{dnsID("*.example.com"), dnsID("example.com")},
		},
		{
			name: "A-label",
			in:   []storage.Identifier{dnsID("XN--BCHER-KVA.example")},
			want: []storage.Identifier{dnsID("xn--bcher-kva.example")},
		},
		{
			name:     "no identifiers",
			in:       nil,
			wantType: ErrMalformed,
		},
		{
			name:     "ip identifier under the default policy",
			in:       []storage.Identifier{ipID("192.0.2.1")},
			wantType: ErrUnsupportedIdentifier,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrUnsupportedIdentifier, Identifier: ipID("192.0.2.1")}},
		},
		{
			name:   "ip identifiers canonicalised when allowed",
			in:     []storage.Identifier{ipID("2001:DB8:0::1"), ipID("192.0.2.1"), ipID("2001:db8::1")},
			policy: withIPs,
			want:   []storage.Identifier{ipID("2001:db8::1"), ipID("192.0.2.1")},
		},
		{
			name:     "ip with a zone",
			in:       []storage.Identifier{ipID("fe80::1%eth0")},
			policy:   withIPs,
			wantType: ErrMalformed,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrMalformed, Identifier: ipID("fe80::1%eth0")}},
		},
		{
			name:     "ip that does not parse",
			in:       []storage.Identifier{ipID("192.0.2.256")},
			policy:   withIPs,
			wantType: ErrMalformed,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrMalformed, Identifier: ipID("192.0.2.256")}},
		},
		{
			name:     "ip address as a dns identifier",
			in:       []storage.Identifier{dnsID("192.0.2.1")},
			policy:   withIPs,
			wantType: ErrMalformed,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrMalformed, Identifier: dnsID("192.0.2.1")}},
		},
		{
			name:     "unknown type",
			in:       []storage.Identifier{{Type: "email", Value: "a@example.com"}},
			wantType: ErrUnsupportedIdentifier,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrUnsupportedIdentifier, Identifier: storage.Identifier{Type: "email", Value: "a@example.com"}}},
		},
		{
			name:     "type is case-sensitive",
			in:       []storage.Identifier{{Type: "DNS", Value: "example.com"}},
			wantType: ErrUnsupportedIdentifier,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrUnsupportedIdentifier, Identifier: storage.Identifier{Type: "DNS", Value: "example.com"}}},
		},
		{
			name:     "public suffix",
			in:       []storage.Identifier{dnsID("co.uk")},
			wantType: ErrRejectedIdentifier,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrRejectedIdentifier, Identifier: dnsID("co.uk")}},
		},
		{
			name:     "one bad name among good ones",
			in:       []storage.Identifier{dnsID("ok.example"), dnsID("bad_name.example")},
			wantType: ErrMalformed,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrMalformed, Identifier: dnsID("bad_name.example")}},
		},
		{
			// The subproblem names the identifier as the client sent it.
			name:     "bad name keeps its original spelling",
			in:       []storage.Identifier{dnsID("Bad_Name.example")},
			wantType: ErrMalformed,
			wantSubs: []Subproblem{{Type: ErrorNS + ErrMalformed, Identifier: dnsID("Bad_Name.example")}},
		},
		{
			name:     "every bad identifier reported",
			in:       []storage.Identifier{dnsID("a..example"), ipID("192.0.2.1"), dnsID("ok.example"), dnsID("*.*.example")},
			wantType: ErrCompound,
			wantSubs: []Subproblem{
				{Type: ErrorNS + ErrMalformed, Identifier: dnsID("a..example")},
				{Type: ErrorNS + ErrUnsupportedIdentifier, Identifier: ipID("192.0.2.1")},
				{Type: ErrorNS + ErrMalformed, Identifier: dnsID("*.*.example")},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, p := normalizeIdentifiers(tt.in, tt.policy)
			wantProblem(t, p, tt.wantType)
			if tt.wantType == "" {
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %v, want %v", got, tt.want)
				}
				return
			}
			if got != nil {
				t.Errorf("identifiers returned with a problem: %v", got)
			}
			if len(p.Subproblems) != len(tt.wantSubs) {
				t.Fatalf("subproblems = %+v, want %d", p.Subproblems, len(tt.wantSubs))
			}
			for i, s := range p.Subproblems {
				if s.Type != tt.wantSubs[i].Type || s.Identifier != tt.wantSubs[i].Identifier {
					t.Errorf("subproblem %d = %s %v, want %s %v", i, s.Type, s.Identifier, tt.wantSubs[i].Type, tt.wantSubs[i].Identifier)
				}
				if s.Detail == "" {
					t.Errorf("subproblem %d has no detail", i)
				}
			}
		})
	}
}

func TestNormalizeIdentifiersLimit(t *testing.T) {
	ids := func(n int) []storage.Identifier {
		out := make([]storage.Identifier, n)
		for i := range out {
			out[i] = dnsID(fmt.Sprintf("n%d.example.com", i))
		}
		return out
	}
	tests := []struct {
		name     string
		n        int
		max      int // policy's MaxIdentifiers; 0 for the default
		wantType string
		limit    int // the limit the detail names
	}{
		{"exactly 100", 100, 0, "", 100},
		{"101", 101, 0, ErrRejectedIdentifier, 100},
		{"1000", 1000, 0, ErrRejectedIdentifier, 100},
		{"at a policy limit of 3", 3, 3, "", 3},
		{"over a policy limit of 3", 4, 3, ErrRejectedIdentifier, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, p := normalizeIdentifiers(ids(tt.n), &validate.Policy{MaxIdentifiers: tt.max})
			wantProblem(t, p, tt.wantType)
			if tt.wantType == "" && len(got) != tt.n {
				t.Errorf("got %d identifiers, want %d", len(got), tt.n)
			}
			if tt.wantType != "" && !strings.Contains(p.Detail, fmt.Sprintf("at most %d", tt.limit)) {
				t.Errorf("detail %q does not name the limit", p.Detail)
			}
		})
	}
	if validate.DefaultMaxIdentifiers != 100 {
		t.Errorf("DefaultMaxIdentifiers = %d, want 100", validate.DefaultMaxIdentifiers)
	}
}
