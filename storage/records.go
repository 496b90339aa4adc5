package storage

import (
	"encoding/json"
	"net"
	"time"
)

// Status values shared by accounts, orders, authorizations and challenges
// (RFC 8555 §7.1.6).
const (
	StatusPending     = "pending"
	StatusReady       = "ready"
	StatusProcessing  = "processing"
	StatusValid       = "valid"
	StatusInvalid     = "invalid"
	StatusDeactivated = "deactivated"
	StatusExpired     = "expired"
	StatusRevoked     = "revoked"
)

// Problem is a stored RFC 7807 problem: why a challenge or order failed.
type Problem struct {
	Type   string `json:"type"`
	Detail string `json:"detail,omitempty"`
	Status int    `json:"status,omitempty"`
}

// Identifier is an RFC 8555 §9.7.7 identifier.
type Identifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Account is an ACME account (RFC 8555 §7.1.2).
type Account struct {
	ID          string          `json:"id"`
	Status      string          `json:"status"`
	Contact     []string        `json:"contact,omitempty"`
	TermsAgreed bool            `json:"terms_agreed,omitempty"`
	Key         json.RawMessage `json:"key"`        // public JWK
	Thumbprint  string          `json:"thumbprint"` // RFC 7638, base64url SHA-256
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at,omitempty"`
}

// Order is an ACME order (RFC 8555 §7.1.3). Its status is worked out when it
// is read: from its authorizations, and from whether a certificate with the
// serial it determines exists. Status and Error hold only a decision made
// for the order itself (valid or invalid), which this version never stores.
type Order struct {
	ID          string       `json:"id"`
	AccountID   string       `json:"account_id"`
	Status      string       `json:"status"`
	Identifiers []Identifier `json:"identifiers"`
	AuthzIDs    []string     `json:"authz_ids"`
	Expires     time.Time    `json:"expires"`
	CreatedAt   time.Time    `json:"created_at"`
	Error       *Problem     `json:"error,omitempty"`
}

// Authorization is an ACME authorization (RFC 8555 §7.1.4) with its
// challenges embedded, so one Load serves the authorization and all its
// challenges.
type Authorization struct {
	ID          string      `json:"id"`
	AccountID   string      `json:"account_id"`
	Identifier  Identifier  `json:"identifier"` // value without "*." for wildcards
	Wildcard    bool        `json:"wildcard,omitempty"`
	Status      string      `json:"status"`
	Expires     time.Time   `json:"expires"`
	CreatedAt   time.Time   `json:"created_at"`
	Challenges  []Challenge `json:"challenges"`
	ValidatedAt time.Time   `json:"validated_at,omitempty"`
}

// Challenge is one way to prove control of an authorization's identifier
// (RFC 8555 §7.1.5).
type Challenge struct {
	Type            string    `json:"type"`
	Token           string    `json:"token"`
	Status          string    `json:"status"`
	Validated       time.Time `json:"validated,omitempty"`
	ProcessingSince time.Time `json:"processing_since,omitempty"`
	Error           *Problem  `json:"error,omitempty"`
}

// Certificate is an issued certificate and what is known about it.
type Certificate struct {
	Serial           string    `json:"serial"` // lower-case hex
	AccountID        string    `json:"account_id"`
	OrderID          string    `json:"order_id"`
	Names            []string  `json:"names"`
	NotBefore        time.Time `json:"not_before"`
	NotAfter         time.Time `json:"not_after"`
	ChainPEM         string    `json:"chain_pem"` // leaf first, then issuers up to but excluding the root
	RevokedAt        time.Time `json:"revoked_at,omitempty"`
	RevocationReason int       `json:"revocation_reason,omitempty"`
}

// Identifiers returns the certificate's names as identifiers: an IP
// address is an "ip" identifier, anything else "dns".
func (c *Certificate) Identifiers() []Identifier {
	ids := make([]Identifier, len(c.Names))
	for i, n := range c.Names {
		ids[i] = Identifier{Type: "dns", Value: n}
		if net.ParseIP(n) != nil {
			ids[i].Type = "ip"
		}
	}
	return ids
}

// Revoked reports whether the certificate has been revoked.
func (c *Certificate) Revoked() bool { return !c.RevokedAt.IsZero() }
