package validate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultDNSTimeout bounds one DNS query to one server when NewResolver is
// given no timeout.
const DefaultDNSTimeout = 5 * time.Second

// maxCNAMEHops is how many aliases a lookup follows before giving up, so a
// CNAME loop or a very long chain cannot stall a validation.
const maxCNAMEHops = 8

// ednsSize is the UDP payload size the resolver advertises: the DNS Flag Day
// 2020 value, small enough to avoid IP fragmentation on ordinary paths.
// Larger answers come back truncated and are fetched again over TCP.
const ednsSize = 1232

// Resolver looks up the DNS records a validation needs. It talks to
// recursive resolvers directly (not through the operating system) so that
// it sees rcodes like SERVFAIL and can tell them apart from a name that does
// not exist; both matter to a subscriber reading the problem detail.
// A Resolver is safe for concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	hosts   []StaticHost // answered before DNS; set once after NewResolver
}

// StaticHost answers address lookups for a name (or every name below a
// "*.suffix" pattern) without DNS: for labs whose names are in no DNS.
// Such names have no CAA records.
type StaticHost struct {
	Pattern string
	IPs     []net.IP
}

// WithHosts sets the static host table and returns r. Call it before r is
// used.
func (r *Resolver) WithHosts(hosts []StaticHost) *Resolver {
	r.hosts = hosts
	return r
}

// static returns the static addresses of name, if the table covers it.
// An exact name beats a pattern, and a longer pattern a shorter one.
func (r *Resolver) static(name string) ([]net.IP, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	var best *StaticHost
	for i := range r.hosts {
		h := &r.hosts[i]
		p := strings.ToLower(h.Pattern)
		if p == name {
			return h.IPs, true
		}
		if suffix, ok := strings.CutPrefix(p, "*."); ok && strings.HasSuffix(name, "."+suffix) {
			if best == nil || len(p) > len(best.Pattern) {
				best = h
			}
		}
	}
	if best != nil {
		return best.IPs, true
	}
	return nil, false
}

// NewResolver returns a Resolver that asks servers ("host:port"), in order,
// moving to the next only when one cannot be reached. With no servers it
// uses those in /etc/resolv.conf, or 127.0.0.1:53 when that cannot be read.
// timeout bounds each query to each server; zero or less means
// DefaultDNSTimeout.
func NewResolver(servers []string, timeout time.Duration) *Resolver {
	if timeout <= 0 {
		timeout = DefaultDNSTimeout
	}
	if len(servers) == 0 {
		servers = systemServers()
	}
	return &Resolver{servers: append([]string(nil), servers...), timeout: timeout}
}

// Servers are the servers the resolver asks, in order.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

func systemServers() []string {
	cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cfg.Servers) == 0 {
		return []string{"127.0.0.1:53"}
	}
	out := make([]string, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	return out
}

var (
	defaultResolverOnce sync.Once
	defaultResolver     *Resolver
)

// resolverFor returns the resolver of a challenge, or one built from the
// system configuration when the caller left it nil, so that a validator
// never dereferences a nil Resolver.
func resolverFor(chall Challenge) *Resolver {
	if chall.Resolver != nil {
		return chall.Resolver
	}
	defaultResolverOnce.Do(func() { defaultResolver = NewResolver(nil, 0) })
	return defaultResolver
}

