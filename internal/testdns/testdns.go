// Package testdns is a small, real DNS server on loopback for tests. It
// answers over UDP and TCP on the same port, so code under test talks to it
// exactly as it would talk to a recursive resolver, including truncation and
// the retry over TCP that follows.
//
// Records are set per name; names are case-insensitive and may be given with
// or without the trailing dot. All methods are safe to call while the server
// is answering queries.
package testdns

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ttl is short because nothing in tests caches, but a zero TTL looks odd
// in dig output when debugging.
const ttl = 60

// maxChase bounds how many CNAMEs the server follows inside one answer, so a
// CNAME loop set up by a test cannot make the server spin.
const maxChase = 16

// Server is a running DNS server. Create it with Start.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu        sync.RWMutex
	names     map[string]*rrset // keyed by canonical FQDN
	rcodes    map[rcodeKey]int
	defaultIP []net.IP
	noChase   bool
	queries   map[string]int // by network: "udp", "tcp"
}

type rrset struct {
	ips   []net.IP
	txt   [][]string // one entry per TXT record, already split into ≤255-byte strings
	cname string     // canonical FQDN, or "" when not an alias
	caa   []*dns.CAA
}

type rcodeKey struct {
	name  string
	qtype uint16
}

// Start listens on 127.0.0.1 on an ephemeral port, UDP and TCP on the same
// port, and stops the server when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		names:   make(map[string]*rrset),
		rcodes:  make(map[rcodeKey]int),
		queries: make(map[string]int),
	}

	pc, ln, err := listenPair()
	if err != nil {
		t.Fatalf("testdns: %v", err)
	}
	s.addr = pc.LocalAddr().String()

	s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
	s.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(s.serve)}

	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		// Wait, because Shutdown on a server that has not started yet
		// fails and would leave the goroutine running.
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatalf("testdns: server on %s did not start", s.addr)
		}
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.udp.ShutdownContext(ctx)
		_ = s.tcp.ShutdownContext(ctx)
	})
	return s
}

// listenPair opens UDP and TCP sockets on the same loopback port. The UDP
// port is chosen by the kernel, and another process may hold the TCP side
// of it, so it tries a few times.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		lastErr = err
		pc.Close()
	}
	return nil, nil, lastErr
}

