package validate

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestResolverLookupIP(t *testing.T) {
	srv, r := newDNS(t)
	srv.SetA("both.test", "127.0.0.1", "::1")
	srv.SetA("v4.test", "192.0.2.7")
	srv.SetCNAME("alias.test", "v4.test")
	srv.SetTXT("txtonly.test", "hello")
	srv.SetRcode("broken.test", dns.TypeANY, dns.RcodeServerFailure)
	srv.SetRcode("halfbroken.test", dns.TypeAAAA, dns.RcodeServerFailure)
	srv.SetA("halfbroken.test", "192.0.2.8")

	tests := []struct {
		name    string
		query   string
		want    []string
		errWant []string
	}{
		{name: "IPv6 first", query: "both.test", want: []string{"::1", "127.0.0.1"}},
		{name: "case and trailing dot", query: "BOTH.test.", want: []string{"::1", "127.0.0.1"}},
		{name: "CNAME followed", query: "alias.test", want: []string{"192.0.2.7"}},
		{name: "one family failing is tolerated", query: "halfbroken.test", want: []string{"192.0.2.8"}},
		{name: "NXDOMAIN", query: "nx.test", errWant: []string{"DNS problem: NXDOMAIN looking up A/AAAA for nx.test", srv.Addr()}},
		{name: "no addresses", query: "txtonly.test", errWant: []string{"no A or AAAA records found for txtonly.test"}},
		{name: "SERVFAIL", query: "broken.test", errWant: []string{"SERVFAIL looking up A/AAAA for broken.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ips, err := r.LookupIP(context.Background(), tt.query)
			if tt.errWant != nil {
				wantProblem(t, err, ProblemDNS, tt.errWant...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range ips {
				got = append(got, ip.String())
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("LookupIP(%s) = %v, want %v", tt.query, got, tt.want)
			}
		})
	}
}

func TestResolverLookupTXT(t *testing.T) {
	srv, r := newDNS(t)
	long := strings.Repeat("abcdefghij", 60) // 600 bytes: three strings in one record
	srv.SetTXT("long.test", long)
	srv.SetTXT("two.test", "one", "two")
	raw := "back\\slash \"quote\" \x00\x7f\xff\\"
	srv.SetTXT("raw.test", raw)
	srv.SetCNAME("hop1.test", "hop2.test")
	srv.SetCNAME("hop2.test", "target.test")
	srv.SetTXT("target.test", "at the end")
	srv.SetCNAME("loop1.test", "loop2.test")
	srv.SetCNAME("loop2.test", "loop1.test")
	srv.SetCNAME("dangling.test", "gone.test")
	srv.SetA("empty.test", "192.0.2.1")
	srv.SetRcode("_acme-challenge.example.test", dns.TypeTXT, dns.RcodeServerFailure)
	srv.SetRcode("refused.test", dns.TypeTXT, dns.RcodeRefused)
	for i := range 10 {
		srv.SetCNAME("chain"+string(rune('0'+i))+".test", "chain"+string(rune('1'+i))+".test")
	}

	tests := []struct {
		name    string
		query   string
		chase   bool
		want    []string
		errWant []string
	}{
		{name: "strings of one record joined", query: "long.test", chase: true, want: []string{long}},
		{name: "raw bytes round trip", query: "raw.test", chase: true, want: []string{raw}},
		{name: "several records", query: "two.test", chase: true, want: []string{"one", "two"}},
		{name: "CNAME chain in one answer", query: "hop1.test", chase: true, want: []string{"at the end"}},
		{name: "CNAME chain asked hop by hop", query: "hop1.test", chase: false, want: []string{"at the end"}},
		{name: "no TXT records", query: "empty.test", chase: true, want: nil},
		{name: "CNAME loop", query: "loop1.test", chase: true, errWant: []string{"too many CNAMEs", "loop1.test"}},
		{name: "CNAME loop hop by hop", query: "loop1.test", chase: false, errWant: []string{"too many CNAMEs"}},
		{name: "chain longer than 8", query: "chain0.test", chase: false, errWant: []string{"too many CNAMEs"}},
		{name: "NXDOMAIN", query: "nx.test", chase: true, errWant: []string{"NXDOMAIN looking up TXT for nx.test"}},
		{name: "NXDOMAIN at CNAME target", query: "dangling.test", chase: true, errWant: []string{"NXDOMAIN looking up TXT for dangling.test (via CNAME gone.test)"}},
		{name: "SERVFAIL", query: "_acme-challenge.example.test", chase: true,
			errWant: []string{"DNS problem: SERVFAIL looking up TXT for _acme-challenge.example.test", "server " + srv.Addr()}},
		{name: "REFUSED", query: "refused.test", chase: true, errWant: []string{"REFUSED looking up TXT for refused.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetCNAMEChasing(tt.chase)
			got, err := r.LookupTXT(context.Background(), tt.query)
			if tt.errWant != nil {
				wantProblem(t, err, ProblemDNS, tt.errWant...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("LookupTXT(%s) = %q, want %q", tt.query, got, tt.want)
			}
		})
	}
}

// A TXT answer too big for the advertised UDP size comes back truncated;
// the resolver must ask again over TCP and return the whole answer.
func TestResolverTCPFallbackOnTruncation(t *testing.T) {
	srv, r := newDNS(t)
	var values []string
	for i := range 12 {
		values = append(values, strings.Repeat(string(rune('a'+i)), 200))
	}
	srv.SetTXT("big.test", values...)

	got, err := r.LookupTXT(context.Background(), "big.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(values) {
		t.Fatalf("got %d records, want %d", len(got), len(values))
	}
	for i := range values {
		if got[i] != values[i] {
			t.Errorf("record %d = %.10q..., want %.10q...", i, got[i], values[i])
		}
	}
	if srv.QueryCount("udp") != 1 || srv.QueryCount("tcp") != 1 {
		t.Errorf("queries: udp=%d tcp=%d, want one of each", srv.QueryCount("udp"), srv.QueryCount("tcp"))
	}
}

func TestResolverLookupCAA(t *testing.T) {
	srv, r := newDNS(t)
	srv.SetCAA("caa.test", 0, "issue", "ca.example")
	srv.SetCAA("caa.test", 128, "issuewild", ";")
	srv.SetCNAME("www.caa.test", "caa.test")
	srv.SetA("nocaa.test", "192.0.2.1")
	srv.SetRcode("broken.test", dns.TypeCAA, dns.RcodeServerFailure)

	tests := []struct {
		name    string
		query   string
		want    []string
		errWant []string
	}{
		{name: "records", query: "caa.test", want: []string{"0 issue ca.example", "128 issuewild ;"}},
		{name: "through CNAME", query: "www.caa.test", want: []string{"0 issue ca.example", "128 issuewild ;"}},
		{name: "NXDOMAIN is empty", query: "nx.test"},
		{name: "NOERROR without records is empty", query: "nocaa.test"},
		{name: "SERVFAIL is an error", query: "broken.test", errWant: []string{"SERVFAIL looking up CAA for broken.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := r.LookupCAA(context.Background(), tt.query)
			if tt.errWant != nil {
				wantProblem(t, err, ProblemDNS, tt.errWant...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range recs {
				got = append(got, strings.Join([]string{strconv.Itoa(int(c.Flag)), c.Tag, c.Value}, " "))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("LookupCAA(%s) = %q, want %q", tt.query, got, tt.want)
			}
		})
	}
}

// closedUDPAddr returns a loopback address where nothing listens, so a
// query there fails at once with "connection refused".
func closedUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// silentUDPAddr returns a loopback address that accepts queries and never
// answers.
func silentUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func TestResolverServerFallback(t *testing.T) {
	srv, _ := newDNS(t)
	srv.SetTXT("x.test", "found")
	dead := closedUDPAddr(t)

	r := NewResolver([]string{dead, srv.Addr()}, time.Second)
	got, err := r.LookupTXT(context.Background(), "x.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "found" {
		t.Errorf("got %q", got)
	}

	r = NewResolver([]string{dead}, time.Second)
	_, err = r.LookupTXT(context.Background(), "x.test")
	wantProblem(t, err, ProblemDNS, "networking error", "looking up TXT for x.test", dead)
}

func TestResolverTimeout(t *testing.T) {
	silent := silentUDPAddr(t)
	r := NewResolver([]string{silent}, 150*time.Millisecond)
	start := time.Now()
	_, err := r.LookupTXT(context.Background(), "slow.test")
	wantProblem(t, err, ProblemDNS, "query timed out looking up TXT for slow.test", silent)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("lookup took %s, want about the 150ms timeout", d)
	}

	// The caller's context wins when it is shorter.
	r = NewResolver([]string{silent}, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = r.LookupCAA(ctx, "slow.test")
	wantProblem(t, err, ProblemDNS, "timed out looking up CAA for slow.test")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("lookup took %s, want about the 100ms context deadline", d)
	}
}

func TestNewResolverDefaults(t *testing.T) {
	r := NewResolver(nil, 0)
	if len(r.Servers()) == 0 {
		t.Fatal("no servers")
	}
	for _, s := range r.Servers() {
		if _, _, err := net.SplitHostPort(s); err != nil {
			t.Errorf("server %q is not host:port: %v", s, err)
		}
	}
	if r.timeout != DefaultDNSTimeout {
		t.Errorf("timeout = %s, want %s", r.timeout, DefaultDNSTimeout)
	}
}
