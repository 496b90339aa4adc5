package acme

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// TestPlainID: a URL segment names a resource only in the one spelling
// storage keys use, so two spellings cannot take two different locks on
// one record.
func TestPlainID(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"AbC-_09", true},
		{"acct.order", true},
		{"", false},
		{".", false},
		{"..", false},
		{`a\b`, false},
		{"a%5Cb", false},
		{"a b", false},
		{string(make([]byte, 129)), false},
	} {
		if got := plainID(tt.id); got != tt.want {
			t.Errorf("plainID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

// TestNonceForeignConcurrentReplay: the same foreign nonce sent twice at
// once on one node is accepted once.
func TestNonceForeignConcurrentReplay(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	a := newTestNonces(t, store, "node-a")
	b := newTestNonces(t, store, "node-b")
	settle(ctx, a, b)
	for round := 0; round < 20; round++ {
		x := a.New()
		var ok atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if b.Redeem(ctx, x) == nil {
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Fatalf("round %d: a foreign nonce was accepted %d times", round, ok.Load())
		}
	}
}