// LookupIP returns the IPv6 and IPv4 addresses of name, IPv6 first,
// following CNAMEs. It fails when neither query yields an address.
func (r *Resolver) LookupIP(ctx context.Context, name string) ([]net.IP, error) {
	if ips, ok := r.static(name); ok {
		// IPv6 first, as for DNS answers.
		var v6, v4 []net.IP
		for _, ip := range ips {
			if ip.To4() == nil {
				v6 = append(v6, ip)
			} else {
				v4 = append(v4, ip)
			}
		}
		return append(v6, v4...), nil
	}
	type result struct {
		rrs []dns.RR
		err *lookupError
	}
	var v6, v4 result
	var wg sync.WaitGroup
	wg.Add(2)
	// The two queries are independent; asking both at once halves the
	// time a validation waits on a slow resolver.
	go func() { defer wg.Done(); v6.rrs, v6.err = r.lookup(ctx, name, dns.TypeAAAA) }()
	go func() { defer wg.Done(); v4.rrs, v4.err = r.lookup(ctx, name, dns.TypeA) }()
	wg.Wait()

	var ips []net.IP
	for _, rr := range v6.rrs {
		if aaaa, ok := rr.(*dns.AAAA); ok {
			ips = append(ips, aaaa.AAAA)
		}
	}
	for _, rr := range v4.rrs {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A)
		}
	}
	// One family failing is not fatal when the other answered: most names
	// have no AAAA at all, and some servers answer AAAA badly.
	if len(ips) > 0 {
		return ips, nil
	}
	switch {
	case v4.err != nil && v6.err != nil && v4.err.sameFailure(v6.err):
		return nil, v4.err.problem("A/AAAA")
	case v4.err != nil:
		return nil, v4.err.problem("A")
	case v6.err != nil:
		return nil, v6.err.problem("AAAA")
	}
	return nil, Problemf(ProblemDNS, "DNS problem: no A or AAAA records found for %s", displayName(name))
}

// LookupTXT returns the TXT records of name, following CNAMEs. The strings
// of one record are joined, as RFC 8555 §8.4 and RFC 7208 §3.3 read them.
// A name that does not exist is an error; a name without TXT records is not.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	vals, err := r.lookupTXT(ctx, name)
	if err != nil {
		return nil, err.problem("TXT")
	}
	return vals, nil
}

// lookupTXT is LookupTXT with the failure kept apart from its wording, so
// dns-01 can word NXDOMAIN as a missing record.
func (r *Resolver) lookupTXT(ctx context.Context, name string) ([]string, *lookupError) {
	rrs, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var vals []string
	for _, rr := range rrs {
		if txt, ok := rr.(*dns.TXT); ok {
			var b strings.Builder
			for _, part := range txt.Txt {
				b.WriteString(unescapeTXT(part))
			}
			vals = append(vals, b.String())
		}
	}
	return vals, nil
}

// LookupCAA returns the CAA records at exactly name, after following CNAMEs;
// climbing towards the root (RFC 8659 §3) is the caller's job. A name that
// does not exist or has no CAA records yields nil and no error, because that
// permits issuance; any other failure is an error, because RFC 8659 §3 says
// a CA must not issue when it cannot tell.
func (r *Resolver) LookupCAA(ctx context.Context, name string) ([]*dns.CAA, error) {
	if _, ok := r.static(name); ok {
		return nil, nil
	}
	rrs, err := r.lookup(ctx, name, dns.TypeCAA)
	if err != nil {
		if err.rcode == dns.RcodeNameError {
			return nil, nil
		}
		return nil, err.problem("CAA")
	}
	var out []*dns.CAA
	for _, rr := range rrs {
		if caa, ok := rr.(*dns.CAA); ok {
			out = append(out, caa)
		}
	}
	return out, nil
}

