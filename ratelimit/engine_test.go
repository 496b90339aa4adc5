package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// testPrefix is where a CA named "local" keeps its buckets.
const testPrefix = "acme_ca/local/ratelimit"

// testClock is the injected clock: it stands still until a test moves it.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newTestEngine builds an engine on a StorageBackend over file storage in
// dir (a fresh temp dir when empty), with its clock at t0.
func newTestEngine(t testing.TB, cfg *Config, dir string) (*Engine, *testClock) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e, err := NewEngine(cfg, NewStorageBackend(&certmagic.FileStorage{Path: dir}), testPrefix, nil)
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	clk := &testClock{now: t0}
	e.SetClock(clk.Now)
	return e, clk
}

func limits(kv ...any) map[string]LimitConfig {
	m := map[string]LimitConfig{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(LimitConfig)
	}
	return m
}

func per(count int, window time.Duration) LimitConfig {
	return LimitConfig{Count: count, Window: caddy.Duration(window)}
}

// spendUntilRefused spends txn(i) for i = 0, 1, ... until one is refused
// and returns how many were allowed and the refusal. It gives up after
// max spends (a limit that never refuses returns max and nil).
func spendUntilRefused(t *testing.T, e *Engine, max int, txn func(i int) Transaction) (int, *Denial) {
	t.Helper()
	ctx := context.Background()
	for i := range max {
		d, err := e.Spend(ctx, []Transaction{txn(i)})
		if err != nil {
			t.Fatalf("spend %d: %v", i, err)
		}
		if d != nil {
			return i, d
		}
	}
	return max, nil
}

// same spends the same transaction every time.
func same(txn Transaction) func(int) Transaction { return func(int) Transaction { return txn } }

// pendingItem is the pending_authorizations transaction adding one item
// that expires at t0+exp.
func pendingItem(acct, id string, exp time.Duration) Transaction {
	return Transaction{Limit: PendingAuthorizations, Key: acct, Account: acct, Items: []string{id}, Expires: t0.Add(exp)}
}

// pendingItems adds a new item on every call.
func pendingItems(acct string) func(int) Transaction {
	return func(i int) Transaction {
		return pendingItem(acct, fmt.Sprintf("authz%d", i), 7*24*time.Hour+time.Duration(i)*time.Second)
	}
}

// TestEngineDefaults: with no config every limit allows its published
// count, refuses the next, and says when it frees up.
func TestEngineDefaults(t *testing.T) {
	tests := []struct {
		limit      string
		txn        func(int) Transaction
		wantKey    string
		wantCount  int
		wantWindow time.Duration
		wantRetry  time.Duration // since t0
	}{
		{
			limit: CertificatesPerRegisteredDomain, txn: same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}),
			wantKey: "example.com", wantCount: 20, wantWindow: 168 * time.Hour, wantRetry: 168 * time.Hour / 20,
		},
		{
			limit: DuplicateCertificates, txn: same(Transaction{Limit: DuplicateCertificates, Key: NameSetKey([]string{"example.com"})}),
			wantKey: NameSetKey([]string{"example.com"}), wantCount: 5, wantWindow: 168 * time.Hour, wantRetry: 168 * time.Hour / 5,
		},
		{
			limit: FailedValidations, txn: same(Transaction{Limit: FailedValidations, Key: FailedValidationKey("acct1", "www.example.com")}),
			wantKey: "acct1:www.example.com", wantCount: 5, wantWindow: time.Hour, wantRetry: 12 * time.Minute,
		},
		{
			limit: PendingAuthorizations, txn: pendingItems("acct1"),
			wantKey: "acct1", wantCount: 300, wantRetry: 7 * 24 * time.Hour, // the first item's expiry
		},
		{
			limit: NewRequests, txn: same(Transaction{Limit: NewRequests, Key: "192.0.2.1"}),
			wantKey: "192.0.2.1", wantCount: 20, wantWindow: time.Second, wantRetry: 50 * time.Millisecond,
		},
		{
			limit: DirectoryRequests, txn: same(Transaction{Limit: DirectoryRequests, Key: "192.0.2.1"}),
			wantKey: "192.0.2.1", wantCount: 40, wantWindow: time.Second, wantRetry: 25 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.limit, func(t *testing.T) {
			e, _ := newTestEngine(t, nil, "")
			n, d := spendUntilRefused(t, e, 1000, tt.txn)
			if n != tt.wantCount {
				t.Fatalf("%d allowed, want %d", n, tt.wantCount)
			}
			want := Denial{Limit: tt.limit, Key: tt.wantKey, Count: tt.wantCount, Window: tt.wantWindow, RetryAfter: t0.Add(tt.wantRetry)}
			if d.Limit != want.Limit || d.Key != want.Key || d.Count != want.Count || d.Window != want.Window || !d.RetryAfter.Equal(want.RetryAfter) {
				t.Fatalf("denial %+v, want %+v", *d, want)
			}
		})
	}
}

