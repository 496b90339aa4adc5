// Package ratelimit decides whether a request may spend from the CA's
// limits (certificates per registered domain, duplicate certificates, failed
// validations, pending authorizations, request rates).
package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// Transaction is one request against one limit's bucket.
type Transaction struct {
	Limit string // e.g. "certificates_per_registered_domain"
	Key   string // e.g. "example.com"
	Cost  int
}

// Denial says which limit refused a transaction and when it frees up.
type Denial struct {
	Limit      string
	Key        string
	Count      int
	Window     time.Duration
	RetryAfter time.Time
}

func (d *Denial) Error() string {
	return fmt.Sprintf("too many requests: limit %s for %q is %d per %s; retry after %s",
		d.Limit, d.Key, d.Count, d.Window, d.RetryAfter.UTC().Format(time.RFC3339))
}

// Limiter checks and spends limits. Check never spends; Spend spends all of
// the transactions or none of them.
type Limiter interface {
	Check(ctx context.Context, txns []Transaction) (*Denial, error)
	Spend(ctx context.Context, txns []Transaction) (*Denial, error)
}

// Unlimited allows everything; it is what runs until limits are configured.
type Unlimited struct{}

// Check allows every transaction.
func (Unlimited) Check(context.Context, []Transaction) (*Denial, error) { return nil, nil }

// Spend allows every transaction.
func (Unlimited) Spend(context.Context, []Transaction) (*Denial, error) { return nil, nil }
