package validate

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
)

// caaAccount is the account URL the CAA cases issue for, as RFC 8657's
// accounturi names it.
const caaAccount = "https://ca.example/acme/acct/1"

// caaZone sets up the CAA records every case of TestCheckCAA reads. Each
// case has names of its own, so the cases do not depend on one another.
func caaZone(srv *testdns.Server) {
	srv.SetCAA("permit.test", 0, "issue", "ca.example")
	srv.SetCAA("mixedcase.test", 0, "ISSUE", "CA.Example")
	srv.SetCAA("other.test", 0, "issue", "other-ca.example")

	// Climbing: sub.parent.test has none, parent.test has them.
	srv.SetCAA("parent.test", 0, "issue", "other-ca.example")
	srv.SetA("sub.parent.test", "192.0.2.1")

	// A record set at the name shadows the parent's, both ways.
	srv.SetCAA("shadow.test", 0, "issue", "other-ca.example")
	srv.SetCAA("allow.shadow.test", 0, "issue", "ca.example")
	srv.SetCAA("shadow2.test", 0, "issue", "ca.example")
	srv.SetCAA("deny.shadow2.test", 0, "issue", ";")

	srv.SetCAA("nobody.test", 0, "issue", ";")

	srv.SetCAA("wild.test", 0, "issue", "ca.example")
	srv.SetCAA("wild.test", 0, "issuewild", ";")
	srv.SetCAA("wildonly.test", 0, "issue", ";")
	srv.SetCAA("wildonly.test", 0, "issuewild", "ca.example")
	srv.SetCAA("issueonly.test", 0, "issue", "ca.example")
	srv.SetCAA("issueother.test", 0, "issue", "other-ca.example")

	srv.SetCAA("critical.test", 128, "tbs", "unknown")
	srv.SetCAA("critical.test", 0, "issue", "ca.example")
	srv.SetCAA("noncritical.test", 0, "tbs", "unknown")
	srv.SetCAA("noncritical.test", 0, "issue", "ca.example")
	srv.SetCAA("unknownonly.test", 0, "futuretag", "whatever")
	srv.SetCAA("iodef.test", 0, "iodef", "mailto:security@iodef.test")
	srv.SetCAA("criticaliodef.test", 128, "iodef", "mailto:security@iodef.test")

	srv.SetCAA("acct.test", 0, "issue", "ca.example; accounturi="+caaAccount)
	srv.SetCAA("acctspace.test", 0, "issue", " ca.example ; accounturi = "+caaAccount+" ")
	srv.SetCAA("methods.test", 0, "issue", "ca.example; validationmethods=dns-01")
	srv.SetCAA("methods2.test", 0, "issue", "ca.example; validationmethods=http-01,tls-alpn-01")
	srv.SetCAA("both.test", 0, "issue", "ca.example; accounturi="+caaAccount+"; validationmethods=dns-01")
	srv.SetCAA("unknownparam.test", 0, "issue", "ca.example; futureparam=1")

	srv.SetCAA("several.test", 0, "issue", "other-ca.example")
	srv.SetCAA("several.test", 0, "issue", "ca.example")
	srv.SetCAA("noneof.test", 0, "issue", "other-ca.example")
	srv.SetCAA("noneof.test", 0, "issue", "third-ca.example")

	srv.SetRcode("servfail.test", dns.TypeCAA, dns.RcodeServerFailure)
	srv.SetRcode("servfailparent.test", dns.TypeCAA, dns.RcodeServerFailure)
	srv.SetA("sub.servfailparent.test", "192.0.2.1")
	srv.SetRcode("refused.test", dns.TypeCAA, dns.RcodeRefused)

	// An alias whose target holds CAA records: they are the alias's.
	srv.SetCNAME("alias.test", "target.cnametarget.test")
	srv.SetCAA("target.cnametarget.test", 0, "issue", "other-ca.example")
	srv.SetCNAME("goodalias.test", "good.cnametarget.test")
	srv.SetCAA("good.cnametarget.test", 0, "issue", "ca.example")
	// An alias whose target has none: the climb goes on from the alias's
	// parent, not from the target's (RFC 8659 §3).
	srv.SetCAA("cnameparent.test", 0, "issue", "ca.example")
	srv.SetCNAME("www.cnameparent.test", "host.elsewhere.test")
	srv.SetA("host.elsewhere.test", "192.0.2.1")
	srv.SetCAA("elsewhere.test", 0, "issue", ";")

	srv.SetCNAME("a.loop.test", "b.loop.test")
	srv.SetCNAME("b.loop.test", "a.loop.test")
}