// TestEngineRefills: after window/N one more is allowed, not two.
func TestEngineRefills(t *testing.T) {
	e, clk := newTestEngine(t, &Config{Limits: limits(CertificatesPerRegisteredDomain, per(4, time.Hour))}, "")
	txn := same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"})
	if n, _ := spendUntilRefused(t, e, 100, txn); n != 4 {
		t.Fatalf("%d allowed at once, want 4", n)
	}
	clk.Advance(15 * time.Minute)
	if n, d := spendUntilRefused(t, e, 100, txn); n != 1 || !d.RetryAfter.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("after 15m: %d allowed (want 1), retry %v (want t0+30m)", n, d.RetryAfter.Sub(t0))
	}
	clk.Advance(2 * time.Hour)
	if n, _ := spendUntilRefused(t, e, 100, txn); n != 4 {
		t.Fatalf("after a quiet window: %d allowed, want 4", n)
	}
}

func TestEngineOverrides(t *testing.T) {
	o := func(limit, key string, count int, window time.Duration) Override {
		return Override{Limit: limit, Key: key, Count: count, Window: caddy.Duration(window)}
	}
	tests := []struct {
		name      string
		overrides []Override
		txn       func(int) Transaction
		wantCount int
		wantRetry time.Duration // since t0; 0: not checked
	}{
		{
			name:      "registered domain",
			overrides: []Override{o(CertificatesPerRegisteredDomain, "example.com", 3, 0)},
			txn:       same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}),
			wantCount: 3, wantRetry: 56 * time.Hour, // 168h/3: the default window stays
		},
		{
			name:      "registered domain, case ignored",
			overrides: []Override{o(CertificatesPerRegisteredDomain, "Example.COM", 3, 0)},
			txn:       same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}),
			wantCount: 3,
		},
		{
			name:      "registered domain with its own window",
			overrides: []Override{o(CertificatesPerRegisteredDomain, "example.com", 2, time.Hour)},
			txn:       same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}),
			wantCount: 2, wantRetry: 30 * time.Minute,
		},
		{
			name:      "another registered domain keeps the default",
			overrides: []Override{o(CertificatesPerRegisteredDomain, "example.com", 3, 0)},
			txn:       same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.org"}),
			wantCount: 20,
		},
		{
			name:      "an override of another limit does not apply",
			overrides: []Override{o(DuplicateCertificates, "example.com", 1, 0)},
			txn:       same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}),
			wantCount: 20,
		},
		{
			name:      "failed validations by account",
			overrides: []Override{o(FailedValidations, "acct1", 2, 0)},
			txn:       same(Transaction{Limit: FailedValidations, Key: FailedValidationKey("acct1", "www.example.com")}),
			wantCount: 2, wantRetry: 30 * time.Minute,
		},
		{
			name:      "failed validations, another account",
			overrides: []Override{o(FailedValidations, "acct1", 2, 0)},
			txn:       same(Transaction{Limit: FailedValidations, Key: FailedValidationKey("acct2", "www.example.com")}),
			wantCount: 5,
		},
		{
			name:      "failed validations by hostname",
			overrides: []Override{o(FailedValidations, "www.example.com", 1, 0)},
			txn:       same(Transaction{Limit: FailedValidations, Key: FailedValidationKey("acct9", "www.example.com")}),
			wantCount: 1,
		},
		{
			name:      "failed validations, another hostname",
			overrides: []Override{o(FailedValidations, "www.example.com", 1, 0)},
			txn:       same(Transaction{Limit: FailedValidations, Key: FailedValidationKey("acct9", "api.example.com")}),
			wantCount: 5,
		},
		{
			name:      "pending authorizations by account",
			overrides: []Override{o(PendingAuthorizations, "acct1", 2, 0)},
			txn:       pendingItems("acct1"),
			wantCount: 2,
		},
		{
			name:      "new requests by IP",
			overrides: []Override{o(NewRequests, "192.0.2.1", 3, 0)},
			txn:       same(Transaction{Limit: NewRequests, Key: "192.0.2.1"}),
			wantCount: 3,
		},
		{
			name:      "new requests, another IP",
			overrides: []Override{o(NewRequests, "192.0.2.1", 3, 0)},
			txn:       same(Transaction{Limit: NewRequests, Key: "192.0.2.2"}),
			wantCount: 20,
		},
		{
			name:      "new requests by CIDR",
			overrides: []Override{o(NewRequests, "198.51.100.0/24", 7, time.Minute)},
			txn:       same(Transaction{Limit: NewRequests, Key: "198.51.100.77"}),
			wantCount: 7,
		},
		{
			name:      "new requests outside the CIDR",
			overrides: []Override{o(NewRequests, "198.51.100.0/24", 7, 0)},
			txn:       same(Transaction{Limit: NewRequests, Key: "198.51.101.1"}),
			wantCount: 20,
		},
		{
			name:      "new requests by IPv6 CIDR",
			overrides: []Override{o(NewRequests, "2001:db8::/32", 4, 0)},
			txn:       same(Transaction{Limit: NewRequests, Key: "2001:db8::5"}),
			wantCount: 4,
		},
		{
			name:      "directory requests by IP",
			overrides: []Override{o(DirectoryRequests, "192.0.2.1", 100, 0)},
			txn:       same(Transaction{Limit: DirectoryRequests, Key: "192.0.2.1"}),
			wantCount: 100,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newTestEngine(t, &Config{Overrides: tt.overrides}, "")
			n, d := spendUntilRefused(t, e, 1000, tt.txn)
			if n != tt.wantCount {
				t.Fatalf("%d allowed, want %d", n, tt.wantCount)
			}
			if d.Count != tt.wantCount {
				t.Errorf("denial names count %d, want %d", d.Count, tt.wantCount)
			}
			if tt.wantRetry != 0 && !d.RetryAfter.Equal(t0.Add(tt.wantRetry)) {
				t.Errorf("retry after t0+%v, want t0+%v", d.RetryAfter.Sub(t0), tt.wantRetry)
			}
		})
	}
}