// unescapeTXT turns a TXT string as miekg/dns unpacks it (presentation
// format: \DDD for unprintable bytes, \" and \\ for quote and backslash)
// back into the bytes on the wire, so callers compare what the zone holds.
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b = append(b, s[i])
			continue
		}
		i++
		if i+2 < len(s) && isDigit(s[i]) && isDigit(s[i+1]) && isDigit(s[i+2]) {
			if n := int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0'); n <= 255 {
				b = append(b, byte(n))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// lookupError is a failed lookup before it is worded as a Problem.
type lookupError struct {
	name   string // as the caller asked for it
	alias  string // the end of the CNAME chain, when it differs from name
	server string // the last server asked
	rcode  int    // valid when netErr is nil
	netErr error  // the server could not be asked, or the answer was unusable
}

func (e *lookupError) sameFailure(o *lookupError) bool {
	return e.netErr == nil && o.netErr == nil && e.rcode == o.rcode
}

// problem words the failure for the subscriber: what was asked, of whom, and
// what came back.
func (e *lookupError) problem(qtype string) *Problem {
	cause := dns.RcodeToString[e.rcode]
	switch {
	case e.netErr != nil:
		cause = e.netErr.Error()
	case cause == "":
		cause = fmt.Sprintf("rcode %d", e.rcode)
	}
	detail := fmt.Sprintf("DNS problem: %s looking up %s for %s", cause, qtype, displayName(e.name))
	if e.alias != "" {
		detail += " (via CNAME " + displayName(e.alias) + ")"
	}
	return &Problem{Type: ProblemDNS, Detail: detail + " (server " + e.server + ")"}
}

func displayName(name string) string { return strings.TrimSuffix(name, ".") }

// lookup returns the records of qtype at name, following CNAMEs both inside
// one answer and, when an answer stops at an alias, by asking for the
// target. NOERROR with no records is a nil slice and no error.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, *lookupError) {
	start := dns.CanonicalName(name)
	cur := start
	hops := 0
	seen := map[string]bool{cur: true}
	for {
		resp, server, err := r.exchange(ctx, cur, qtype)
		lerr := &lookupError{name: name, server: server}
		if cur != start {
			lerr.alias = cur
		}
		if err != nil {
			lerr.netErr = err
			return nil, lerr
		}
		if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
			lerr.rcode = resp.Rcode
			return nil, lerr
		}

		// Walk the chain the answer carries, starting at the name asked.
		// Records owned by names off the chain are ignored: a server has
		// no business vouching for them.
		owner := cur
		for {
			var found []dns.RR
			next := ""
			for _, rr := range resp.Answer {
				h := rr.Header()
				if dns.CanonicalName(h.Name) != owner || h.Class != dns.ClassINET {
					continue
				}
				if h.Rrtype == qtype {
					found = append(found, rr)
				} else if cname, ok := rr.(*dns.CNAME); ok {
					next = dns.CanonicalName(cname.Target)
				}
			}
			if len(found) > 0 {
				return found, nil
			}
			if next == "" {
				break
			}
			hops++
			if hops > maxCNAMEHops || seen[next] {
				lerr.netErr = fmt.Errorf("too many CNAMEs (more than %d, or a loop)", maxCNAMEHops)
				lerr.alias = next
				return nil, lerr
			}
			seen[next] = true
			owner = next
		}

		if owner == cur {
			// The chain ends here: the name has no records of this type,
			// or, with NXDOMAIN, does not exist.
			if resp.Rcode == dns.RcodeNameError {
				lerr.rcode = dns.RcodeNameError
				if owner != start {
					lerr.alias = owner
				}
				return nil, lerr
			}
			return nil, nil
		}
		// The answer stopped at an alias whose target it did not
		// cover (an NXDOMAIN here belongs to the target, which we are
		// about to ask about anyway), so ask for the target.
		cur = owner
	}
}

// exchange asks each server in turn until one answers, retrying over TCP
// when the UDP answer is truncated. It returns the server that answered, or
// the last one tried.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	msg := new(dns.Msg)
	msg.SetQuestion(name, qtype)
	msg.RecursionDesired = true
	msg.SetEdns0(ednsSize, false)

	var lastErr error
	lastServer := strings.Join(r.servers, ", ")
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, server, queryError(err)
		}
		lastServer = server
		resp, err := r.exchangeOne(ctx, msg, server, "udp")
		if err == nil && resp.Truncated {
			resp, err = r.exchangeOne(ctx, msg, server, "tcp")
		}
		if err != nil {
			lastErr = err
			continue
		}
		return resp, server, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no DNS servers configured")
	}
	return nil, lastServer, queryError(lastErr)
}

func (r *Resolver) exchangeOne(ctx context.Context, msg *dns.Msg, server, network string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: r.timeout, UDPSize: ednsSize}
	resp, _, err := c.ExchangeContext(ctx, msg.Copy(), server)
	if err != nil {
		return nil, err
	}
	// The client matches IDs; a mismatched question would mean a confused
	// or spoofing server, and its answer must not be trusted.
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, msg.Question[0].Name) ||
		resp.Question[0].Qtype != msg.Question[0].Qtype {
		return nil, errors.New("answer does not match the question")
	}
	return resp, nil
}

// queryError turns a Go error into the words a subscriber sees, without
// socket details that say nothing to them.
func queryError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("query canceled")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return errors.New("query timed out")
	}
	return fmt.Errorf("networking error (%v)", err)
}