func TestCheckCAA(t *testing.T) {
	srv := testdns.Start(t)
	r := NewResolver([]string{srv.Addr()}, 2*time.Second)
	caaZone(srv)

	tests := []struct {
		name       string
		ident      string // without "*."
		wildcard   bool
		identities []string // default: ca.example
		account    string   // default: caaAccount
		method     string   // default: http-01
		wantIn     []string // detail contents; nil means issuance is permitted
	}{
		{name: "no CAA anywhere", ident: "www.none.test"},
		{name: "issue names this CA", ident: "permit.test"},
		{name: "tag and issuer case-insensitive", ident: "mixedcase.test"},
		{name: "identity with trailing dot", ident: "permit.test", identities: []string{"ca.example."}},
		{name: "one of several identities", ident: "permit.test", identities: []string{"acme.example", "CA.EXAMPLE"}},
		{name: "another CA only", ident: "other.test",
			wantIn: []string{"other.test", `0 issue "other-ca.example"`, "it names another CA", "ca.example"}},
		{name: "record at the parent applies", ident: "sub.parent.test",
			wantIn: []string{"CAA records at parent.test", "sub.parent.test", `0 issue "other-ca.example"`}},
		{name: "record at the grandparent applies", ident: "a.b.parent.test",
			wantIn: []string{"CAA records at parent.test", "a.b.parent.test"}},
		{name: "name's records shadow a forbidding parent", ident: "allow.shadow.test"},
		{name: "name's records shadow a permitting parent", ident: "deny.shadow2.test",
			wantIn: []string{"CAA records at deny.shadow2.test", `0 issue ";"`, "permits no CA"}},
		{name: "issue ; forbids every CA", ident: "nobody.test",
			wantIn: []string{"nobody.test", `0 issue ";"`, "permits no CA"}},
		{name: "issuewild forbids a wildcard", ident: "wild.test", wildcard: true,
			wantIn: []string{"*.wild.test", `0 issuewild ";"`, `"issuewild"`}},
		{name: "issuewild does not apply to a non-wildcard", ident: "wild.test"},
		{name: "issuewild permits a wildcard that issue forbids", ident: "wildonly.test", wildcard: true},
		{name: "issue forbids non-wildcard despite issuewild", ident: "wildonly.test",
			wantIn: []string{"wildonly.test", `0 issue ";"`}},
		{name: "wildcard with only issue records: issue permits", ident: "issueonly.test", wildcard: true},
		{name: "wildcard with only issue records: issue forbids", ident: "issueother.test", wildcard: true,
			wantIn: []string{"*.issueother.test", `0 issue "other-ca.example"`, `"issue"`}},
		{name: "unknown critical property", ident: "critical.test",
			wantIn: []string{"critical.test", `"tbs"`, `128 tbs "unknown"`}},
		{name: "unknown non-critical property ignored", ident: "noncritical.test"},
		{name: "only an unknown non-critical property", ident: "unknownonly.test"},
		{name: "iodef only", ident: "iodef.test"},
		{name: "critical iodef is understood", ident: "criticaliodef.test"},
		{name: "accounturi matches", ident: "acct.test"},
		{name: "accounturi with spaces matches", ident: "acctspace.test"},
		{name: "accounturi of another account", ident: "acct.test", account: "https://ca.example/acme/acct/2",
			wantIn: []string{"acct.test", "accounturi", caaAccount, "https://ca.example/acme/acct/2"}},
		{name: "validationmethods includes the method", ident: "methods.test", method: "dns-01"},
		{name: "validationmethods excludes the method", ident: "methods.test", method: "http-01",
			wantIn: []string{"methods.test", "validationmethods dns-01", "http-01"}},
		{name: "validationmethods list includes the method", ident: "methods2.test", method: "tls-alpn-01"},
		{name: "validationmethods list excludes the method", ident: "methods2.test", method: "dns-01",
			wantIn: []string{"validationmethods http-01,tls-alpn-01", "dns-01"}},
		{name: "accounturi and validationmethods both hold", ident: "both.test", method: "dns-01"},
		{name: "accounturi holds, validationmethods does not", ident: "both.test", method: "http-01",
			wantIn: []string{"validationmethods"}},
		{name: "unknown parameter ignored", ident: "unknownparam.test"},
		{name: "one of several issue records permits", ident: "several.test"},
		{name: "none of several issue records permits", ident: "noneof.test",
			wantIn: []string{`0 issue "other-ca.example"`, `0 issue "third-ca.example"`}},
		{name: "SERVFAIL refuses", ident: "servfail.test",
			wantIn: []string{"SERVFAIL", "servfail.test", "refused"}},
		{name: "SERVFAIL at the parent refuses", ident: "sub.servfailparent.test",
			wantIn: []string{"SERVFAIL", "servfailparent.test"}},
		{name: "REFUSED refuses", ident: "refused.test",
			wantIn: []string{"REFUSED", "refused.test"}},
		{name: "CNAME target's records apply", ident: "alias.test",
			wantIn: []string{"alias.test", `0 issue "other-ca.example"`}},
		{name: "CNAME target's records permit", ident: "goodalias.test"},
		{name: "CNAME without records climbs from the alias", ident: "www.cnameparent.test"},
		{name: "CNAME loop refuses", ident: "a.loop.test",
			wantIn: []string{"a.loop.test", "CNAME"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := CAACheck{
				Name:       tt.ident,
				Wildcard:   tt.wildcard,
				Identities: tt.identities,
				AccountURL: tt.account,
				Method:     tt.method,
			}
			if c.Identities == nil {
				c.Identities = []string{"ca.example"}
			}
			if c.AccountURL == "" {
				c.AccountURL = caaAccount
			}
			if c.Method == "" {
				c.Method = "http-01"
			}
			err := CheckCAA(context.Background(), r, c)
			if tt.wantIn == nil {
				wantProblem(t, err, "")
				return
			}
			wantProblem(t, err, ProblemCAA, tt.wantIn...)
		})
	}
}

