package ratelimit

import (
	"context"
	"net"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Engine is the Limiter the CA uses: the configured limits, overrides and
// switches, with per-node request rates in memory and counting limits in a
// Backend.
type Engine struct {
	limits    map[string]LimitConfig
	disabled  map[string]bool
	overrides []Override
	backend   Backend
	memory    memoryBuckets
	prefix    string // storage prefix of this CA's buckets
	logger    *zap.Logger
	now       func() time.Time
}

// NewEngine builds the limiter of one CA from its config; the buckets live
// below prefix in the backend.
func NewEngine(cfg *Config, backend Backend, prefix string, logger *zap.Logger) (*Engine, error) {
	limits, disabled, err := cfg.effective()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	e := &Engine{limits: limits, disabled: disabled, backend: backend, prefix: prefix, logger: logger, now: time.Now}
	if cfg != nil {
		e.overrides = cfg.Overrides
	}
	return e, nil
}

// Backend is the backend keeping the counting limits.
func (e *Engine) Backend() Backend { return e.backend }

// SetClock replaces the clock (tests).
func (e *Engine) SetClock(now func() time.Time) { e.now = now }

// InForce lists the limits in force.
func (e *Engine) InForce() []InForce { return describe(e.limits, e.disabled) }

// params resolves a transaction's count and window, overrides included.
func (e *Engine) params(t Transaction) (LimitConfig, bool) {
	if e.disabled[t.Limit] {
		return LimitConfig{}, false
	}
	l := e.limits[t.Limit]
	for _, o := range e.overrides {
		if o.Limit == t.Limit && overrideMatches(o, t.Key) {
			l.Count = o.Count
			if o.Window > 0 {
				l.Window = o.Window
			}
		}
	}
	return l, true
}

// overrideMatches: the key itself, one part of an "account:hostname" key,
// or an IP key within the override's range.
func overrideMatches(o Override, key string) bool {
	if strings.EqualFold(o.Key, key) {
		return true
	}
	if acct, host, ok := strings.Cut(key, ":"); ok && net.ParseIP(key) == nil {
		if o.Key == acct || strings.EqualFold(o.Key, host) {
			return true
		}
	}
	if o.network != nil {
		if ip := net.ParseIP(key); ip != nil && o.network.Contains(ip) {
			return true
		}
	}
	return false
}

// Check implements Limiter.
func (e *Engine) Check(ctx context.Context, txns []Transaction) (*Denial, error) {
	return e.spend(ctx, txns, false)
}

// Spend implements Limiter.
func (e *Engine) Spend(ctx context.Context, txns []Transaction) (*Denial, error) {
	return e.spend(ctx, txns, true)
}

func (e *Engine) spend(ctx context.Context, txns []Transaction, commit bool) (*Denial, error) {
	now := e.now()
	var buckets []Bucket
	var stored, inMemory []Transaction
	for _, t := range txns {
		l, on := e.params(t)
		if !on {
			continue
		}
		if perNode[t.Limit] {
			// Checked now, spent only once everything else allows.
			if ok, retry := e.memory.spend(now, t.Limit+"/"+t.Key, l.Count, time.Duration(l.Window), t.cost(), false); !ok {
				return e.deny(t, l, retry), nil
			}
			inMemory = append(inMemory, t)
			continue
		}
		buckets = append(buckets, e.bucket(t, l))
		stored = append(stored, t)
	}
	if len(buckets) > 0 {
		refused, retry, err := e.backend.Spend(ctx, now, buckets, commit)
		if err != nil {
			return nil, err
		}
		if refused >= 0 {
			t := stored[refused]
			l, _ := e.params(t)
			return e.deny(t, l, retry), nil
		}
	}
	if commit {
		for i, t := range inMemory {
			l, _ := e.params(t)
			if ok, retry := e.memory.spend(now, t.Limit+"/"+t.Key, l.Count, time.Duration(l.Window), t.cost(), true); !ok {
				// Another request took the room since the check: give
				// back what this spend took.
				for _, prev := range inMemory[:i] {
					pl, _ := e.params(prev)
					e.memory.refund(now, prev.Limit+"/"+prev.Key, pl.Count, time.Duration(pl.Window), prev.cost())
				}
				if len(buckets) > 0 {
					_ = e.backend.Refund(ctx, now, buckets)
				}
				return e.deny(t, l, retry), nil
			}
		}
	}
	return nil, nil
}

// Refund implements Limiter.
func (e *Engine) Refund(ctx context.Context, txns []Transaction) error {
	var buckets []Bucket
	for _, t := range txns {
		l, on := e.params(t)
		if !on || perNode[t.Limit] {
			continue
		}
		buckets = append(buckets, e.bucket(t, l))
	}
	if len(buckets) == 0 {
		return nil
	}
	return e.backend.Refund(ctx, e.now(), buckets)
}

func (e *Engine) bucket(t Transaction, l LimitConfig) Bucket {
	key, field := path.Join(e.prefix, t.Limit, safeKey(t.Key)), ""
	if h := t.StoredWith; h != nil {
		key, field = path.Join(e.prefix, h.Limit, safeKey(h.Key)), t.Limit+":"+t.Key
	}
	return Bucket{
		Key:         key,
		Field:       field,
		Count:       l.Count,
		Window:      time.Duration(l.Window),
		Cost:        t.cost(),
		Items:       t.Items,
		Expires:     t.Expires,
		StillCounts: t.StillCounts,
	}
}

func (e *Engine) deny(t Transaction, l LimitConfig, retry time.Time) *Denial {
	d := &Denial{Limit: t.Limit, Key: t.Key, Label: t.Label, Count: l.Count, Window: time.Duration(l.Window), RetryAfter: retry}
	e.logger.Info("rate limit refused a request",
		zap.String("limit", t.Limit), zap.String("key", t.Key), zap.String("account", t.Account),
		zap.Int("count", l.Count), zap.Duration("window", time.Duration(l.Window)), zap.Time("retry_after", retry))
	return d
}

// safeKey keeps a bucket key inside its folder.
func safeKey(k string) string {
	k = strings.NewReplacer("/", "_", "\\", "_").Replace(k)
	if k == "" || k == "." || k == ".." {
		return "_" + k
	}
	return k
}

// Interface guard
var _ Limiter = (*Engine)(nil)
