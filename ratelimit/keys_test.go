package ratelimit

import (
	"slices"
	"testing"
)

func TestRegisteredDomain(t *testing.T) {
	tests := []struct {
		name, want string
	}{
		{"www.example.com", "example.com"},
		{"example.com", "example.com"},
		{"WWW.Example.COM", "example.com"},
		{"new.blog.example.co.uk", "example.co.uk"},
		{"example.co.uk", "example.co.uk"},
		{"example2.co.uk", "example2.co.uk"},
		// github.io is in the PSL's private section: each user's site is
		// its own registered domain.
		{"foo.github.io", "foo.github.io"},
		{"www.foo.github.io", "foo.github.io"},
		// TLDs the list does not know: the default rule takes the last two
		// labels.
		{"x.internal", "x.internal"},
		{"y.x.internal", "x.internal"},
		{"a.b.test", "b.test"},
		{"www.example.test", "example.test"},
		{"*.example.com", "example.com"},
		{"*.www.example.co.uk", "example.co.uk"},
		{"192.0.2.1", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::1"},
		{"::1", "::1"},
		// A public suffix itself is its own key (policy refuses it anyway).
		{"co.uk", "co.uk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RegisteredDomain(tt.name); got != tt.want {
				t.Fatalf("RegisteredDomain(%q) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestNameSetKey(t *testing.T) {
	base := NameSetKey([]string{"a.example.com", "b.example.com"})
	tests := []struct {
		name  string
		names []string
		same  bool
	}{
		{"same order", []string{"a.example.com", "b.example.com"}, true},
		{"other order", []string{"b.example.com", "a.example.com"}, true},
		{"other case", []string{"B.Example.COM", "A.EXAMPLE.com"}, true},
		{"duplicates", []string{"a.example.com", "b.example.com", "A.example.com"}, true},
		{"subset", []string{"a.example.com"}, false},
		{"superset", []string{"a.example.com", "b.example.com", "c.example.com"}, false},
		{"other names", []string{"a.example.com", "c.example.com"}, false},
		{"wildcard is another name", []string{"*.example.com", "b.example.com"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NameSetKey(tt.names) == base; got != tt.same {
				t.Fatalf("NameSetKey(%q) == NameSetKey([a b]) is %v, want %v", tt.names, got, tt.same)
			}
		})
	}
	if k := NameSetKey([]string{"x"}); len(k) != 32 {
		t.Fatalf("NameSetKey is %q; want 32 hex characters (safe as a storage key)", k)
	}
}

func TestCertificateTransactions(t *testing.T) {
	tests := []struct {
		name        string
		names       []string
		wantDomains []string
	}{
		{"one name", []string{"www.example.com"}, []string{"example.com"}},
		{"counts once per registered domain", []string{"www.example.com", "example.com", "api.example.com"}, []string{"example.com"}},
		{"several registered domains", []string{"b.example.co.uk", "a.example.com", "x.example.co.uk", "foo.github.io"},
			[]string{"example.co.uk", "example.com", "foo.github.io"}},
		{"wildcard and base", []string{"*.example.com", "example.com"}, []string{"example.com"}},
		{"case", []string{"WWW.EXAMPLE.COM", "www.example.com"}, []string{"example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txns := CertificateTransactions("acct1", tt.names)
			var domains []string
			var dups int
			for _, tx := range txns {
				if tx.Account != "acct1" {
					t.Errorf("transaction %+v lacks the account", tx)
				}
				switch tx.Limit {
				case CertificatesPerRegisteredDomain:
					domains = append(domains, tx.Key)
				case DuplicateCertificates:
					dups++
					if tx.Key != NameSetKey(tt.names) {
						t.Errorf("duplicate key %q, want NameSetKey of the names", tx.Key)
					}
				default:
					t.Errorf("unexpected transaction %+v", tx)
				}
			}
			if !slices.Equal(domains, tt.wantDomains) {
				t.Errorf("registered domains %q, want %q", domains, tt.wantDomains)
			}
			if dups != 1 {
				t.Errorf("%d duplicate_certificates transactions, want 1", dups)
			}
		})
	}
}

func TestFailedValidationKey(t *testing.T) {
	if a, b := FailedValidationKey("acct", "WWW.Example.com"), FailedValidationKey("acct", "www.example.com"); a != b {
		t.Fatalf("keys differ by case: %q, %q", a, b)
	}
	if a, b := FailedValidationKey("acct1", "www.example.com"), FailedValidationKey("acct2", "www.example.com"); a == b {
		t.Fatal("two accounts share a failed_validations bucket")
	}
	if a, b := FailedValidationKey("acct", "a.example.com"), FailedValidationKey("acct", "b.example.com"); a == b {
		t.Fatal("two hostnames share a failed_validations bucket")
	}
}
