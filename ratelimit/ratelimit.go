// Package ratelimit decides whether a request may spend from the CA's
// limits: certificates per registered domain, duplicate certificates,
// failed validations, pending authorizations and request rates.
//
// Rate limits use GCRA (the generic cell rate algorithm): a bucket is one
// timestamp, the theoretical arrival time (TAT), so a check costs the same
// however long the history. A limit of N per W lets N requests through at
// once and then one every W/N. Pending authorizations are a count, not a
// rate: the bucket holds the pending authorization IDs with their expiry.
package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// Names of the limits.
const (
	CertificatesPerRegisteredDomain = "certificates_per_registered_domain"
	DuplicateCertificates           = "duplicate_certificates"
	FailedValidations               = "failed_validations"
	PendingAuthorizations           = "pending_authorizations"
	NewRequests                     = "new_requests"
	DirectoryRequests               = "directory_requests"
)

// Transaction is one request against one limit's bucket.
type Transaction struct {
	Limit string // one of the limit names
	Key   string // the bucket within the limit: a registered domain, an account, an IP ...
	Cost  int    // how much the request spends; default 1

	// Pending authorizations only: the authorization IDs being added (on
	// spend) or leaving the pending state (on refund), and when they expire.
	Items   []string
	Expires time.Time
	// StillCounts says whether an item recorded earlier is still pending.
	// It is asked only when the bucket would otherwise be full, so items
	// that left the pending state need no write of their own.
	StillCounts func(item string) bool

	// StoredWith keeps this bucket inside another limit's bucket record
	// (its Limit and Key), so that one spend writes one record: duplicate
	// certificates are stored with their first registered domain.
	StoredWith *Transaction

	// For logs only: who asked.
	Account string

	// What a person reads for Key when it is not readable itself (the
	// names behind a duplicate-certificate hash).
	Label string
}

func (t Transaction) cost() int {
	if t.Cost <= 0 {
		return 1
	}
	return t.Cost
}

// Denial says which limit refused a transaction and when it frees up.
type Denial struct {
	Limit      string
	Key        string
	Label      string // shown instead of Key when set
	Count      int
	Window     time.Duration // zero for pending authorizations
	RetryAfter time.Time
}

func (d *Denial) Error() string { return d.Detail() }

// Detail is the sentence a subscriber reads: the limit, its key, the count
// and window, and when it frees up.
func (d *Denial) Detail() string {
	retry := d.RetryAfter.UTC().Format(time.RFC3339)
	if d.Limit == PendingAuthorizations {
		return fmt.Sprintf("too many pending authorizations: limit %s for account %s is %d; one frees up when an authorization is validated, deactivated or expires (at the latest %s)",
			d.Limit, d.Key, d.Count, retry)
	}
	key := d.Key
	if d.Label != "" {
		key = d.Label
	}
	return fmt.Sprintf("too many requests: limit %s for %q is %d per %s; retry after %s",
		d.Limit, key, d.Count, formatWindow(d.Window), retry)
}

func formatWindow(w time.Duration) string {
	switch {
	case w%(24*time.Hour) == 0 && w >= 24*time.Hour:
		if w == 7*24*time.Hour {
			return "week (168h)"
		}
		return fmt.Sprintf("%dh", int(w.Hours()))
	case w == time.Hour:
		return "hour"
	case w == time.Second:
		return "second"
	}
	return w.String()
}

// Limiter checks and spends limits. Check never spends. Spend spends all of
// the transactions or none of them. Refund gives back what a spend took
// when the work it paid for did not happen.
type Limiter interface {
	Check(ctx context.Context, txns []Transaction) (*Denial, error)
	Spend(ctx context.Context, txns []Transaction) (*Denial, error)
	Refund(ctx context.Context, txns []Transaction) error
}

// Unlimited allows everything.
type Unlimited struct{}

// Check allows every transaction.
func (Unlimited) Check(context.Context, []Transaction) (*Denial, error) { return nil, nil }

// Spend allows every transaction.
func (Unlimited) Spend(context.Context, []Transaction) (*Denial, error) { return nil, nil }

// Refund does nothing.
func (Unlimited) Refund(context.Context, []Transaction) error { return nil }
