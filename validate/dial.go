package validate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// dialer connects validation traffic to the addresses the Resolver returns,
// never to what the operating system's resolver would say, so that every
// validation sees the same DNS view as the CAA and dns-01 checks. It records
// what it dialled for problem details. One dialer serves one validation.
type dialer struct {
	resolver *Resolver
	// allowIP permits IP literal hosts. Only an ip identifier may be
	// reached by address; a name must be looked up, or an attacker's
	// redirect could aim validation traffic at any address it likes
	// without owning a name that points there.
	allowIP bool

	mu     sync.Mutex
	tried  []string // every address dialled, in order
	target string   // the last address dialled
}

// DialContext implements the signature of net.Dialer.DialContext for
// http.Transport. addr is "host:port" where host is a name or, when
// allowed, an IP literal.
//
// Addresses are tried as Boulder does: the first IPv6 address, and when
// that fails the first IPv4 address. Trying only one of each family keeps
// a name with many dead addresses from stretching a validation out, and
// preferring IPv6 means a broken AAAA record fails loudly instead of being
// hidden by a working A record.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		if !d.allowIP {
			return nil, fmt.Errorf("refusing to connect to IP address %s for a DNS identifier", host)
		}
		ips = []net.IP{ip}
	} else {
		if _, ok := dns.IsDomainName(host); !ok || host == "" {
			return nil, fmt.Errorf("invalid host name %q", host)
		}
		ips, err = d.resolver.LookupIP(ctx, host)
		if err != nil {
			return nil, err // a *Problem of type dns
		}
	}

	var v6, v4 net.IP
	var refused []string
	for _, ip := range ips {
		if why := unreachable(ip); why != "" {
			refused = append(refused, ip.String()+" ("+why+")")
			continue
		}
		switch {
		case ip.To4() == nil && v6 == nil:
			v6 = ip
		case ip.To4() != nil && v4 == nil:
			v4 = ip
		}
	}
	var errs []string
	for _, ip := range []net.IP{v6, v4} {
		if ip == nil {
			continue
		}
		target := net.JoinHostPort(ip.String(), port)
		d.mu.Lock()
		d.tried = append(d.tried, target)
		d.target = target
		d.mu.Unlock()

		var nd net.Dialer
		conn, err := nd.DialContext(ctx, tcpNetwork(network, ip), target)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		if len(refused) > 0 {
			return nil, fmt.Errorf("refusing to connect to %s", strings.Join(refused, ", "))
		}
		return nil, errors.New("no usable address")
	}
	// Both errors matter when the fallback also failed: the subscriber
	// may need to fix the AAAA record, the A record, or both. One line,
	// because it ends up in a problem detail.
	return nil, errors.New(strings.Join(errs, "; "))
}

// unreachable says why validation never connects to an address: link-local
// addresses (cloud metadata services live there), unspecified and
// multicast ones. Loopback and private ranges stay reachable, since a
// private CA validates hosts on private networks.
func unreachable(ip net.IP) string {
	switch {
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast():
		return "multicast"
	}
	return ""
}

// tcpNetwork pins the network family to the address so a "tcp4" request
// from a caller never silently dials an IPv6 address or the reverse.
func tcpNetwork(network string, ip net.IP) string {
	if !strings.HasPrefix(network, "tcp") {
		return network
	}
	if ip.To4() != nil {
		return "tcp4"
	}
	return "tcp6"
}

// address is the last address dialled, or "none" before any dial.
func (d *dialer) address() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.target == "" {
		return "none"
	}
	return d.target
}

// addresses lists every address dialled, for details of failed connections
// where the IPv4 fallback also failed.
func (d *dialer) addresses() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.tried) == 0 {
		return "none"
	}
	return strings.Join(d.tried, ", ")
}

// hostPort joins host and port the way a URL authority or Host header
// wants them: IPv6 in brackets, and the port left off when it is the
// scheme's default.
func hostPort(host string, port, defaultPort int) string {
	if port == defaultPort {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// identifierHost returns the host a connection-based challenge connects to:
// the name for dns identifiers, the canonical text form of the address for
// ip identifiers.
func identifierHost(id Identifier) (string, *Problem) {
	switch id.Type {
	case "dns":
		if _, ok := dns.IsDomainName(id.Value); !ok || id.Value == "" || net.ParseIP(id.Value) != nil {
			return "", Problemf(ProblemRejected, "%q is not a valid DNS name", id.Value)
		}
		return strings.ToLower(strings.TrimSuffix(id.Value, ".")), nil
	case "ip":
		ip := net.ParseIP(id.Value)
		if ip == nil {
			return "", Problemf(ProblemRejected, "%q is not a valid IP address", id.Value)
		}
		return ip.String(), nil
	}
	return "", Problemf(ProblemRejected, "unsupported identifier type %q", id.Type)
}

// sanitize renders untrusted bytes for a problem detail: at most limit
// bytes, anything but printable ASCII replaced, so a hostile server cannot
// inject control characters or huge text into what the subscriber reads.
func sanitize(b []byte, limit int) string {
	truncated := false
	if len(b) > limit {
		b, truncated = b[:limit], true
	}
	var sb strings.Builder
	sb.Grow(len(b) + 3)
	for _, c := range b {
		if c >= 0x20 && c <= 0x7e {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('?')
		}
	}
	if truncated {
		sb.WriteString("...")
	}
	return sb.String()
}

// validToken reports whether a challenge token is base64url text (RFC 8555
// §8.1), so it can go into a URL path without escaping or surprises.
func validToken(tok string) bool {
	if tok == "" || len(tok) > 256 {
		return false
	}
	for _, c := range tok {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
