package validate

import (
	"strings"
	"testing"
)

func dnsID(name string) Identifier { return Identifier{Type: "dns", Value: name} }
func ipID(addr string) Identifier  { return Identifier{Type: "ip", Value: addr} }

func TestPolicyCheck(t *testing.T) {
	off := false
	on := true
	tests := []struct {
		name     string
		policy   Policy
		id       Identifier
		wantType string   // "" means allowed
		wantIn   []string // detail contents
	}{
		// Defaults: any name below a public suffix, wildcards, no IPs.
		{name: "default allows a .test name", id: dnsID("example.test")},
		{name: "default allows a wildcard", id: dnsID("*.example.test")},
		{name: "default allows .internal", id: dnsID("x.internal")},
		{name: "default allows a deep name", id: dnsID("a.b.c.example.test")},
		{name: "default allows a name under a public TLD", id: dnsID("example.com")},
		{name: "default allows a name under co.uk", id: dnsID("example.co.uk")},
		{name: "default allows a name under github.io", id: dnsID("someone.github.io")},
		{name: "default allows a name under home.arpa", id: dnsID("printer.home.arpa")},
		{name: "public suffix co.uk", id: dnsID("co.uk"), wantType: ProblemRejected,
			wantIn: []string{"co.uk", "public suffix"}},
		{name: "private public suffix github.io", id: dnsID("github.io"), wantType: ProblemRejected,
			wantIn: []string{"github.io", "public suffix"}},
		{name: "public suffix com", id: dnsID("com"), wantType: ProblemRejected,
			wantIn: []string{"com", "public suffix"}},
		// RFC 8375 reserves home.arpa for home networks; the Public Suffix
		// List carries it, so no one may have it as a whole.
		{name: "special-use home.arpa", id: dnsID("home.arpa"), wantType: ProblemRejected,
			wantIn: []string{"home.arpa", "public suffix"}},
		{name: "wildcard of a public suffix", id: dnsID("*.co.uk"), wantType: ProblemRejected,
			wantIn: []string{"co.uk", "public suffix"}},
		{name: "wildcard of a TLD", id: dnsID("*.com"), wantType: ProblemRejected,
			wantIn: []string{"com", "public suffix"}},

		{name: "wildcards off refuse a wildcard", policy: Policy{Wildcards: &off}, id: dnsID("*.x.test"),
			wantType: ProblemRejected, wantIn: []string{"*.x.test", "wildcards off"}},
		{name: "wildcards off allow a plain name", policy: Policy{Wildcards: &off}, id: dnsID("x.test")},
		{name: "wildcards on explicitly", policy: Policy{Wildcards: &on}, id: dnsID("*.x.test")},

		{name: "allow_domains exact name", policy: Policy{AllowDomains: []string{"example.test", "*.corp.test"}},
			id: dnsID("example.test")},
		{name: "allow_domains name below a pattern", policy: Policy{AllowDomains: []string{"example.test", "*.corp.test"}},
			id: dnsID("a.corp.test")},
		{name: "allow_domains deep name below a pattern", policy: Policy{AllowDomains: []string{"example.test", "*.corp.test"}},
			id: dnsID("x.y.corp.test")},
		{name: "allow_domains wildcard of a pattern's suffix", policy: Policy{AllowDomains: []string{"example.test", "*.corp.test"}},
			id: dnsID("*.corp.test")},
		{name: "allow_domains wildcard below a pattern", policy: Policy{AllowDomains: []string{"example.test", "*.corp.test"}},
			id: dnsID("*.a.corp.test")},
		{name: "allow_domains pattern does not cover its suffix", policy: Policy{AllowDomains: []string{"example.test", "*.corp.test"}},
			id: dnsID("corp.test"), wantType: ProblemRejected, wantIn: []string{"corp.test", "example.test, *.corp.test"}},
		{name: "allow_domains refuses other names", policy: Policy{AllowDomains: []string{"example.test", "*.corp.test"}},
			id: dnsID("other.test"), wantType: ProblemRejected, wantIn: []string{"other.test", "not among"}},
		{name: "allow_domains exact name does not cover names below", policy: Policy{AllowDomains: []string{"example.test"}},
			id: dnsID("www.example.test"), wantType: ProblemRejected, wantIn: []string{"www.example.test"}},
		{name: "allow_domains exact name does not cover its wildcard", policy: Policy{AllowDomains: []string{"example.test"}},
			id: dnsID("*.example.test"), wantType: ProblemRejected, wantIn: []string{"*.example.test"}},
		{name: "allow_domains suffix match is on labels", policy: Policy{AllowDomains: []string{"*.corp.test"}},
			id: dnsID("evilcorp.test"), wantType: ProblemRejected, wantIn: []string{"evilcorp.test"}},
		{name: "allow_domains pattern case-insensitive", policy: Policy{AllowDomains: []string{"*.Corp.TEST"}},
			id: dnsID("a.corp.test")},

		{name: "deny_domains refuses below the pattern", policy: Policy{DenyDomains: []string{"*.bad.test"}},
			id: dnsID("x.bad.test"), wantType: ProblemRejected, wantIn: []string{"x.bad.test", "*.bad.test", "denied"}},
		{name: "deny_domains refuses the wildcard", policy: Policy{DenyDomains: []string{"*.bad.test"}},
			id: dnsID("*.bad.test"), wantType: ProblemRejected, wantIn: []string{"*.bad.test"}},
		{name: "deny_domains leaves other names", policy: Policy{DenyDomains: []string{"*.bad.test"}},
			id: dnsID("good.test")},
		{name: "an exact deny refuses the wildcard covering it", policy: Policy{AllowDomains: []string{"*.corp.test"}, DenyDomains: []string{"payroll.corp.test"}},
			id: dnsID("*.corp.test"), wantType: ProblemRejected, wantIn: []string{"payroll.corp.test"}},
		{name: "an exact deny leaves other wildcards", policy: Policy{DenyDomains: []string{"payroll.corp.test"}},
			id: dnsID("*.eng.corp.test")},
		{name: "deny beats allow", policy: Policy{AllowDomains: []string{"*.test"}, DenyDomains: []string{"*.bad.test"}},
			id: dnsID("x.bad.test"), wantType: ProblemRejected, wantIn: []string{"x.bad.test", "*.bad.test"}},
		{name: "deny beats an exact allow", policy: Policy{AllowDomains: []string{"x.bad.test"}, DenyDomains: []string{"*.bad.test"}},
			id: dnsID("x.bad.test"), wantType: ProblemRejected, wantIn: []string{"denied"}},
		{name: "deny exact name", policy: Policy{DenyDomains: []string{"bad.test"}},
			id: dnsID("bad.test"), wantType: ProblemRejected, wantIn: []string{"bad.test"}},
		{name: "allow with deny elsewhere", policy: Policy{AllowDomains: []string{"*.test"}, DenyDomains: []string{"*.bad.test"}},
			id: dnsID("good.test")},

		{name: "IP identifiers off", id: ipID("10.1.2.3"), wantType: "unsupportedIdentifier",
			wantIn: []string{"10.1.2.3", "ip_identifiers"}},
		{name: "IPv6 identifiers off", id: ipID("2001:db8::1"), wantType: "unsupportedIdentifier",
			wantIn: []string{"2001:db8::1"}},
		{name: "IP identifiers on, any address", policy: Policy{IPIdentifiers: true}, id: ipID("192.0.2.1")},
		{name: "IP identifiers on, IPv6", policy: Policy{IPIdentifiers: true}, id: ipID("2001:db8::1")},
		{name: "allow_ip_ranges inside", policy: Policy{IPIdentifiers: true, AllowIPRanges: []string{"10.0.0.0/8"}},
			id: ipID("10.1.2.3")},
		{name: "allow_ip_ranges outside", policy: Policy{IPIdentifiers: true, AllowIPRanges: []string{"10.0.0.0/8"}},
			id: ipID("192.0.2.1"), wantType: ProblemRejected, wantIn: []string{"192.0.2.1", "10.0.0.0/8"}},
		{name: "allow_ip_ranges IPv4 range refuses IPv6", policy: Policy{IPIdentifiers: true, AllowIPRanges: []string{"10.0.0.0/8"}},
			id: ipID("2001:db8::1"), wantType: ProblemRejected, wantIn: []string{"2001:db8::1"}},
		{name: "allow_ip_ranges bare address", policy: Policy{IPIdentifiers: true, AllowIPRanges: []string{"192.0.2.7"}},
			id: ipID("192.0.2.7")},
		{name: "allow_ip_ranges bare address is one address", policy: Policy{IPIdentifiers: true, AllowIPRanges: []string{"192.0.2.7"}},
			id: ipID("192.0.2.8"), wantType: ProblemRejected},
		{name: "deny_ip_ranges inside", policy: Policy{IPIdentifiers: true, DenyIPRanges: []string{"192.0.2.0/24"}},
			id: ipID("192.0.2.1"), wantType: ProblemRejected, wantIn: []string{"192.0.2.1", "192.0.2.0/24", "denied"}},
		{name: "deny_ip_ranges outside", policy: Policy{IPIdentifiers: true, DenyIPRanges: []string{"192.0.2.0/24"}},
			id: ipID("198.51.100.1")},
		{name: "deny_ip_ranges beats allow_ip_ranges", policy: Policy{IPIdentifiers: true,
			AllowIPRanges: []string{"10.0.0.0/8"}, DenyIPRanges: []string{"10.9.0.0/16"}},
			id: ipID("10.9.1.1"), wantType: ProblemRejected, wantIn: []string{"10.9.0.0/16"}},
		{name: "deny_ip_ranges IPv6", policy: Policy{IPIdentifiers: true, DenyIPRanges: []string{"2001:db8::/32"}},
			id: ipID("2001:db8::1"), wantType: ProblemRejected, wantIn: []string{"2001:db8::/32"}},
		{name: "ip policy does not touch names", policy: Policy{IPIdentifiers: true, AllowIPRanges: []string{"10.0.0.0/8"}},
			id: dnsID("example.test")},

		{name: "public_tlds_only allows .com", policy: Policy{PublicTLDsOnly: true}, id: dnsID("example.com")},
		{name: "public_tlds_only allows co.uk", policy: Policy{PublicTLDsOnly: true}, id: dnsID("www.example.co.uk")},
		{name: "public_tlds_only allows a wildcard under .com", policy: Policy{PublicTLDsOnly: true}, id: dnsID("*.example.com")},
		{name: "public_tlds_only refuses .internal", policy: Policy{PublicTLDsOnly: true}, id: dnsID("example.internal"),
			wantType: ProblemRejected, wantIn: []string{"example.internal", "public_tlds_only"}},
		{name: "public_tlds_only refuses .test", policy: Policy{PublicTLDsOnly: true}, id: dnsID("example.test"),
			wantType: ProblemRejected, wantIn: []string{"example.test"}},

		{name: "unknown identifier type", id: Identifier{Type: "email", Value: "a@example.test"},
			wantType: "unsupportedIdentifier", wantIn: []string{"email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			if err := p.Provision(); err != nil {
				t.Fatalf("provision: %v", err)
			}
			got := p.Check(tt.id)
			if tt.wantType == "" {
				if got != nil {
					t.Fatalf("Check(%s %s) = %v, want allowed", tt.id.Type, tt.id.Value, got)
				}
				return
			}
			// Check returns a *Problem; a nil one must not become a
			// non-nil error interface here.
			if got == nil {
				t.Fatalf("Check(%s %s) allowed it, want %s", tt.id.Type, tt.id.Value, tt.wantType)
			}
			wantProblem(t, got, tt.wantType, tt.wantIn...)
		})
	}
}