func TestEngineDisable(t *testing.T) {
	all := []func(int) Transaction{
		same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}),
		same(Transaction{Limit: DuplicateCertificates, Key: NameSetKey([]string{"example.com"})}),
		same(Transaction{Limit: FailedValidations, Key: FailedValidationKey("acct1", "example.com")}),
		pendingItems("acct1"),
		same(Transaction{Limit: NewRequests, Key: "192.0.2.1"}),
		same(Transaction{Limit: DirectoryRequests, Key: "192.0.2.1"}),
	}
	tests := []struct {
		name    string
		disable []string
		off     map[string]bool // limits that must never refuse
	}{
		{name: "one", disable: []string{CertificatesPerRegisteredDomain}, off: map[string]bool{CertificatesPerRegisteredDomain: true}},
		{name: "two", disable: []string{NewRequests, DirectoryRequests}, off: map[string]bool{NewRequests: true, DirectoryRequests: true}},
		{name: "all", disable: []string{"all"}, off: map[string]bool{
			CertificatesPerRegisteredDomain: true, DuplicateCertificates: true, FailedValidations: true,
			PendingAuthorizations: true, NewRequests: true, DirectoryRequests: true,
		}},
		{name: "off", disable: []string{"off"}, off: map[string]bool{
			CertificatesPerRegisteredDomain: true, DuplicateCertificates: true, FailedValidations: true,
			PendingAuthorizations: true, NewRequests: true, DirectoryRequests: true,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newTestEngine(t, &Config{Disable: tt.disable}, "")
			for i, txn := range all {
				limit := txn(0).Limit
				n, _ := spendUntilRefused(t, e, 400, txn)
				if tt.off[limit] && n != 400 {
					t.Errorf("%s is disabled but refused after %d", limit, n)
				}
				if !tt.off[limit] && n == 400 {
					t.Errorf("%s (#%d) is not disabled but never refused", limit, i)
				}
			}
			for _, f := range e.InForce() {
				if f.Disabled != tt.off[f.Name] {
					t.Errorf("InForce: %s disabled = %v, want %v", f.Name, f.Disabled, tt.off[f.Name])
				}
			}
		})
	}
}

// TestEngineCheckDoesNotSpend: any number of checks leaves every bucket
// as it was, and a check refuses exactly when a spend would.
func TestEngineCheckDoesNotSpend(t *testing.T) {
	tests := []struct {
		name  string
		count int
		txn   func(int) Transaction
	}{
		{"stored rate", 20, same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"})},
		{"per-node rate", 20, same(Transaction{Limit: NewRequests, Key: "192.0.2.1"})},
		{"pending set", 300, pendingItems("acct1")},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil, "")
			for i := range 2 * tt.count {
				if d, err := e.Check(ctx, []Transaction{tt.txn(i)}); err != nil || d != nil {
					t.Fatalf("check %d on an empty bucket: %v, %v", i, d, err)
				}
			}
			if n, _ := spendUntilRefused(t, e, 1000, tt.txn); n != tt.count {
				t.Fatalf("after checks, %d spends allowed, want %d", n, tt.count)
			}
			d, err := e.Check(ctx, []Transaction{tt.txn(1000)})
			if err != nil || d == nil {
				t.Fatalf("check on a full bucket: %v, %v; want a denial", d, err)
			}
			d2, _ := e.Check(ctx, []Transaction{tt.txn(1001)})
			if d2 == nil || !d2.RetryAfter.Equal(d.RetryAfter) {
				t.Fatalf("a refused check moved the retry time: %v then %v", d, d2)
			}
		})
	}
}

