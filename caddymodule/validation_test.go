package caddymodule

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	"github.com/go-acme/lego/v5/lego"
	acmez "github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
)

// These tests drive validation end to end through the in-process Caddy:
// dns-01 (wildcards), tls-alpn-01, CAA (RFC 8659, RFC 8657), the identifier
// policy and IP identifiers (RFC 8738).

const acmeErrPrefix = "urn:ietf:params:acme:error:"

// txtProvider is a lego dns-01 provider that publishes the challenge
// records in the test DNS server the CA asks. Several values may live at
// one name at once (a wildcard and its base name share
// _acme-challenge.<name>).
type txtProvider struct {
	srv *testdns.Server
	mu  sync.Mutex
	txt map[string][]string // by _acme-challenge name
}

func newTXTProvider(srv *testdns.Server) *txtProvider {
	return &txtProvider{srv: srv, txt: map[string][]string{}}
}

// txtValue is the dns-01 record value: base64url(SHA-256(key authorization))
// (RFC 8555 §8.4), computed here rather than by the code under test.
func txtValue(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (p *txtProvider) Present(_ context.Context, domain, _, keyAuth string) error {
	name := "_acme-challenge." + domain
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txt[name] = append(p.txt[name], txtValue(keyAuth))
	p.srv.SetTXT(name, p.txt[name]...)
	return nil
}

func (p *txtProvider) CleanUp(_ context.Context, domain, _, keyAuth string) error {
	name := "_acme-challenge." + domain
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txt[name] = slices.DeleteFunc(p.txt[name], func(v string) bool { return v == txtValue(keyAuth) })
	if len(p.txt[name]) == 0 {
		delete(p.txt, name)
		p.srv.Clear(name)
		return nil
	}
	p.srv.SetTXT(name, p.txt[name]...)
	return nil
}

// Timeout keeps lego's propagation polling short: the records are there at
// once.
func (p *txtProvider) Timeout() (timeout, interval time.Duration) {
	return 10 * time.Second, 50 * time.Millisecond
}

// pointLegoDNS makes lego's own DNS lookups (CNAME following and the
// propagation check of dns-01) ask the test DNS server rather than the
// system's resolvers, until the test ends.
func pointLegoDNS(t *testing.T, ca *testCA) {
	t.Helper()
	old := dns01.DefaultClient()
	opts := dns01.NewOptions()
	opts.RecursiveNameservers = []string{ca.DNS.Addr()}
	opts.Timeout = 2 * time.Second
	dns01.SetDefaultClient(dns01.NewClient(opts))
	t.Cleanup(func() { dns01.SetDefaultClient(old) })
}

// legoClientFor returns a registered lego client that solves only the
// challenge type typ: "http-01", "dns-01" or "tls-alpn-01".
func (c *testCA) legoClientFor(t *testing.T, typ string) (*lego.Client, *legoUser) {
	t.Helper()
	user := &legoUser{email: "validation@example.test", key: newKey(t)}
	client := c.legoClient(t, user, true)
	switch typ {
	case "http-01":
		return client, user
	case "dns-01":
		pointLegoDNS(t, c)
		client.Challenge.Remove(challenge.HTTP01)
		// The recursive check against the test DNS server stays on; the
		// authoritative one would look for real name servers.
		if err := client.Challenge.SetDNS01Provider(newTXTProvider(c.DNS), dns01.DisableAuthoritativeNssPropagationRequirement()); err != nil {
			t.Fatal(err)
		}
	case "tls-alpn-01":
		client.Challenge.Remove(challenge.HTTP01)
		if err := client.Challenge.SetTLSALPN01Provider(tlsalpn01.NewProviderServer("127.0.0.1", strconv.Itoa(c.ALPNPort))); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown challenge type %s", typ)
	}
	return client, user
}

func legoObtain(client *lego.Client, names ...string) (*certificate.Resource, error) {
	return client.Certificate.Obtain(context.Background(), certificate.ObtainRequest{
		Domains: names,
		Bundle:  true,
		KeyType: certcrypto.EC256,
	})
}

// TestWildcardDNS01: a wildcard and its base name are proven by dns-01,
// both with a TXT record at the same _acme-challenge name, and the
// certificate names both.
func TestWildcardDNS01(t *testing.T) {
	ca := startCA(t, "")
	client, _ := ca.legoClientFor(t, "dns-01")

	names := []string{"wild.example.test", "*.wild.example.test"}
	res, err := legoObtain(client, names...)
	if err != nil {
		t.Fatalf("obtain: %v", err)
	}
	leaf := verifyLeaf(t, ca, res.Certificate, names)
	if err := leaf.VerifyHostname("anything.wild.example.test"); err != nil {
		t.Errorf("the wildcard does not cover a name below it: %v", err)
	}
	if err := leaf.VerifyHostname("a.b.wild.example.test"); err == nil {
		t.Error("the wildcard covers a name two labels below it")
	}
}

// TestWildcardAuthorization: a wildcard's authorization names the base
// domain, says wildcard, and offers dns-01 alone (RFC 8555 §7.1.3).
func TestWildcardAuthorization(t *testing.T) {
	ca := startCA(t, "")
	f := newAcmezFlow(t, ca)
	order, err := f.client.NewOrder(context.Background(), f.account, acmez.Order{
		Identifiers: []acmez.Identifier{{Type: "dns", Value: "*.only.example.test"}},
	})
	if err != nil {
		t.Fatalf("new order: %v", err)
	}
	authz, err := f.client.GetAuthorization(context.Background(), f.account, order.Authorizations[0])
	if err != nil {
		t.Fatalf("get authorization: %v", err)
	}
	if !authz.Wildcard || authz.Identifier.Value != "only.example.test" {
		t.Errorf("authorization wildcard=%v identifier %q, want true and only.example.test", authz.Wildcard, authz.Identifier.Value)
	}
	var types []string
	for _, c := range authz.Challenges {
		types = append(types, c.Type)
	}
	if !slices.Equal(types, []string{"dns-01"}) {
		t.Errorf("challenges offered for a wildcard: %v, want dns-01 only", types)
	}
}

// TestTLSALPN01Certificate issues a certificate proven by tls-alpn-01
// (RFC 8737).
func TestTLSALPN01Certificate(t *testing.T) {
	ca := startCA(t, "")
	client, _ := ca.legoClientFor(t, "tls-alpn-01")
	names := []string{"alpn.example.test", "www.alpn.example.test"}
	res, err := legoObtain(client, names...)
	if err != nil {
		t.Fatalf("obtain: %v", err)
	}
	verifyLeaf(t, ca, res.Certificate, names)
}

// TestCAAIssuance: CAA records are checked after the challenge, against the
// configured caa_identities, the account (accounturi) and the challenge type
// (validationmethods).
func TestCAAIssuance(t *testing.T) {
	ca := startCA(t, "caa_identities ca.example.test")
	httpClient, user := ca.legoClientFor(t, "http-01")
	dnsClient, _ := ca.legoClientFor(t, "dns-01")
	otherAccount := strings.TrimSuffix(user.reg.Location, "/") + "0"

	ca.DNS.SetCAA("denied.caa.test", 0, "issue", "other-ca.example")
	ca.DNS.SetCAA("allowed.caa.test", 0, "issue", "ca.example.test")
	ca.DNS.SetCAA("parent.test", 0, "issue", "other-ca.example")
	ca.DNS.SetCAA("acct.caa.test", 0, "issue", "ca.example.test; accounturi="+user.reg.Location)
	ca.DNS.SetCAA("otheracct.caa.test", 0, "issue", "ca.example.test; accounturi="+otherAccount)
	ca.DNS.SetCAA("dnsonly.caa.test", 0, "issue", "ca.example.test; validationmethods=dns-01")
	ca.DNS.SetCAA("httponly.caa.test", 0, "issue", "ca.example.test; validationmethods=http-01")
	ca.DNS.SetCAA("wild.caa.test", 0, "issue", "ca.example.test")
	ca.DNS.SetCAA("wild.caa.test", 0, "issuewild", ";")
	ca.DNS.SetCAA("critical.caa.test", 128, "tbs", "unknown")
	ca.DNS.SetCAA("critical.caa.test", 0, "issue", "ca.example.test")
	ca.DNS.SetRcode("servfail.caa.test", dns.TypeCAA, dns.RcodeServerFailure)

	tests := []struct {
		name    string
		client  *lego.Client
		domains []string
		wantIn  []string // detail contents of the caa problem; nil means issued
	}{
		{name: "issue names another CA", client: httpClient, domains: []string{"denied.caa.test"},
			wantIn: []string{"denied.caa.test", `0 issue "other-ca.example"`, "ca.example.test"}},
		{name: "issue names this CA", client: httpClient, domains: []string{"allowed.caa.test"}},
		{name: "record at the parent applies", client: httpClient, domains: []string{"www.sub.parent.test"},
			wantIn: []string{"parent.test", "www.sub.parent.test"}},
		{name: "accounturi is the account", client: httpClient, domains: []string{"acct.caa.test"}},
		{name: "accounturi is another account", client: httpClient, domains: []string{"otheracct.caa.test"},
			wantIn: []string{"accounturi", otherAccount}},
		{name: "validationmethods excludes http-01", client: httpClient, domains: []string{"dnsonly.caa.test"},
			wantIn: []string{"validationmethods dns-01", "http-01"}},
		{name: "validationmethods includes dns-01", client: dnsClient, domains: []string{"dnsonly.caa.test"}},
		{name: "validationmethods excludes dns-01", client: dnsClient, domains: []string{"httponly.caa.test"},
			wantIn: []string{"validationmethods http-01", "dns-01"}},
		{name: "issuewild forbids the wildcard", client: dnsClient, domains: []string{"*.wild.caa.test"},
			wantIn: []string{"*.wild.caa.test", "issuewild"}},
		{name: "issuewild leaves the base name", client: dnsClient, domains: []string{"wild.caa.test"}},
		{name: "unknown critical property", client: httpClient, domains: []string{"critical.caa.test"},
			wantIn: []string{"tbs"}},
		{name: "SERVFAIL refuses", client: httpClient, domains: []string{"servfail.caa.test"},
			wantIn: []string{"SERVFAIL", "servfail.caa.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := legoObtain(tt.client, tt.domains...)
			if tt.wantIn == nil {
				if err != nil {
					t.Fatalf("obtain: %v", err)
				}
				verifyLeaf(t, ca, res.Certificate, tt.domains)
				return
			}
			pd := assertProblem(t, err, acmeErrPrefix+"caa")
			for _, s := range tt.wantIn {
				if !strings.Contains(pd.Detail, s) {
					t.Errorf("caa detail %q does not contain %q", pd.Detail, s)
				}
			}
		})
	}
}

// TestCAAAuthorizationError: the refusal is recorded on the challenge and
// the authorization becomes invalid, as a step-by-step client sees it.
func TestCAAAuthorizationError(t *testing.T) {
	ca := startCA(t, "caa_identities ca.example.test")
	ca.DNS.SetCAA("stepwise.caa.test", 0, "issue", "other-ca.example")
	responder := serveHTTP01(t, ca.ChallPort)
	f := newAcmezFlow(t, ca, "stepwise.caa.test")
	f.newOrder()
	authzs := f.answerChallenges(responder)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := f.client.PollAuthorization(ctx, f.account, authzs[0])
	if err == nil {
		t.Fatal("authorization became valid despite CAA")
	}
	got, gerr := f.client.GetAuthorization(ctx, f.account, authzs[0].Location)
	if gerr != nil {
		t.Fatalf("get authorization: %v", gerr)
	}
	if got.Status != "invalid" {
		t.Fatalf("authorization is %s, want invalid", got.Status)
	}
	var chal *acmez.Challenge
	for i := range got.Challenges {
		if got.Challenges[i].Type == "http-01" {
			chal = &got.Challenges[i]
		}
	}
	if chal == nil || chal.Status != "invalid" || chal.Error == nil {
		t.Fatalf("http-01 challenge = %+v, want invalid with an error", chal)
	}
	if chal.Error.Type != acmeErrPrefix+"caa" || chal.Error.Status != 403 {
		t.Errorf("challenge error %s (status %d), want %scaa (403)", chal.Error.Type, chal.Error.Status, acmeErrPrefix)
	}
	if !strings.Contains(chal.Error.Detail, "other-ca.example") {
		t.Errorf("challenge error detail %q does not name the record", chal.Error.Detail)
	}
}

// TestCAADefaultIdentity: without caa_identities, the CA's identity is the
// host name clients reach it at.
func TestCAADefaultIdentity(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host = strings.ToLower(host)
	ca := startCA(t, "")
	client, _ := ca.legoClientFor(t, "http-01")
	ca.DNS.SetCAA("host.caa.test", 0, "issue", host)
	ca.DNS.SetCAA("named.caa.test", 0, "issue", "ca.example.test")

	res, err := legoObtain(client, "host.caa.test")
	if err != nil {
		t.Fatalf("obtain with issue naming the machine's host name: %v", err)
	}
	verifyLeaf(t, ca, res.Certificate, []string{"host.caa.test"})

	_, err = legoObtain(client, "named.caa.test")
	pd := assertProblem(t, err, acmeErrPrefix+"caa")
	if !strings.Contains(pd.Detail, host) {
		t.Errorf("caa detail %q does not name the CA's identity %s", pd.Detail, host)
	}

	// The Host a client sends (here "localhost") is not an identity: a
	// client must not pick which CA's CAA records count.
	if host != "localhost" {
		ca.DNS.SetCAA("forged.caa.test", 0, "issue", "localhost")
		_, err = legoObtain(client, "forged.caa.test")
		assertProblem(t, err, acmeErrPrefix+"caa")
	}
}

// TestCAAOff: with caa off, CAA records are not consulted.
func TestCAAOff(t *testing.T) {
	ca := startCA(t, "caa off")
	client, _ := ca.legoClientFor(t, "http-01")
	ca.DNS.SetCAA("ignored.caa.test", 0, "issue", ";")
	if _, err := legoObtain(client, "ignored.caa.test"); err != nil {
		t.Fatalf("obtain with caa off: %v", err)
	}
}

// TestPolicyDenyDomains: newOrder refuses what the policy denies, with one
// subproblem per identifier (RFC 8555 §6.7.1).
func TestPolicyDenyDomains(t *testing.T) {
	ca := startCA(t, "policy {\n\t\t\tdeny_domains *.denied.test\n\t\t\tmax_identifiers 3\n\t\t}")
	client, _ := ca.legoClientFor(t, "http-01")

	t.Run("two denied names", func(t *testing.T) {
		_, err := legoObtain(client, "x.denied.test", "y.denied.test")
		pd := assertProblem(t, err, acmeErrPrefix+"compound")
		if pd.HTTPStatus != 400 {
			t.Errorf("status %d, want 400", pd.HTTPStatus)
		}
		if len(pd.SubProblems) != 2 {
			t.Fatalf("%d subproblems, want 2: %+v", len(pd.SubProblems), pd.SubProblems)
		}
		var ids []string
		for _, sp := range pd.SubProblems {
			if sp.Type != acmeErrPrefix+"rejectedIdentifier" {
				t.Errorf("subproblem for %s has type %s, want rejectedIdentifier", sp.Identifier.Value, sp.Type)
			}
			if sp.Identifier.Type != "dns" {
				t.Errorf("subproblem identifier type %q, want dns", sp.Identifier.Type)
			}
			if !strings.Contains(sp.Detail, "*.denied.test") {
				t.Errorf("subproblem detail %q does not name the pattern", sp.Detail)
			}
			ids = append(ids, sp.Identifier.Value)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"x.denied.test", "y.denied.test"}) {
			t.Errorf("subproblem identifiers %v, want x.denied.test and y.denied.test", ids)
		}
	})
	t.Run("one denied among allowed", func(t *testing.T) {
		_, err := legoObtain(client, "ok.example.test", "z.denied.test")
		pd := assertProblem(t, err, acmeErrPrefix+"rejectedIdentifier")
		if len(pd.SubProblems) != 1 || pd.SubProblems[0].Identifier.Value != "z.denied.test" {
			t.Errorf("subproblems %+v, want one for z.denied.test", pd.SubProblems)
		}
	})
	t.Run("denied wildcard", func(t *testing.T) {
		_, err := legoObtain(client, "*.denied.test")
		assertProblem(t, err, acmeErrPrefix+"rejectedIdentifier")
	})
	t.Run("the pattern's base name is not denied", func(t *testing.T) {
		res, err := legoObtain(client, "denied.test")
		if err != nil {
			t.Fatalf("obtain: %v", err)
		}
		verifyLeaf(t, ca, res.Certificate, []string{"denied.test"})
	})
	t.Run("more than max_identifiers", func(t *testing.T) {
		_, err := legoObtain(client, "a.example.test", "b.example.test", "c.example.test", "d.example.test")
		pd := assertProblem(t, err, acmeErrPrefix+"rejectedIdentifier")
		if !strings.Contains(pd.Detail, "3") {
			t.Errorf("detail %q does not name the limit", pd.Detail)
		}
	})
	t.Run("public suffix", func(t *testing.T) {
		_, err := legoObtain(client, "co.uk")
		assertProblem(t, err, acmeErrPrefix+"rejectedIdentifier")
	})
	t.Run("IP addresses are off by default", func(t *testing.T) {
		_, err := legoObtain(client, "127.0.0.1")
		pd := assertProblem(t, err, acmeErrPrefix+"unsupportedIdentifier")
		if len(pd.SubProblems) != 1 || pd.SubProblems[0].Identifier.Type != "ip" {
			t.Errorf("subproblems %+v, want one for the ip identifier", pd.SubProblems)
		}
	})
}