func TestPolicyProvision(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		wantErr []string // nil means Provision succeeds
	}{
		{name: "zero value"},
		{name: "good ranges and patterns", policy: Policy{
			AllowDomains:  []string{"example.test", "*.corp.test"},
			DenyDomains:   []string{"*.bad.corp.test"},
			AllowIPRanges: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.1"},
			DenyIPRanges:  []string{"10.9.0.0/16", "2001:db8::1"},
		}},
		{name: "bad allow CIDR", policy: Policy{AllowIPRanges: []string{"10.0.0.0/33"}},
			wantErr: []string{"allow_ip_ranges", "10.0.0.0/33"}},
		{name: "bad deny CIDR", policy: Policy{DenyIPRanges: []string{"not-a-range"}},
			wantErr: []string{"deny_ip_ranges", "not-a-range"}},
		{name: "inner wildcard in allow", policy: Policy{AllowDomains: []string{"a.*.b"}},
			wantErr: []string{"a.*.b"}},
		{name: "inner wildcard in deny", policy: Policy{DenyDomains: []string{"*.*.b.test"}},
			wantErr: []string{"*.*.b.test"}},
		{name: "partial-label wildcard", policy: Policy{AllowDomains: []string{"*x.test"}},
			wantErr: []string{"*x.test"}},
		{name: "bare star", policy: Policy{AllowDomains: []string{"*"}},
			wantErr: []string{`"*"`}},
		{name: "empty pattern", policy: Policy{DenyDomains: []string{""}},
			wantErr: []string{`""`}},
		{name: "trailing dot", policy: Policy{AllowDomains: []string{"example.test."}},
			wantErr: []string{"example.test."}},
		{name: "negative max_identifiers", policy: Policy{MaxIdentifiers: -1},
			wantErr: []string{"max_identifiers"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			err := p.Provision()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("provision: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("provision succeeded, want an error naming %q", tt.wantErr)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	var p Policy
	if err := p.Provision(); err != nil {
		t.Fatal(err)
	}
	if p.MaxIdentifiers != DefaultMaxIdentifiers {
		t.Errorf("max_identifiers default %d, want %d", p.MaxIdentifiers, DefaultMaxIdentifiers)
	}
	if !p.WildcardsAllowed() {
		t.Error("wildcards are off by default, want on")
	}
	if p.IPIdentifiers {
		t.Error("ip_identifiers are on by default, want off")
	}
	p = Policy{MaxIdentifiers: 5}
	if err := p.Provision(); err != nil || p.MaxIdentifiers != 5 {
		t.Errorf("max_identifiers 5: got %d, %v", p.MaxIdentifiers, err)
	}
}

func TestIsPublicSuffix(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"com", true},
		{"co.uk", true},
		{"github.io", true},
		{"home.arpa", true},
		{"example.com", false},
		{"example.co.uk", false},
		{"example.test", false},
		{"x.internal", false},
	}
	for _, tt := range tests {
		if got := IsPublicSuffix(tt.name); got != tt.want {
			t.Errorf("IsPublicSuffix(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