// TestEngineSpendAllOrNothing: when one transaction of a spend is refused,
// none of the others is spent.
func TestEngineSpendAllOrNothing(t *testing.T) {
	cert := Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}
	other := Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.org"}
	dup := Transaction{Limit: DuplicateCertificates, Key: NameSetKey([]string{"www.example.com"})}
	newReq := Transaction{Limit: NewRequests, Key: "192.0.2.1"}
	dir := Transaction{Limit: DirectoryRequests, Key: "192.0.2.1"}
	pending := pendingItem("acct1", "fresh", time.Hour)
	full := func(t Transaction, count int) Transaction { t.Cost = count; return t }

	tests := []struct {
		name       string
		fill       []Transaction // spent first, so these buckets are full
		spend      []Transaction
		wantLimit  string
		wantUnused []Transaction // each must still allow its whole count
	}{
		{
			name:       "second stored bucket full",
			fill:       []Transaction{full(dup, 5)},
			spend:      []Transaction{cert, dup},
			wantLimit:  DuplicateCertificates,
			wantUnused: []Transaction{full(cert, 20)},
		},
		{
			name:       "first stored bucket full",
			fill:       []Transaction{full(cert, 20)},
			spend:      []Transaction{cert, dup, other},
			wantLimit:  CertificatesPerRegisteredDomain,
			wantUnused: []Transaction{full(dup, 5), full(other, 20)},
		},
		{
			name:       "last of three full",
			fill:       []Transaction{full(other, 20)},
			spend:      []Transaction{cert, dup, other},
			wantLimit:  CertificatesPerRegisteredDomain,
			wantUnused: []Transaction{full(cert, 20), full(dup, 5)},
		},
		{
			name:       "pending set full after a rate bucket",
			fill:       []Transaction{pendingItem("acct1", "a", time.Hour), pendingItem("acct1", "b", time.Hour)},
			spend:      []Transaction{cert, pending},
			wantLimit:  PendingAuthorizations,
			wantUnused: []Transaction{full(cert, 20)},
		},
		{
			name:       "per-node bucket then a full stored bucket",
			fill:       []Transaction{full(cert, 20)},
			spend:      []Transaction{newReq, cert},
			wantLimit:  CertificatesPerRegisteredDomain,
			wantUnused: []Transaction{full(newReq, 20)},
		},
		{
			name:       "two per-node buckets, second full",
			fill:       []Transaction{full(dir, 40)},
			spend:      []Transaction{newReq, dir},
			wantLimit:  DirectoryRequests,
			wantUnused: []Transaction{full(newReq, 20)},
		},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newTestEngine(t, &Config{Limits: limits(PendingAuthorizations, LimitConfig{Count: 2})}, "")
			for _, f := range tt.fill {
				if d, err := e.Spend(ctx, []Transaction{f}); err != nil || d != nil {
					t.Fatalf("filling %s: %v, %v", f.Limit, d, err)
				}
			}
			d, err := e.Spend(ctx, tt.spend)
			if err != nil {
				t.Fatal(err)
			}
			if d == nil || d.Limit != tt.wantLimit {
				t.Fatalf("spend: denial %+v, want one from %s", d, tt.wantLimit)
			}
			for _, u := range tt.wantUnused {
				if d, err := e.Check(ctx, []Transaction{u}); err != nil || d != nil {
					t.Errorf("%s %s was spent by a refused spend: %v %v", u.Limit, u.Key, d, err)
				}
			}
		})
	}
}

// failingStorage fails every Store of a key containing failKey.
type failingStorage struct {
	*certmagic.FileStorage
	failKey string
}

func (s failingStorage) Store(ctx context.Context, key string, value []byte) error {
	if strings.Contains(key, s.failKey) {
		return errors.New("disk full")
	}
	return s.FileStorage.Store(ctx, key, value)
}

// TestStorageBackendStoreFailureSpendsNothing: a certificate for two
// registered domains writes two records; when either write fails, the
// spend is an error and leaves every bucket as it was.
func TestStorageBackendStoreFailureSpendsNothing(t *testing.T) {
	names := []string{"www.example.com", "www.example.org"}
	for _, failKey := range []string{"example.com", "example.org"} {
		t.Run(failKey, func(t *testing.T) {
			dir := t.TempDir()
			fs := &certmagic.FileStorage{Path: dir}
			e, err := NewEngine(nil, NewStorageBackend(failingStorage{FileStorage: fs, failKey: failKey}), testPrefix, nil)
			if err != nil {
				t.Fatal(err)
			}
			clk := &testClock{now: t0}
			e.SetClock(clk.Now)
			ctx := context.Background()
			txns := CertificateTransactions("acct1", names)
			if _, err := e.Spend(ctx, txns); err == nil {
				t.Fatal("spend with a failing store succeeded")
			}
			good, _ := newTestEngine(t, nil, dir)
			for _, txn := range txns {
				full := txn
				full.Cost = Defaults[txn.Limit].Count
				if d, err := good.Check(ctx, []Transaction{full}); err != nil || d != nil {
					t.Errorf("the failed spend kept part of its cost in %s %s: %v %v", txn.Limit, txn.Key, d, err)
				}
			}
		})
	}
}