// Addr is the "127.0.0.1:port" the server answers on, for both UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// SetA replaces the address records of name. Each IP becomes an A or an
// AAAA record according to its family. Strings that are not IP addresses
// are ignored.
func (s *Server) SetA(name string, ips ...string) {
	parsed := make([]net.IP, 0, len(ips))
	for _, ip := range ips {
		if p := net.ParseIP(ip); p != nil {
			parsed = append(parsed, p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set(name).ips = parsed
}

// SetTXT replaces the TXT records of name, one record per value. Values are
// raw bytes, sent as given. A value longer than 255 bytes is split into
// several strings of one record, as a zone file would, so clients must join
// them back.
func (s *Server) SetTXT(name string, values ...string) {
	recs := make([][]string, 0, len(values))
	for _, v := range values {
		recs = append(recs, splitTXT(v))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set(name).txt = recs
}

// SetCNAME makes name an alias of target. The server chases the chain inside
// its own data and returns all of it, as a recursive resolver would, unless
// SetCNAMEChasing(false) was called.
func (s *Server) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set(name).cname = dns.CanonicalName(target)
}

// SetCAA appends a CAA record to name.
func (s *Server) SetCAA(name string, flag uint8, tag, value string) {
	key := dns.CanonicalName(name)
	rr := &dns.CAA{
		Hdr:   dns.RR_Header{Name: key, Rrtype: dns.TypeCAA, Class: dns.ClassINET, Ttl: ttl},
		Flag:  flag,
		Tag:   tag,
		Value: value,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.set(name)
	rs.caa = append(rs.caa, rr)
}

// SetRcode forces every query for name and qtype to fail with rcode (for
// example dns.RcodeServerFailure). A qtype of dns.TypeANY forces it for all
// query types. The forced rcode also applies when name is reached through a
// CNAME.
func (s *Server) SetRcode(name string, qtype uint16, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcodes[rcodeKey{dns.CanonicalName(name), qtype}] = rcode
}

// Clear removes every record and forced rcode of name.
func (s *Server) Clear(name string) {
	key := dns.CanonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.names, key)
	for k := range s.rcodes {
		if k.name == key {
			delete(s.rcodes, k)
		}
	}
}

// SetDefaultA answers A and AAAA queries with ips for every name that has
// neither address records nor a CNAME of its own, including names not set
// at all. Integration tests use it to point every name at 127.0.0.1 while
// still setting TXT or CAA records on some of them. Call it with no
// arguments to turn it off.
func (s *Server) SetDefaultA(ips ...string) {
	parsed := make([]net.IP, 0, len(ips))
	for _, ip := range ips {
		if p := net.ParseIP(ip); p != nil {
			parsed = append(parsed, p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultIP = parsed
}

// SetCNAMEChasing chooses whether answers for an alias carry the whole
// chain (on, the default, like a recursive resolver) or only the first
// CNAME record (off, like an authoritative server for a zone that does not
// hold the target), which makes the client query the target itself.
func (s *Server) SetCNAMEChasing(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noChase = !on
}

// QueryCount is how many queries arrived over network ("udp" or "tcp").
func (s *Server) QueryCount(network string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.queries[network]
}

// set returns the record set of name, creating it. Callers hold s.mu.
func (s *Server) set(name string) *rrset {
	key := dns.CanonicalName(name)
	rs := s.names[key]
	if rs == nil {
		rs = &rrset{}
		s.names[key] = rs
	}
	return rs
}

func splitTXT(v string) []string {
	if v == "" {
		return []string{""}
	}
	var parts []string
	for len(v) > 255 {
		parts = append(parts, escapeTXT(v[:255]))
		v = v[255:]
	}
	return append(parts, escapeTXT(v))
}

// escapeTXT protects backslashes, because miekg/dns reads TXT strings in
// presentation format (where "\" starts an escape) when it packs them,
// and tests mean the bytes they pass.
func escapeTXT(s string) string { return strings.ReplaceAll(s, `\`, `\\`) }

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}

	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true

	s.mu.Lock()
	s.queries[network]++
	s.mu.Unlock()

	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		resp.Rcode = dns.RcodeFormatError
	} else {
		s.answer(resp, req.Question[0])
	}

	size := dns.MaxMsgSize
	if network == "udp" {
		size = dns.MinMsgSize
	}
	if opt := req.IsEdns0(); opt != nil {
		if network == "udp" {
			size = int(opt.UDPSize())
		}
		resp.SetEdns0(opt.UDPSize(), false)
	}
	// Truncate sets TC when records had to be dropped, which is what makes
	// clients retry over TCP.
	resp.Truncate(size)
	_ = w.WriteMsg(resp)
}

// answer fills resp for q from the configured data.
func (s *Server) answer(resp *dns.Msg, q dns.Question) {
	s.mu.RLock()
	defer s.mu.RUnlock()

	name := dns.CanonicalName(q.Name)
	for hop := 0; ; hop++ {
		if rc, ok := s.forced(name, q.Qtype); ok {
			resp.Rcode = rc
			return
		}
		rs := s.names[name]

		if rs != nil && rs.cname != "" && q.Qtype != dns.TypeCNAME {
			resp.Answer = append(resp.Answer, &dns.CNAME{
				Hdr:    dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl},
				Target: rs.cname,
			})
			if s.noChase || hop >= maxChase {
				return
			}
			name = rs.cname
			continue
		}

		switch q.Qtype {
		case dns.TypeA, dns.TypeAAAA:
			ips := s.defaultIP
			if rs != nil && len(rs.ips) > 0 {
				ips = rs.ips
			}
			for _, ip := range ips {
				if rr := addrRR(name, q.Qtype, ip); rr != nil {
					resp.Answer = append(resp.Answer, rr)
				}
			}
			if rs == nil && len(s.defaultIP) == 0 {
				resp.Rcode = dns.RcodeNameError
			}
		case dns.TypeTXT:
			if rs == nil {
				s.missing(resp)
				return
			}
			for _, txt := range rs.txt {
				resp.Answer = append(resp.Answer, &dns.TXT{
					Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
					Txt: txt,
				})
			}
		case dns.TypeCAA:
			if rs == nil {
				s.missing(resp)
				return
			}
			for _, caa := range rs.caa {
				rr := dns.Copy(caa).(*dns.CAA)
				rr.Hdr.Name = name
				resp.Answer = append(resp.Answer, rr)
			}
		case dns.TypeCNAME:
			if rs == nil {
				s.missing(resp)
				return
			}
			if rs.cname != "" {
				resp.Answer = append(resp.Answer, &dns.CNAME{
					Hdr:    dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl},
					Target: rs.cname,
				})
			}
		default:
			if rs == nil {
				s.missing(resp)
			}
		}
		return
	}
}

// missing answers for a name with no records: NXDOMAIN, except that a
// default address makes every name exist, so other types get NOERROR with
// an empty answer. Callers hold s.mu.
func (s *Server) missing(resp *dns.Msg) {
	if len(s.defaultIP) == 0 {
		resp.Rcode = dns.RcodeNameError
	}
}

// forced reports a forced rcode for name and qtype. Callers hold s.mu.
func (s *Server) forced(name string, qtype uint16) (int, bool) {
	if rc, ok := s.rcodes[rcodeKey{name, qtype}]; ok {
		return rc, true
	}
	rc, ok := s.rcodes[rcodeKey{name, dns.TypeANY}]
	return rc, ok
}

func addrRR(name string, qtype uint16, ip net.IP) dns.RR {
	hdr := dns.RR_Header{Name: name, Rrtype: qtype, Class: dns.ClassINET, Ttl: ttl}
	v4 := ip.To4()
	switch {
	case qtype == dns.TypeA && v4 != nil:
		return &dns.A{Hdr: hdr, A: v4}
	case qtype == dns.TypeAAAA && v4 == nil:
		return &dns.AAAA{Hdr: hdr, AAAA: ip}
	}
	return nil
}
