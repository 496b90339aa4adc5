package main

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// dnsServer answers both CAs' lookups, over UDP and TCP on one loopback
// port: A 127.0.0.1 for every name, so every validation lands on the
// bench; no AAAA and no CAA (empty NOERROR answers, so CAA allows
// issuance); and the TXT records the bench sets for dns-01.
type dnsServer struct {
	addr    string
	udp     *dns.Server
	tcp     *dns.Server
	txt     sync.Map // lower-case FQDN → string, the dns-01 digest
	queries atomic.Int64
}

var loopback = net.IPv4(127, 0, 0, 1)

func startDNS() (*dnsServer, error) {
	d := &dnsServer{}
	var pc net.PacketConn
	var ln net.Listener
	// UDP first, on any port, then TCP on the same one; retry if that port
	// is taken for TCP.
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("dns: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			return nil, fmt.Errorf("dns: no port free for both UDP and TCP: %v", err)
		}
	}
	d.addr = pc.LocalAddr().String()
	d.udp = &dns.Server{PacketConn: pc, Handler: d}
	d.tcp = &dns.Server{Listener: ln, Handler: d}
	for _, srv := range []*dns.Server{d.udp, d.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
	}
	return d, nil
}

func (d *dnsServer) close() {
	_ = d.udp.Shutdown()
	_ = d.tcp.Shutdown()
}

// setTXT publishes the dns-01 record of name; clearTXT removes it.
func (d *dnsServer) setTXT(name, value string) { d.txt.Store(fqdn(name), value) }
func (d *dnsServer) clearTXT(name string)      { d.txt.Delete(fqdn(name)) }

func fqdn(name string) string { return dns.Fqdn(strings.ToLower(name)) }

// ServeDNS implements dns.Handler.
func (d *dnsServer) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	d.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	for _, question := range q.Question {
		hdr := dns.RR_Header{Name: question.Name, Class: dns.ClassINET, Ttl: 60}
		switch question.Qtype {
		case dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: loopback})
		case dns.TypeTXT:
			if v, ok := d.txt.Load(fqdn(question.Name)); ok {
				hdr.Rrtype = dns.TypeTXT
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{v.(string)}})
			}
		}
		// AAAA, CAA and everything else: no records, NOERROR.
	}
	_ = w.WriteMsg(m)
}

// Interface guard
var _ dns.Handler = (*dnsServer)(nil)