// TestEngineRefund gives back a rate bucket's spend.
func TestEngineRefund(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t, nil, "")
	txns := CertificateTransactions("acct1", []string{"www.example.com"})
	for range 5 {
		if d, err := e.Spend(ctx, txns); d != nil || err != nil {
			t.Fatalf("spend: %v %v", d, err)
		}
	}
	if d, _ := e.Check(ctx, txns); d == nil || d.Limit != DuplicateCertificates {
		t.Fatalf("sixth duplicate allowed: %v", d)
	}
	if err := e.Refund(ctx, txns); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.Spend(ctx, txns); d != nil {
		t.Fatalf("after a refund: %v", d)
	}
	if d, _ := e.Check(ctx, []Transaction{{Limit: CertificatesPerRegisteredDomain, Key: "example.com", Cost: 15}}); d != nil {
		t.Fatalf("certificates bucket: want 15 left (5 spent, 1 refunded, 1 spent): %v", d)
	}
	if d, _ := e.Check(ctx, []Transaction{{Limit: CertificatesPerRegisteredDomain, Key: "example.com", Cost: 16}}); d == nil {
		t.Fatal("certificates bucket: more than 15 left")
	}
	// Refunding a bucket never spent is a no-op, not an error.
	if err := e.Refund(ctx, CertificateTransactions("acct1", []string{"never.example.net"})); err != nil {
		t.Fatal(err)
	}
}

// TestEnginePendingAuthorizations: the pending limit is an exact set of
// authorization IDs, not a rate.
func TestEnginePendingAuthorizations(t *testing.T) {
	ctx := context.Background()
	e, clk := newTestEngine(t, &Config{Limits: limits(PendingAuthorizations, LimitConfig{Count: 3})}, "")
	type step struct {
		advance   time.Duration
		refund    bool
		txn       Transaction
		wantRetry time.Duration // since t0; 0: allowed
	}
	steps := []step{
		{txn: pendingItem("acct1", "a", 2*time.Hour)},
		{txn: pendingItem("acct1", "b", time.Hour)},
		{txn: pendingItem("acct1", "c", 3*time.Hour)},
		{txn: pendingItem("acct1", "d", 3*time.Hour), wantRetry: time.Hour}, // b leaves first
		{txn: pendingItem("acct1", "a", 2*time.Hour)},                       // already counted
		{txn: pendingItem("acct2", "x", time.Hour)},                         // another account's set
		{refund: true, txn: pendingItem("acct1", "c", 0)},
		{txn: pendingItem("acct1", "d", 3*time.Hour)},
		{txn: pendingItem("acct1", "e", 3*time.Hour), wantRetry: time.Hour},
		{refund: true, txn: pendingItem("acct1", "never-added", 0)},
		{txn: pendingItem("acct1", "e", 3*time.Hour), wantRetry: time.Hour},
		{advance: time.Hour, txn: pendingItem("acct1", "e", 3*time.Hour)}, // b expired
		{txn: pendingItem("acct1", "f", 3*time.Hour), wantRetry: 2 * time.Hour},
		{advance: 5 * time.Hour, txn: Transaction{Limit: PendingAuthorizations, Key: "acct1", Items: []string{"g", "h", "i"}, Expires: t0.Add(7 * time.Hour)}},
		{txn: pendingItem("acct1", "j", 8*time.Hour), wantRetry: 7 * time.Hour},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		if s.refund {
			if err := e.Refund(ctx, []Transaction{s.txn}); err != nil {
				t.Fatalf("step %d: refund: %v", i, err)
			}
			continue
		}
		d, err := e.Spend(ctx, []Transaction{s.txn})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		switch {
		case s.wantRetry == 0 && d != nil:
			t.Fatalf("step %d (%s %v): refused: %v", i, s.txn.Key, s.txn.Items, d)
		case s.wantRetry != 0 && d == nil:
			t.Fatalf("step %d (%s %v): allowed, want refused", i, s.txn.Key, s.txn.Items)
		case d != nil:
			if !d.RetryAfter.Equal(t0.Add(s.wantRetry)) || d.Count != 3 || d.Key != s.txn.Key || d.Window != 0 {
				t.Fatalf("step %d: denial %+v, want count 3, key %s, retry t0+%v", i, *d, s.txn.Key, s.wantRetry)
			}
		}
	}
}