// TestCheckCAAStopsAtTheRelevantSet: the climb ends at the first name with
// records, so names above it are never asked about.
func TestCheckCAAStopsAtTheRelevantSet(t *testing.T) {
	srv := testdns.Start(t)
	r := NewResolver([]string{srv.Addr()}, 2*time.Second)
	srv.SetCAA("mid.top.test", 0, "issue", "ca.example")
	// A parent that would fail the lookup: reaching it would refuse.
	srv.SetRcode("top.test", dns.TypeCAA, dns.RcodeServerFailure)

	err := CheckCAA(context.Background(), r, CAACheck{
		Name:       "leaf.mid.top.test",
		Identities: []string{"ca.example"},
		AccountURL: caaAccount,
		Method:     "dns-01",
	})
	wantProblem(t, err, "")
}

// TestCheckCAATrailingDotAndCase: the name is looked up the same however
// the caller spells it.
func TestCheckCAATrailingDotAndCase(t *testing.T) {
	srv := testdns.Start(t)
	r := NewResolver([]string{srv.Addr()}, 2*time.Second)
	srv.SetCAA("spelled.test", 0, "issue", "other-ca.example")

	for _, name := range []string{"spelled.test.", "Spelled.TEST", "www.SPELLED.test."} {
		err := CheckCAA(context.Background(), r, CAACheck{
			Name:       name,
			Identities: []string{"ca.example"},
			Method:     "http-01",
		})
		wantProblem(t, err, ProblemCAA, "spelled.test", "other-ca.example")
	}
}

// TestCheckCAACanceled: a canceled context is a failed lookup, which
// refuses issuance rather than permitting it.
func TestCheckCAACanceled(t *testing.T) {
	srv := testdns.Start(t)
	r := NewResolver([]string{srv.Addr()}, 2*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := CheckCAA(ctx, r, CAACheck{Name: "permit.test", Identities: []string{"ca.example"}, Method: "http-01"})
	wantProblem(t, err, ProblemCAA, "permit.test", "canceled")
}
