package validate

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestDNS01Digest(t *testing.T) {
	// The example from RFC 8555 §8.4 is not computable from the text, so
	// check the shape instead: 32 bytes, base64url, no padding.
	got := DNS01Digest(testKeyAuth)
	if len(got) != 43 {
		t.Errorf("digest %q has length %d, want 43", got, len(got))
	}
	if !validToken(got) {
		t.Errorf("digest %q is not unpadded base64url", got)
	}
}

func TestDNS01(t *testing.T) {
	srv, r := newDNS(t)
	want := DNS01Digest(testKeyAuth)

	srv.SetTXT("_acme-challenge.direct.test", "stale-value", want)
	srv.SetCNAME("_acme-challenge.delegated.test", "hop.delegated.test")
	srv.SetCNAME("hop.delegated.test", "_acme-challenge.validation.test")
	srv.SetTXT("_acme-challenge.validation.test", want)
	srv.SetTXT("_acme-challenge.wrong.test", "foo", "bar")
	srv.SetTXT("_acme-challenge.many.test", "v1", "v2", "v3", "v4", "v5", "v6", "v7")
	srv.SetA("_acme-challenge.notxt.test", "192.0.2.1")
	srv.SetRcode("_acme-challenge.servfail.test", dns.TypeTXT, dns.RcodeServerFailure)
	srv.SetCNAME("_acme-challenge.dangling.test", "gone.validation.test")
	srv.SetTXT("_acme-challenge.hostile.test", "evil\x00\n\x1b[31m")

	tests := []struct {
		name     string
		ident    string
		chase    bool
		wantType string
		wantIn   []string
	}{
		{name: "direct TXT", ident: "direct.test", chase: true},
		{name: "CNAME chain", ident: "delegated.test", chase: true},
		{name: "CNAME chain hop by hop", ident: "delegated.test", chase: false},
		{name: "wrong value", ident: "wrong.test", chase: true, wantType: ProblemIncorrectResponse,
			wantIn: []string{`"foo"`, `"bar"`, "_acme-challenge.wrong.test", want}},
		{name: "many wrong values", ident: "many.test", chase: true, wantType: ProblemIncorrectResponse,
			wantIn: []string{`"v1"`, `"v5"`, "(and 2 more)"}},
		{name: "hostile value sanitised", ident: "hostile.test", chase: true, wantType: ProblemIncorrectResponse,
			wantIn: []string{`"evil???[31m"`}},
		{name: "no record", ident: "none.test", chase: true, wantType: ProblemUnauthorized,
			wantIn: []string{"no TXT record found at _acme-challenge.none.test"}},
		{name: "CNAME to nowhere", ident: "dangling.test", chase: true, wantType: ProblemUnauthorized,
			wantIn: []string{"no TXT record found at _acme-challenge.dangling.test (NXDOMAIN via CNAME gone.validation.test)"}},
		{name: "name without TXT", ident: "notxt.test", chase: true, wantType: ProblemUnauthorized,
			wantIn: []string{"no TXT record found at _acme-challenge.notxt.test"}},
		{name: "SERVFAIL", ident: "servfail.test", chase: true, wantType: ProblemDNS,
			wantIn: []string{"SERVFAIL looking up TXT for _acme-challenge.servfail.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetCNAMEChasing(tt.chase)
			err := (&DNS01{}).Validate(context.Background(), dnsChallenge("dns-01", tt.ident, r))
			wantProblem(t, err, tt.wantType, tt.wantIn...)
		})
	}
}

func TestDNS01BadInput(t *testing.T) {
	_, r := newDNS(t)
	chall := dnsChallenge("dns-01", "x.test", r)
	chall.Identifier = Identifier{Type: "ip", Value: "192.0.2.1"}
	wantProblem(t, (&DNS01{}).Validate(context.Background(), chall), ProblemRejected, "ip")

	chall.Identifier = Identifier{Type: "dns", Value: ""}
	wantProblem(t, (&DNS01{}).Validate(context.Background(), chall), ProblemRejected)
}

func TestDNS01Timeout(t *testing.T) {
	silent := silentUDPAddr(t)
	chall := dnsChallenge("dns-01", "slow.test", NewResolver([]string{silent}, 5*time.Second))
	v := &DNS01{Timeout: caddyDuration(150 * time.Millisecond)}
	start := time.Now()
	err := v.Validate(context.Background(), chall)
	wantProblem(t, err, ProblemDNS, "timed out", "_acme-challenge.slow.test")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("validation took %s, want about 150ms", d)
	}
}