// TestEnginePendingTooManyAtOnce: an order with more new authorizations
// than the limit, on an empty set, is refused, and the time it names is
// not in the past.
func TestEnginePendingTooManyAtOnce(t *testing.T) {
	e, _ := newTestEngine(t, &Config{Limits: limits(PendingAuthorizations, LimitConfig{Count: 3})}, "")
	d, err := e.Spend(context.Background(), []Transaction{{Limit: PendingAuthorizations, Key: "acct1",
		Items: []string{"a", "b", "c", "d"}, Expires: t0.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if d == nil {
		t.Fatal("4 new pending authorizations allowed with a limit of 3")
	}
	if d.RetryAfter.Before(t0) {
		t.Errorf("denial says the limit frees up at %s, before now (%s): %s", d.RetryAfter.UTC().Format(time.RFC3339), t0.Format(time.RFC3339), d.Detail())
	}
}

func TestDenialDetail(t *testing.T) {
	retry := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		d    Denial
		want []string
	}{
		{
			name: "week",
			d:    Denial{Limit: CertificatesPerRegisteredDomain, Key: "example.com", Count: 20, Window: 168 * time.Hour, RetryAfter: retry},
			want: []string{CertificatesPerRegisteredDomain, `"example.com"`, "20", "week", "2030-01-02T02:04:05Z"},
		},
		{
			name: "hour",
			d:    Denial{Limit: FailedValidations, Key: "acct1:www.example.com", Count: 5, Window: time.Hour, RetryAfter: retry},
			want: []string{FailedValidations, "acct1:www.example.com", "5", "hour", "2030-01-02T02:04:05Z"},
		},
		{
			name: "second",
			d:    Denial{Limit: NewRequests, Key: "192.0.2.1", Count: 20, Window: time.Second, RetryAfter: retry},
			want: []string{NewRequests, "192.0.2.1", "20", "second", "2030-01-02T02:04:05Z"},
		},
		{
			name: "odd window",
			d:    Denial{Limit: DuplicateCertificates, Key: "abc", Count: 2, Window: 90 * time.Minute, RetryAfter: retry},
			want: []string{DuplicateCertificates, "abc", "2", "1h30m0s", "2030-01-02T02:04:05Z"},
		},
		{
			name: "days",
			d:    Denial{Limit: CertificatesPerRegisteredDomain, Key: "example.com", Count: 50, Window: 48 * time.Hour, RetryAfter: retry},
			want: []string{CertificatesPerRegisteredDomain, "example.com", "50", "48h", "2030-01-02T02:04:05Z"},
		},
		{
			name: "pending",
			d:    Denial{Limit: PendingAuthorizations, Key: "acct1", Count: 300, RetryAfter: retry},
			want: []string{PendingAuthorizations, "acct1", "300", "2030-01-02T02:04:05Z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			detail := tt.d.Detail()
			for _, w := range tt.want {
				if !strings.Contains(detail, w) {
					t.Errorf("detail %q lacks %q", detail, w)
				}
			}
			if tt.d.Error() != detail {
				t.Errorf("Error() = %q, want the detail", tt.d.Error())
			}
		})
	}
}

// TestEngineConcurrentSpend: many spends at once on one bucket, from one
// engine or from two engines ("nodes") sharing a storage directory, allow
// exactly the limit.
func TestEngineConcurrentSpend(t *testing.T) {
	const goroutines, count = 40, 20
	tests := []struct {
		name  string
		nodes int
		txn   func(i int) Transaction
	}{
		{"rate bucket, one node", 1, same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"})},
		{"rate bucket, two nodes", 2, same(Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"})},
		{"pending set, one node", 1, pendingItems("acct1")},
		{"pending set, two nodes", 2, pendingItems("acct1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := &Config{Limits: limits(CertificatesPerRegisteredDomain, per(count, time.Hour), PendingAuthorizations, LimitConfig{Count: count})}
			engines := make([]*Engine, tt.nodes)
			for i := range engines {
				engines[i], _ = newTestEngine(t, cfg, dir)
			}
			var (
				wg               sync.WaitGroup
				start            = make(chan struct{})
				mu               sync.Mutex
				allowed, refused int
				allowedBy        = make([]int, tt.nodes)
				errs             []error
			)
			for i := range goroutines {
				node := i % tt.nodes
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					d, err := engines[node].Spend(context.Background(), []Transaction{tt.txn(i)})
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err != nil:
						errs = append(errs, err)
					case d == nil:
						allowed++
						allowedBy[node]++
					default:
						refused++
					}
				}()
			}
			began := time.Now()
			close(start)
			wg.Wait()
			t.Logf("%d spends in %v: %d allowed (by node: %v), %d refused", goroutines, time.Since(began), allowed, allowedBy, refused)
			if len(errs) > 0 {
				t.Fatalf("%d spends failed, first: %v", len(errs), errs[0])
			}
			if allowed != count || refused != goroutines-count {
				t.Fatalf("%d allowed and %d refused; want exactly %d and %d", allowed, refused, count, goroutines-count)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"unknown limit", Config{Limits: limits("certificates_per_domain", per(1, time.Hour))}, `unknown limit "certificates_per_domain"`},
		{"count zero", Config{Limits: limits(DuplicateCertificates, per(0, time.Hour))}, "count must be at least 1"},
		{"negative count", Config{Limits: limits(PendingAuthorizations, LimitConfig{Count: -3})}, "count must be at least 1"},
		{"disable unknown", Config{Disable: []string{"everything"}}, `unknown limit "everything"`},
		{"override unknown limit", Config{Overrides: []Override{{Limit: "nope", Key: "example.com", Count: 1}}}, `unknown limit "nope"`},
		{"override count zero", Config{Overrides: []Override{{Limit: NewRequests, Key: "192.0.2.1", Count: 0}}}, "count of at least 1"},
		{"override without key", Config{Overrides: []Override{{Limit: NewRequests, Count: 3}}}, "needs a key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewEngine(&tt.cfg, NewStorageBackend(&certmagic.FileStorage{Path: t.TempDir()}), testPrefix, nil)
			if err == nil {
				t.Fatalf("config %+v accepted", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q lacks %q", err, tt.wantErr)
			}
		})
	}
}

// TestInForce lists the six limits, in order, after the config's changes.
func TestInForce(t *testing.T) {
	e, _ := newTestEngine(t, &Config{
		Limits: limits(
			CertificatesPerRegisteredDomain, LimitConfig{Count: 3}, // window defaults
			FailedValidations, per(2, 30*time.Minute),
			PendingAuthorizations, per(7, time.Hour), // a window is meaningless here
		),
		Disable: []string{DirectoryRequests},
	}, "")
	want := []InForce{
		{Name: CertificatesPerRegisteredDomain, Count: 3, Window: "168h0m0s"},
		{Name: DuplicateCertificates, Count: 5, Window: "168h0m0s"},
		{Name: FailedValidations, Count: 2, Window: "30m0s"},
		{Name: PendingAuthorizations, Count: 7},
		{Name: NewRequests, Count: 20, Window: "1s", PerNode: true},
		{Name: DirectoryRequests, Count: 40, Window: "1s", PerNode: true, Disabled: true},
	}
	got := e.InForce()
	if len(got) != len(want) {
		t.Fatalf("%d limits, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g := got[i]
		g.Key = ""
		if g != want[i] {
			t.Errorf("limit %d: %+v, want %+v", i, g, want[i])
		}
		if got[i].Key == "" {
			t.Errorf("limit %s does not say what it is counted per", got[i].Name)
		}
	}
}

// TestEnginePendingIgnoresWindow: pending authorizations are a count, not
// a rate, even when a (JSON) config gives them a window: once the
// authorizations have expired, the account may have as many again.
func TestEnginePendingIgnoresWindow(t *testing.T) {
	e, clk := newTestEngine(t, &Config{Limits: limits(PendingAuthorizations, per(3, 720*time.Hour))}, "")
	items := func(i int) Transaction { return pendingItem("acct1", fmt.Sprintf("authz%d", i), time.Hour) }
	if n, _ := spendUntilRefused(t, e, 100, items); n != 3 {
		t.Fatalf("%d allowed, want 3", n)
	}
	clk.Advance(2 * time.Hour)
	next := func(i int) Transaction { return pendingItem("acct1", fmt.Sprintf("later%d", i), 3*time.Hour) }
	if n, d := spendUntilRefused(t, e, 100, next); n != 3 {
		t.Fatalf("after every pending authorization expired: %d allowed, want 3 (%v)", n, d)
	}
}

// fakeCluster is what the node knows of its peers.
type fakeCluster struct {
	alone  bool
	joined time.Time
}

func (c fakeCluster) Alone() bool         { return c.alone }
func (c fakeCluster) JoinedAt() time.Time { return c.joined }

// TestStorageBackendCluster: a node alone spends under its in-process lock
// only; with peers every spend takes the buckets' storage locks, and a node
// that has just joined waits until its peers have noticed it.
func TestStorageBackendCluster(t *testing.T) {
	txn := Transaction{Limit: CertificatesPerRegisteredDomain, Key: "example.com"}
	long := time.Now().Add(-time.Hour)
	tests := []struct {
		name      string
		cluster   Cluster
		held      bool // another node holds the bucket's storage lock
		wantBlock bool // the spend waits (until its context ends)
	}{
		{name: "no cluster information", cluster: nil, held: true, wantBlock: true},
		{name: "alone", cluster: fakeCluster{alone: true, joined: long}, held: true, wantBlock: false},
		{name: "with peers, lock held", cluster: fakeCluster{joined: long}, held: true, wantBlock: true},
		{name: "with peers, lock free", cluster: fakeCluster{joined: long}, held: false, wantBlock: false},
		{name: "just joined peers", cluster: fakeCluster{joined: time.Now()}, held: false, wantBlock: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &certmagic.FileStorage{Path: t.TempDir()}
			backend := NewStorageBackend(fs)
			if tt.cluster != nil {
				backend.SetCluster(tt.cluster)
			}
			e, err := NewEngine(nil, backend, testPrefix, nil)
			if err != nil {
				t.Fatal(err)
			}
			clk := &testClock{now: t0}
			e.SetClock(clk.Now)
			l, _ := e.params(txn)
			key := e.bucket(txn, l).Key

			if tt.held {
				if err := fs.Lock(context.Background(), key); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			d, err := e.Spend(ctx, []Transaction{txn})
			if tt.wantBlock {
				if err == nil {
					t.Fatalf("spend went ahead (denial %v); want it to wait", d)
				}
			} else if err != nil || d != nil {
				t.Fatalf("spend: %v %v", d, err)
			}
			if tt.held {
				if err := fs.Unlock(context.Background(), key); err != nil {
					t.Fatal(err)
				}
			}
			// Whatever happened, a blocked spend spent nothing.
			want := 20
			if !tt.wantBlock {
				want = 19
			}
			if d, _ := e.Check(context.Background(), []Transaction{{Limit: txn.Limit, Key: txn.Key, Cost: want}}); d != nil {
				t.Fatalf("want %d left: %v", want, d)
			}
			if d, _ := e.Check(context.Background(), []Transaction{{Limit: txn.Limit, Key: txn.Key, Cost: want + 1}}); d == nil {
				t.Fatalf("more than %d left", want)
			}
		})
	}
}

// TestEnginePendingStillCounts: items that left the pending state without
// a refund are dropped when, and only when, the set would otherwise be
// full.
func TestEnginePendingStillCounts(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t, &Config{Limits: limits(PendingAuthorizations, LimitConfig{Count: 2})}, "")
	gone := map[string]bool{}
	var asked []string
	var mu sync.Mutex
	still := func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, id)
		return !gone[id]
	}
	spend := func(id string, exp time.Duration) *Denial {
		t.Helper()
		txn := pendingItem("acct1", id, exp)
		txn.StillCounts = still
		d, err := e.Spend(ctx, []Transaction{txn})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if spend("a", time.Hour) != nil || spend("b", 2*time.Hour) != nil {
		t.Fatal("first two refused")
	}
	if len(asked) != 0 {
		t.Fatalf("StillCounts asked about %v while the set had room", asked)
	}
	gone["a"] = true // validated: no refund was written
	if d := spend("c", 3*time.Hour); d != nil {
		t.Fatalf("a left the pending state, yet c is refused: %v", d)
	}
	if d := spend("d", 4*time.Hour); d == nil || !d.RetryAfter.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("b and c still pend: want a refusal naming b's expiry (t0+2h), got %v", d)
	}
}

// TestEngineDuplicateAcrossDomains: a name set spanning registered domains
// is one duplicate bucket, whatever the order of its names.
func TestEngineDuplicateAcrossDomains(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t, &Config{Limits: limits(DuplicateCertificates, per(1, time.Hour))}, "")
	spend := func(names ...string) *Denial {
		t.Helper()
		d, err := e.Spend(ctx, CertificateTransactions("acct1", names))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := spend("www.example.org", "www.example.com"); d != nil {
		t.Fatal(d)
	}
	if d := spend("WWW.EXAMPLE.COM", "www.example.org"); d == nil || d.Limit != DuplicateCertificates {
		t.Fatalf("the same set again: %v, want a duplicate_certificates refusal", d)
	}
	for _, names := range [][]string{{"www.example.org"}, {"www.example.com"}, {"www.example.com", "www.example.org", "www.example.net"}} {
		if d := spend(names...); d != nil {
			t.Fatalf("%v is another set: %v", names, d)
		}
	}
	// Every certificate above counted once against each of its registered
	// domains: example.com 3, example.org 3, example.net 1.
	for domain, left := range map[string]int{"example.com": 17, "example.org": 17, "example.net": 19} {
		txn := Transaction{Limit: CertificatesPerRegisteredDomain, Key: domain, Cost: left}
		if d, _ := e.Check(ctx, []Transaction{txn}); d != nil {
			t.Errorf("%s: want %d left: %v", domain, left, d)
		}
		txn.Cost++
		if d, _ := e.Check(ctx, []Transaction{txn}); d == nil {
			t.Errorf("%s: more than %d left", domain, left)
		}
	}
}
