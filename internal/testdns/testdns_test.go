package testdns

import (
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

func query(t *testing.T, s *Server, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(4096, false)
	}
	c := &dns.Client{Net: network}
	resp, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

func TestAnswers(t *testing.T) {
	s := Start(t)
	s.SetA("Mixed.Case.test.", "192.0.2.1", "2001:db8::1")
	s.SetTXT("txt.test", "a", "b")
	s.SetCNAME("alias.test", "mixed.case.test")
	s.SetCAA("caa.test", 0, "issue", "ca.test")
	s.SetCAA("caa.test", 128, "iodef", "mailto:x@caa.test")
	s.SetRcode("fail.test", dns.TypeTXT, dns.RcodeServerFailure)
	s.SetTXT("fail.test", "unreachable")

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		answers []string // record types in order
	}{
		{"A, other case", "mixed.CASE.test", dns.TypeA, dns.RcodeSuccess, []string{"A"}},
		{"AAAA", "mixed.case.test", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA"}},
		{"TXT", "txt.test", dns.TypeTXT, dns.RcodeSuccess, []string{"TXT", "TXT"}},
		{"no records of type", "txt.test", dns.TypeA, dns.RcodeSuccess, nil},
		{"CNAME chased", "alias.test", dns.TypeA, dns.RcodeSuccess, []string{"CNAME", "A"}},
		{"CNAME asked for", "alias.test", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME"}},
		{"CAA appended", "caa.test", dns.TypeCAA, dns.RcodeSuccess, []string{"CAA", "CAA"}},
		{"forced rcode", "fail.test", dns.TypeTXT, dns.RcodeServerFailure, nil},
		{"forced rcode is per type", "fail.test", dns.TypeCAA, dns.RcodeSuccess, nil},
		{"unknown name", "nope.test", dns.TypeA, dns.RcodeNameError, nil},
		{"unknown name TXT", "nope.test", dns.TypeTXT, dns.RcodeNameError, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				resp := query(t, s, network, tt.qname, tt.qtype, false)
				if resp.Rcode != tt.rcode {
					t.Errorf("%s: rcode %s, want %s", network, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
				}
				var got []string
				for _, rr := range resp.Answer {
					got = append(got, dns.TypeToString[rr.Header().Rrtype])
				}
				if strings.Join(got, ",") != strings.Join(tt.answers, ",") {
					t.Errorf("%s: answer types %v, want %v", network, got, tt.answers)
				}
			}
		})
	}

	s.Clear("MIXED.case.test")
	if resp := query(t, s, "udp", "mixed.case.test", dns.TypeA, false); resp.Rcode != dns.RcodeNameError {
		t.Errorf("after Clear: rcode %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
	s.Clear("fail.test")
	if resp := query(t, s, "udp", "fail.test", dns.TypeTXT, false); resp.Rcode != dns.RcodeNameError {
		t.Errorf("after Clear: forced rcode survived: %s", dns.RcodeToString[resp.Rcode])
	}
}

func TestDefaultA(t *testing.T) {
	s := Start(t)
	s.SetDefaultA("127.0.0.1", "::1")
	s.SetA("own.test", "192.0.2.9")
	s.SetCAA("caa.test", 0, "issue", "ca.test")

	a := query(t, s, "udp", "anything.test", dns.TypeA, false)
	if a.Rcode != dns.RcodeSuccess || len(a.Answer) != 1 || a.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Errorf("default A: %v", a)
	}
	aaaa := query(t, s, "udp", "anything.test", dns.TypeAAAA, false)
	if len(aaaa.Answer) != 1 || aaaa.Answer[0].(*dns.AAAA).AAAA.String() != "::1" {
		t.Errorf("default AAAA: %v", aaaa)
	}
	if own := query(t, s, "udp", "own.test", dns.TypeA, false); len(own.Answer) != 1 || own.Answer[0].(*dns.A).A.String() != "192.0.2.9" {
		t.Errorf("own records must win over the default: %v", own)
	}
	if caa := query(t, s, "udp", "caa.test", dns.TypeA, false); len(caa.Answer) != 1 {
		t.Errorf("a name with only CAA still gets the default address: %v", caa)
	}
	txt := query(t, s, "udp", "anything.test", dns.TypeTXT, false)
	if txt.Rcode != dns.RcodeSuccess || len(txt.Answer) != 0 {
		t.Errorf("other types on default names: rcode %s, %d answers; want NOERROR, none", dns.RcodeToString[txt.Rcode], len(txt.Answer))
	}
	s.SetDefaultA()
	if resp := query(t, s, "udp", "anything.test", dns.TypeA, false); resp.Rcode != dns.RcodeNameError {
		t.Errorf("default off: rcode %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
}

func TestTruncation(t *testing.T) {
	s := Start(t)
	var vals []string
	for range 5 {
		vals = append(vals, strings.Repeat("x", 200))
	}
	s.SetTXT("big.test", vals...)

	if resp := query(t, s, "udp", "big.test", dns.TypeTXT, false); !resp.Truncated || len(resp.Answer) == len(vals) {
		t.Errorf("UDP without EDNS: truncated=%v with %d answers, want truncation", resp.Truncated, len(resp.Answer))
	}
	if resp := query(t, s, "udp", "big.test", dns.TypeTXT, true); resp.Truncated || len(resp.Answer) != len(vals) {
		t.Errorf("UDP with EDNS 4096: truncated=%v with %d answers, want all", resp.Truncated, len(resp.Answer))
	}
	if resp := query(t, s, "tcp", "big.test", dns.TypeTXT, false); resp.Truncated || len(resp.Answer) != len(vals) {
		t.Errorf("TCP: truncated=%v with %d answers, want all", resp.Truncated, len(resp.Answer))
	}
	if s.QueryCount("udp") != 2 || s.QueryCount("tcp") != 1 {
		t.Errorf("query counts udp=%d tcp=%d", s.QueryCount("udp"), s.QueryCount("tcp"))
	}
}

func TestLongTXTSplit(t *testing.T) {
	s := Start(t)
	long := strings.Repeat("y", 600)
	s.SetTXT("long.test", long)
	resp := query(t, s, "tcp", "long.test", dns.TypeTXT, false)
	if len(resp.Answer) != 1 {
		t.Fatalf("%d answers", len(resp.Answer))
	}
	parts := resp.Answer[0].(*dns.TXT).Txt
	if len(parts) != 3 || strings.Join(parts, "") != long {
		t.Errorf("got %d strings, joined length %d", len(parts), len(strings.Join(parts, "")))
	}
}

func TestConcurrentMutation(t *testing.T) {
	s := Start(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 50 {
				s.SetTXT("race.test", strings.Repeat("z", i+1))
				s.SetA("race.test", "192.0.2.1")
				s.Clear("race.test")
			}
		}()
		go func() {
			defer wg.Done()
			c := new(dns.Client)
			m := new(dns.Msg).SetQuestion("race.test.", dns.TypeTXT)
			for range 50 {
				// t.Fatal must not run off the test goroutine.
				if _, _, err := c.Exchange(m, s.Addr()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
