package acme

import (
	"fmt"
	"net/http"

	"github.com/acmeca/caddy-acmeca/storage"
)

// ErrorNS prefixes every ACME error type (RFC 8555 §6.7).
const ErrorNS = "urn:ietf:params:acme:error:"

// ACME error types, short form.
const (
	ErrAccountDoesNotExist     = "accountDoesNotExist"
	ErrAlreadyRevoked          = "alreadyRevoked"
	ErrBadCSR                  = "badCSR"
	ErrBadNonce                = "badNonce"
	ErrBadPublicKey            = "badPublicKey"
	ErrBadRevocationReason     = "badRevocationReason"
	ErrBadSignatureAlgorithm   = "badSignatureAlgorithm"
	ErrCAA                     = "caa"
	ErrCompound                = "compound"
	ErrConnection              = "connection"
	ErrDNS                     = "dns"
	ErrExternalAccountRequired = "externalAccountRequired"
	ErrIncorrectResponse       = "incorrectResponse"
	ErrInvalidContact          = "invalidContact"
	ErrMalformed               = "malformed"
	ErrOrderNotReady           = "orderNotReady"
	ErrRateLimited             = "rateLimited"
	ErrRejectedIdentifier      = "rejectedIdentifier"
	ErrServerInternal          = "serverInternal"
	ErrTLS                     = "tls"
	ErrUnauthorized            = "unauthorized"
	ErrUnsupportedContact      = "unsupportedContact"
	ErrUnsupportedIdentifier   = "unsupportedIdentifier"
	ErrUserActionRequired      = "userActionRequired"
)

// Problem is an RFC 7807 problem document as RFC 8555 §6.7 uses it.
type Problem struct {
	Type        string              `json:"type"`
	Detail      string              `json:"detail,omitempty"`
	Status      int                 `json:"status,omitempty"`
	Subproblems []Subproblem        `json:"subproblems,omitempty"`
	Algorithms  []string            `json:"algorithms,omitempty"` // badSignatureAlgorithm only
	Identifier  *storage.Identifier `json:"identifier,omitempty"`

	// set by the handler, not sent
	location   string // Location header (409 on keyChange)
	retryAfter int    // seconds, for rateLimited
	allow      string // Allow header, for 405
}

// Subproblem is one identifier's share of a compound problem (§6.7.1).
type Subproblem struct {
	Type       string             `json:"type"`
	Detail     string             `json:"detail,omitempty"`
	Identifier storage.Identifier `json:"identifier"`
}

func (p *Problem) Error() string { return p.Type + ": " + p.Detail }

// statusFor is the HTTP status each error type implies.
var statusFor = map[string]int{
	ErrAccountDoesNotExist:     http.StatusBadRequest,
	ErrAlreadyRevoked:          http.StatusBadRequest,
	ErrBadCSR:                  http.StatusBadRequest,
	ErrBadNonce:                http.StatusBadRequest,
	ErrBadPublicKey:            http.StatusBadRequest,
	ErrBadRevocationReason:     http.StatusBadRequest,
	ErrBadSignatureAlgorithm:   http.StatusBadRequest,
	ErrCAA:                     http.StatusForbidden,
	ErrCompound:                http.StatusBadRequest,
	ErrConnection:              http.StatusBadRequest,
	ErrDNS:                     http.StatusBadRequest,
	ErrExternalAccountRequired: http.StatusUnauthorized,
	ErrIncorrectResponse:       http.StatusForbidden,
	ErrInvalidContact:          http.StatusBadRequest,
	ErrMalformed:               http.StatusBadRequest,
	ErrOrderNotReady:           http.StatusForbidden,
	ErrRateLimited:             http.StatusTooManyRequests,
	ErrRejectedIdentifier:      http.StatusBadRequest,
	ErrServerInternal:          http.StatusInternalServerError,
	ErrTLS:                     http.StatusBadRequest,
	ErrUnauthorized:            http.StatusForbidden,
	ErrUnsupportedContact:      http.StatusBadRequest,
	ErrUnsupportedIdentifier:   http.StatusBadRequest,
	ErrUserActionRequired:      http.StatusForbidden,
}

// NewProblem returns a problem of the short error type typ with the status
// that type implies.
func NewProblem(typ, format string, args ...any) *Problem {
	status, ok := statusFor[typ]
	if !ok {
		status = http.StatusBadRequest
	}
	detail := format
	if len(args) > 0 {
		detail = fmt.Sprintf(format, args...)
	}
	return &Problem{Type: ErrorNS + typ, Detail: detail, Status: status}
}

// WithStatus overrides the HTTP status.
func (p *Problem) WithStatus(status int) *Problem { p.Status = status; return p }

// Malformed is the catch-all for requests that do not parse or break a rule.
func Malformed(format string, args ...any) *Problem {
	return NewProblem(ErrMalformed, format, args...)
}

// Unauthorized refuses a request the account may not make.
func Unauthorized(format string, args ...any) *Problem {
	return NewProblem(ErrUnauthorized, format, args...)
}

// Internal hides an internal failure behind a generic detail; the cause is
// logged, not sent.
func Internal(format string, args ...any) *Problem {
	return NewProblem(ErrServerInternal, format, args...)
}

// Compound groups per-identifier problems (§6.7.1). With one subproblem the
// top-level type is that subproblem's, which is what clients display best.
func Compound(detail string, subs []Subproblem) *Problem {
	if len(subs) == 1 {
		p := NewProblem(subs[0].Type[len(ErrorNS):], "%s: %s", detail, subs[0].Detail)
		p.Subproblems = subs
		return p
	}
	p := NewProblem(ErrCompound, "%s", detail)
	p.Subproblems = subs
	return p
}

// SubproblemOf builds a subproblem for one identifier.
func SubproblemOf(typ string, id storage.Identifier, format string, args ...any) Subproblem {
	return Subproblem{Type: ErrorNS + typ, Detail: fmt.Sprintf(format, args...), Identifier: id}
}

// stored converts a problem to its stored form.
func (p *Problem) stored() *storage.Problem {
	return &storage.Problem{Type: p.Type, Detail: p.Detail, Status: p.Status}
}

func fromStored(sp *storage.Problem) *Problem {
	if sp == nil {
		return nil
	}
	return &Problem{Type: sp.Type, Detail: sp.Detail, Status: sp.Status}
}