// TestPolicyIPIdentifiers: with ip_identifiers on, an IP address is proven
// by http-01 or tls-alpn-01 but never dns-01 (RFC 8738 §7), and the
// certificate carries it as an iPAddress SAN.
func TestPolicyIPIdentifiers(t *testing.T) {
	ca := startCA(t, "policy {\n\t\t\tip_identifiers on\n\t\t\tallow_ip_ranges 127.0.0.0/8\n\t\t}")

	for _, typ := range []string{"http-01", "tls-alpn-01"} {
		t.Run(typ, func(t *testing.T) {
			client, _ := ca.legoClientFor(t, typ)
			res, err := legoObtain(client, "127.0.0.1")
			if err != nil {
				t.Fatalf("obtain: %v", err)
			}
			verifyIPLeaf(t, ca, res.Certificate, "127.0.0.1")
		})
	}
	t.Run("outside allow_ip_ranges", func(t *testing.T) {
		client, _ := ca.legoClientFor(t, "http-01")
		_, err := legoObtain(client, "192.0.2.1")
		pd := assertProblem(t, err, acmeErrPrefix+"rejectedIdentifier")
		if !strings.Contains(pd.Detail, "192.0.2.1") {
			t.Errorf("detail %q does not name the address", pd.Detail)
		}
	})
	t.Run("no dns-01 for an IP", func(t *testing.T) {
		f := newAcmezFlow(t, ca)
		order, err := f.client.NewOrder(context.Background(), f.account, acmez.Order{
			Identifiers: []acmez.Identifier{{Type: "ip", Value: "127.0.0.1"}},
		})
		if err != nil {
			t.Fatalf("new order: %v", err)
		}
		authz, err := f.client.GetAuthorization(context.Background(), f.account, order.Authorizations[0])
		if err != nil {
			t.Fatalf("get authorization: %v", err)
		}
		if authz.Identifier.Type != "ip" || authz.Identifier.Value != "127.0.0.1" {
			t.Errorf("authorization identifier %+v, want ip 127.0.0.1", authz.Identifier)
		}
		var types []string
		for _, c := range authz.Challenges {
			types = append(types, c.Type)
		}
		slices.Sort(types)
		if !slices.Equal(types, []string{"http-01", "tls-alpn-01"}) {
			t.Errorf("challenges offered for an IP: %v, want http-01 and tls-alpn-01", types)
		}
	})
}

// verifyIPLeaf checks that a PEM chain's leaf names exactly ip, as an
// iPAddress SAN and no DNS name, and chains to the CA's root.
func verifyIPLeaf(t *testing.T, ca *testCA, chainPEM []byte, ip string) {
	t.Helper()
	chain := parsePEMCerts(t, chainPEM)
	leaf := chain[0]
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP(ip)) {
		t.Errorf("certificate IP addresses %v, want [%s]", leaf.IPAddresses, ip)
	}
	if len(leaf.DNSNames) != 0 {
		t.Errorf("certificate DNS names %v, want none", leaf.DNSNames)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       ip,
		Roots:         ca.Roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("certificate does not verify for %s: %v", ip, err)
	}
}
