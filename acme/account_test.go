package acme

import (
	"fmt"
	"slices"
	"testing"
)

func TestCheckContacts(t *testing.T) {
	tests := []struct {
		name     string
		in       []string
		want     []string // normalised contacts when accepted
		wantType string
	}{
		{"none", nil, []string{}, ""},
		{"empty list", []string{}, []string{}, ""},
		{"one mailto", []string{"mailto:admin@example.com"}, []string{"mailto:admin@example.com"}, ""},
		{"scheme case folded", []string{"MAILTO:admin@example.com"}, []string{"mailto:admin@example.com"}, ""},
		{"plus tag and subdomain", []string{"mailto:first.last+acme@mail.example.co.uk"}, []string{"mailto:first.last+acme@mail.example.co.uk"}, ""},
		{"two", []string{"mailto:a@example.com", "mailto:b@example.org"}, []string{"mailto:a@example.com", "mailto:b@example.org"}, ""},

		{"tel", []string{"tel:+12025550123"}, nil, ErrUnsupportedContact},
		{"https", []string{"https://example.com/contact"}, nil, ErrUnsupportedContact},
		{"xmpp", []string{"xmpp:admin@example.com"}, nil, ErrUnsupportedContact},
		{"bare address", []string{"admin@example.com"}, nil, ErrUnsupportedContact},
		{"one good one unsupported", []string{"mailto:admin@example.com", "tel:+12025550123"}, nil, ErrUnsupportedContact},

		{"mailto without address", []string{"mailto:"}, nil, ErrInvalidContact},
		{"hfields", []string{"mailto:admin@example.com?subject=hello"}, nil, ErrInvalidContact},
		{"two addresses in one", []string{"mailto:a@example.com,b@example.com"}, nil, ErrInvalidContact},
		{"display name", []string{"mailto:Admin <admin@example.com>"}, nil, ErrInvalidContact},
		{"trailing space", []string{"mailto:admin@example.com "}, nil, ErrInvalidContact},
		{"newline", []string{"mailto:admin@example.com\nBcc: x@example.com"}, nil, ErrInvalidContact},
		{"no at", []string{"mailto:admin"}, nil, ErrInvalidContact},
		{"two ats", []string{"mailto:a@b@example.com"}, nil, ErrInvalidContact},
		{"unqualified domain", []string{"mailto:admin@localhost"}, nil, ErrInvalidContact},
		{"address literal", []string{"mailto:admin@[192.0.2.1]"}, nil, ErrInvalidContact},
		{"empty domain label", []string{"mailto:admin@ex..ample.com"}, nil, ErrInvalidContact},
		{"trailing dot domain", []string{"mailto:admin@example.com."}, nil, ErrInvalidContact},
		{"quoted local part rewritten", []string{`mailto:"admin"@example.com`}, nil, ErrInvalidContact},
		{"comment", []string{"mailto:admin(c)@example.com"}, nil, ErrInvalidContact},
		// RFC 5321 §4.1.2: a mailbox domain is letters, digits and hyphens,
		// no label starting with a hyphen; mail to these goes nowhere.
		{"underscore in domain", []string{"mailto:admin@exa_mple.com"}, nil, ErrInvalidContact},
		{"domain label with a leading hyphen", []string{"mailto:admin@-example.com"}, nil, ErrInvalidContact},
		{"one good one invalid", []string{"mailto:admin@example.com", "mailto:"}, nil, ErrInvalidContact},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, p := checkContacts(tt.in)
			wantProblem(t, p, tt.wantType)
			if tt.wantType == "" && !slices.Equal(got, tt.want) {
				t.Errorf("contacts = %q, want %q", got, tt.want)
			}
			if tt.wantType != "" && got != nil {
				t.Errorf("contacts returned with a problem: %q", got)
			}
		})
	}
}

func TestCheckContactsLimit(t *testing.T) {
	list := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("mailto:admin%d@example.com", i)
		}
		return out
	}
	tests := []struct {
		name     string
		n        int
		wantType string
	}{
		{"10", 10, ""},
		{"11", 11, ErrInvalidContact},
		{"100", 100, ErrInvalidContact},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, p := checkContacts(list(tt.n))
			wantProblem(t, p, tt.wantType)
			if tt.wantType == "" && len(got) != tt.n {
				t.Errorf("got %d contacts, want %d", len(got), tt.n)
			}
			if tt.wantType != "" {
				wantProblem(t, p, tt.wantType, "too many contacts", "at most 10")
			}
		})
	}
}
