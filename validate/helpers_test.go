package validate

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
	"github.com/caddyserver/caddy/v2"
)

// Fixed challenge values: the token is base64url text as RFC 8555 §8.1
// requires, and the key authorization has the token "." thumbprint shape.
const (
	testToken   = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	testKeyAuth = testToken + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)

// newDNS starts a test DNS server and a Resolver that asks only it, with a
// short timeout so failure cases stay fast.
func newDNS(t *testing.T) (*testdns.Server, *Resolver) {
	t.Helper()
	srv := testdns.Start(t)
	return srv, NewResolver([]string{srv.Addr()}, time.Second)
}

func dnsChallenge(typ, name string, r *Resolver) Challenge {
	return Challenge{
		Type:             typ,
		Identifier:       Identifier{Type: "dns", Value: name},
		Token:            testToken,
		KeyAuthorization: testKeyAuth,
		Resolver:         r,
	}
}

// wantProblem checks that err is a *Problem of type typ whose detail holds
// every string in contains. An empty typ means err must be nil.
func wantProblem(t *testing.T, err error, typ string, contains ...string) {
	t.Helper()
	if typ == "" {
		if err != nil {
			t.Fatalf("want success, got %v", err)
		}
		return
	}
	t.Logf("got: %v", err)
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("want *Problem of type %q, got %T: %v", typ, err, err)
	}
	if p.Type != typ {
		t.Errorf("problem type = %q, want %q (detail: %s)", p.Type, typ, p.Detail)
	}
	for _, c := range contains {
		if !strings.Contains(p.Detail, c) {
			t.Errorf("problem detail %q does not contain %q", p.Detail, c)
		}
	}
}

func caddyDuration(d time.Duration) caddy.Duration { return caddy.Duration(d) }
