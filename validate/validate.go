// Package validate proves control of identifiers: the http-01, dns-01 and
// tls-alpn-01 challenges of RFC 8555 §8 and RFC 8737. Each challenge type is a
// Caddy guest module in the acme_ca.challenges namespace, so a third party can
// add a challenge type by registering a module there.
package validate

import (
	"context"
	"fmt"
)

// Problem types a validator reports. They are the short forms of RFC 8555
// §6.7 error types; the acme package adds the urn:ietf:params:acme:error:
// prefix.
const (
	ProblemConnection        = "connection"
	ProblemDNS               = "dns"
	ProblemIncorrectResponse = "incorrectResponse"
	ProblemUnauthorized      = "unauthorized"
	ProblemTLS               = "tls"
	ProblemCAA               = "caa"
	ProblemRejected          = "rejectedIdentifier"
	ProblemServerInternal    = "serverInternal"
)

// Problem is why a validation failed, in words the subscriber can act on.
type Problem struct {
	// Type is one of the Problem* constants.
	Type string
	// Detail says what was fetched or looked up and what was expected.
	Detail string
}

func (p *Problem) Error() string { return p.Type + ": " + p.Detail }

// Problemf builds a Problem with a formatted detail.
func Problemf(typ, format string, args ...any) *Problem {
	return &Problem{Type: typ, Detail: fmt.Sprintf(format, args...)}
}

// Identifier is what a challenge proves control of (RFC 8555 §9.7.7).
type Identifier struct {
	Type  string // "dns" or "ip"
	Value string // a lower-case name without trailing dot (wildcard label removed), or an IP address
}

// Challenge is everything a validator needs to check one challenge.
type Challenge struct {
	Type             string // "http-01", "dns-01", "tls-alpn-01", ...
	Identifier       Identifier
	Token            string
	KeyAuthorization string // token "." base64url(JWK thumbprint of the account key)
	AccountURL       string // for RFC 8657 accounturi checks
	Resolver         *Resolver
}

// Validator checks one challenge. It returns nil when the challenge is
// satisfied and a *Problem otherwise. Implementations must honour ctx.
type Validator interface {
	Validate(ctx context.Context, chall Challenge) error
}
