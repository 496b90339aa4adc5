package acme

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNonceRoundTrip(t *testing.T) {
	ctx := context.Background()
	n := newTestNonces(t, newTestStore(t), "i1")
	a, b := n.New(), n.New()
	if a == b {
		t.Fatalf("two New calls returned the same nonce %q", a)
	}
	if got, want := len(a), base64.RawURLEncoding.EncodedLen(nonceRawLen); got != want {
		t.Errorf("nonce length = %d, want %d", got, want)
	}
	if _, err := base64.RawURLEncoding.DecodeString(a); err != nil {
		t.Errorf("nonce %q is not base64url: %v", a, err)
	}
	// Redeemed out of order: each one once.
	if err := n.Redeem(ctx, b); err != nil {
		t.Fatalf("first Redeem(b): %v", err)
	}
	if err := n.Redeem(ctx, a); err != nil {
		t.Fatalf("first Redeem(a): %v", err)
	}
	for name, nonce := range map[string]string{"a": a, "b": b} {
		if err := n.Redeem(ctx, nonce); !errors.Is(err, errBadNonce) {
			t.Errorf("second Redeem(%s) = %v, want errBadNonce", name, err)
		}
	}
}

// rawNonce decodes a nonce for tampering.
func rawNonce(t *testing.T, nonce string) []byte {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func flipByte(t *testing.T, nonce string, i int) string {
	raw := rawNonce(t, nonce)
	raw[i] ^= 0x01
	return base64.RawURLEncoding.EncodeToString(raw)
}

func TestNonceRejectsForgeries(t *testing.T) {
	ctx := context.Background()
	n := newTestNonces(t, newTestStore(t), "i1")
	tests := []struct {
		name   string
		tamper func(good string) string
	}{
		{"flipped epoch byte", func(s string) string { return flipByte(t, s, 0) }},
		{"flipped counter byte", func(s string) string { return flipByte(t, s, 15) }},
		{"flipped timestamp byte", func(s string) string { return flipByte(t, s, 19) }},
		{"flipped MAC byte", func(s string) string { return flipByte(t, s, nonceRawLen-1) }},
		{"one character short", func(s string) string { return s[:len(s)-1] }},
		{"one character long", func(s string) string { return s + "A" }},
		{"padded", func(s string) string { return s + "==" }},
		{"empty", func(string) string { return "" }},
		{"not base64url, same length", func(s string) string { return "!" + s[1:] }},
		{"standard base64 alphabet", func(s string) string {
			return base64.StdEncoding.WithPadding(base64.NoPadding).EncodeToString(bytes.Repeat([]byte{0xfb}, nonceRawLen))
		}},
		{"truncated MAC, re-encoded", func(s string) string {
			return base64.RawURLEncoding.EncodeToString(rawNonce(t, s)[:nonceRawLen-1])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := n.New()
			bad := tt.tamper(good)
			if bad == good {
				t.Fatal("tamper left the nonce unchanged")
			}
			if err := n.Redeem(ctx, bad); !errors.Is(err, errBadNonce) {
				t.Errorf("Redeem(tampered) = %v, want errBadNonce", err)
			}
			// The forgery did not burn the genuine nonce.
			if err := n.Redeem(ctx, good); err != nil {
				t.Errorf("Redeem(genuine) after a forgery: %v", err)
			}
		})
	}
}

// A nonce stays redeemable while fewer than WindowSize newer nonces were
// issued after it. Instead of issuing 16M nonces the counter is advanced
// directly, and the last New calls are real so the slot is recycled the way
// it would be.
func TestNonceWindow(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		newer uint64 // nonces issued after the old one
		want  error
	}{
		{"one newer", 1, nil},
		{"WindowSize-1 newer", WindowSize - 1, nil},
		{"WindowSize newer", WindowSize, errBadNonce},
		{"WindowSize+1 newer", WindowSize + 1, errBadNonce},
		{"3*WindowSize newer", 3 * WindowSize, errBadNonce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNonces(t, newTestStore(t), "i1")
			old := n.New()
			n.mu.Lock()
			// The last newer nonce is issued by New below.
			n.next += tt.newer - 1
			n.mu.Unlock()
			latest := n.New()
			if err := n.Redeem(ctx, old); !errors.Is(err, tt.want) {
				t.Errorf("Redeem(old) = %v, want %v", err, tt.want)
			}
			if err := n.Redeem(ctx, latest); err != nil {
				t.Errorf("Redeem(latest) = %v, want nil", err)
			}
		})
	}
}

// The nonce issued WindowSize after a used one takes over its bitmap slot
// and must start out unused.
func TestNonceSlotReuse(t *testing.T) {
	ctx := context.Background()
	n := newTestNonces(t, newTestStore(t), "i1")
	old := n.New()
	if err := n.Redeem(ctx, old); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.next += WindowSize - 1 // the next New gets old's counter + WindowSize
	n.mu.Unlock()
	heir := n.New()
	if err := n.Redeem(ctx, heir); err != nil {
		t.Errorf("Redeem(nonce in a recycled slot) = %v, want nil", err)
	}
	if err := n.Redeem(ctx, old); !errors.Is(err, errBadNonce) {
		t.Errorf("Redeem(old) = %v, want errBadNonce", err)
	}
}

// A nonce used before its slot is recycled stays used: once the window has
// moved on by less than WindowSize, the bit is still set.
func TestNonceUsedStaysUsedAcrossWindow(t *testing.T) {
	ctx := context.Background()
	n := newTestNonces(t, newTestStore(t), "i1")
	old := n.New()
	if err := n.Redeem(ctx, old); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.next += WindowSize - 2
	n.mu.Unlock()
	n.New()
	if err := n.Redeem(ctx, old); !errors.Is(err, errBadNonce) {
		t.Errorf("Redeem(used) = %v, want errBadNonce", err)
	}
}

func TestNonceSaveAndLoad(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	n1 := newTestNonces(t, store, "i1")
	used, unused := n1.New(), n1.New()
	if err := n1.Redeem(ctx, used); err != nil {
		t.Fatal(err)
	}
	if err := n1.Save(ctx); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if !store.ExistsRaw(ctx, "nonce", "state", "i1") {
		t.Fatal("Save wrote no state under nonce/state/i1")
	}

	// Another instance does not take i1's state.
	other := newTestNonces(t, store, "i2")
	if other.epoch == n1.epoch {
		t.Error("instance i2 took the epoch of i1")
	}
	if !store.ExistsRaw(ctx, "nonce", "state", "i1") {
		t.Fatal("loading instance i2 deleted the state of i1")
	}

	n2 := newTestNonces(t, store, "i1")
	if n2.epoch != n1.epoch || n2.next != n1.next {
		t.Errorf("restored epoch/next = %x/%d, want %x/%d", n2.epoch, n2.next, n1.epoch, n1.next)
	}
	if store.ExistsRaw(ctx, "nonce", "state", "i1") {
		t.Error("the saved state is still there after LoadNonces took it")
	}
	if err := n2.Redeem(ctx, unused); err != nil {
		t.Errorf("Redeem(unused before restart) = %v, want nil", err)
	}
	if err := n2.Redeem(ctx, used); !errors.Is(err, errBadNonce) {
		t.Errorf("Redeem(used before restart) = %v, want errBadNonce", err)
	}
	if err := n2.Redeem(ctx, unused); !errors.Is(err, errBadNonce) {
		t.Errorf("second Redeem(unused before restart) = %v, want errBadNonce", err)
	}
	// The counter goes on: no nonce of n1 is handed out again.
	if fresh := n2.New(); fresh == used || fresh == unused {
		t.Errorf("restored instance reissued nonce %q", fresh)
	}

	// The state was consumed: without another Save the next start is a
	// fresh epoch.
	n3 := newTestNonces(t, store, "i1")
	if n3.epoch == n1.epoch {
		t.Error("second LoadNonces without Save took the old epoch back")
	}
	if n3.next != 1 {
		t.Errorf("fresh epoch starts at counter %d, want 1", n3.next)
	}
}

// A state that does not decode is ignored (a fresh epoch) and removed.
func TestNonceLoadCorruptState(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	tests := []struct {
		name  string
		state string
	}{
		{"not JSON", "{"},
		{"short bitmap", `{"epoch":7,"next":9,"used":"AAAA"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := store.StoreRaw(ctx, []byte(tt.state), "nonce", "state", "i1"); err != nil {
				t.Fatal(err)
			}
			n := newTestNonces(t, store, "i1")
			if n.epoch == 7 || n.next != 1 {
				t.Errorf("took a corrupt state: epoch %x next %d", n.epoch, n.next)
			}
			if store.ExistsRaw(ctx, "nonce", "state", "i1") {
				t.Error("corrupt state left in storage")
			}
			if err := n.Redeem(ctx, n.New()); err != nil {
				t.Errorf("fresh nonce: %v", err)
			}
		})
	}
}

// settle makes nodes look as they do once they have run side by side for a
// while: each started well before now, and each has seen the others'
// heartbeats.
func settle(ctx context.Context, nodes ...*Nonces) {
	for _, n := range nodes {
		n.started = n.started.Add(-ForeignNonceGrace - time.Second)
	}
	for _, n := range nodes {
		n.heartbeat(ctx)
	}
}

// TestNonceForeignNonceBeforeGrace: a node refuses nonces that another node
// issued before it could have been seen there (or that a crashed process
// issued), since their redemption may not have been recorded.
func TestNonceForeignNonceBeforeGrace(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	a := newTestNonces(t, store, "node-a")
	b := newTestNonces(t, store, "node-b")
	if err := b.Redeem(ctx, a.New()); !errors.Is(err, errBadNonce) {
		t.Fatalf("nonce issued before the grace period = %v, want errBadNonce", err)
	}
}

// TestNonceAloneWritesNoMarkers: a single node keeps redemptions in memory.
func TestNonceAloneWritesNoMarkers(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	n := newTestNonces(t, store, "alone")
	if err := n.Redeem(ctx, n.New()); err != nil {
		t.Fatal(err)
	}
	if hours, _ := store.ListRaw(ctx, "nonce", "used"); len(hours) != 0 {
		t.Errorf("a single node wrote nonce markers: %v", hours)
	}
}

func TestNonceForeignEpoch(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	a := newTestNonces(t, store, "node-a")
	b := newTestNonces(t, store, "node-b")
	c := newTestNonces(t, store, "node-c")
	if a.epoch == b.epoch {
		t.Fatal("two instances got the same epoch")
	}
	settle(ctx, a, b, c)
	x := a.New()
	if err := b.Redeem(ctx, x); err != nil {
		t.Fatalf("first Redeem of a foreign nonce = %v, want nil", err)
	}
	if err := b.Redeem(ctx, x); !errors.Is(err, errBadNonce) {
		t.Errorf("second Redeem on the same node = %v, want errBadNonce", err)
	}
	if err := c.Redeem(ctx, x); !errors.Is(err, errBadNonce) {
		t.Errorf("second Redeem on a third node = %v, want errBadNonce", err)
	}
}

// RFC 8555 §6.5: once a nonce has appeared in a request, the server MUST
// consider it invalid. Nodes sharing a storage are one server, so a nonce
// redeemed on one node must not be redeemable on another, nor on the same
// instance after it restarted without a clean stop.
func TestNonceReplayAcrossNodes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name          string
		first, second string // who redeems first, then who gets the replay
	}{
		{"issuer first, then another node", "issuer", "other"},
		{"another node first, then the issuer", "other", "issuer"},
		// A process that stops without Save (a crash) comes back with a
		// fresh epoch; the nonces it had redeemed are foreign to it now.
		{"issuer first, then the issuer restarted after a crash", "issuer", "restarted issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newTestStore(t)
			issuer := newTestNonces(t, store, "issuer")
			node := func(name string) *Nonces {
				switch name {
				case "issuer":
					return issuer
				case "other":
					return newTestNonces(t, store, "other")
				default: // restarted issuer: same instance ID, no saved state
					return newTestNonces(t, store, "issuer")
				}
			}
			first, second := node(tt.first), node(tt.second)
			if tt.second != "restarted issuer" {
				settle(ctx, issuer, first, second)
			}
			x := issuer.New()
			if err := first.Redeem(ctx, x); err != nil {
				t.Fatalf("first Redeem on %s: %v", tt.first, err)
			}
			if err := second.Redeem(ctx, x); !errors.Is(err, errBadNonce) {
				t.Errorf("replay on %s = %v, want errBadNonce", tt.second, err)
			}
		})
	}
}

func TestNonceForeignAge(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		now  time.Duration // the redeeming node's clock, relative to issuance
		want error
	}{
		{"just issued", 0, nil},
		{"just within max age", ForeignNonceMaxAge - time.Second, nil},
		{"at max age", ForeignNonceMaxAge, nil},
		{"older than max age", ForeignNonceMaxAge + time.Second, errBadNonce},
		{"a day old", 24 * time.Hour, errBadNonce},
		{"issuer clock 30s ahead", -30 * time.Second, nil},
		{"issuer clock 2m ahead", -2 * time.Minute, errBadNonce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newTestStore(t)
			a := newTestNonces(t, store, "node-a")
			b := newTestNonces(t, store, "node-b")
			a.now = newFakeClock(t0).Now
			b.now = newFakeClock(t0.Add(tt.now)).Now
			b.started = t0.Add(-time.Hour) // b has run long enough for a to know it
			if err := b.Redeem(ctx, a.New()); !errors.Is(err, tt.want) {
				t.Errorf("Redeem = %v, want %v", err, tt.want)
			}
		})
	}
}

// Own-epoch nonces are limited by the window, not by age.
func TestNonceOwnEpochHasNoAgeLimit(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	n := newTestNonces(t, newTestStore(t), "i1")
	n.now = clock.Now
	x := n.New()
	clock.Add(48 * time.Hour)
	if err := n.Redeem(ctx, x); err != nil {
		t.Errorf("Redeem of a 2-day-old own nonce = %v, want nil", err)
	}
}

func TestNonceSecretShared(t *testing.T) {
	ctx := context.Background()
	store := newTestStore(t)
	a := newTestNonces(t, store, "node-a")
	b := newTestNonces(t, store, "node-b")
	if len(a.secret) != 32 {
		t.Errorf("secret is %d bytes, want 32", len(a.secret))
	}
	if !bytes.Equal(a.secret, b.secret) {
		t.Error("two LoadNonces on one storage have different secrets")
	}
	stored, err := store.LoadRaw(ctx, "nonce", "secret")
	if err != nil || !bytes.Equal(stored, a.secret) {
		t.Errorf("stored secret differs from the one in use (err %v)", err)
	}

	// A CA on another storage has its own secret; its nonces are forgeries
	// here.
	stranger := newTestNonces(t, newTestStore(t), "node-a")
	if bytes.Equal(stranger.secret, a.secret) {
		t.Fatal("two storages got the same secret")
	}
	if err := a.Redeem(ctx, stranger.New()); !errors.Is(err, errBadNonce) {
		t.Errorf("Redeem of another CA's nonce = %v, want errBadNonce", err)
	}
}

func TestNonceConcurrent(t *testing.T) {
	const goroutines, perGoroutine = 8, 1000
	ctx := context.Background()
	n := newTestNonces(t, newTestStore(t), "i1")
	var (
		wg      sync.WaitGroup
		seen    sync.Map
		dupes   atomic.Int64
		failed  atomic.Int64
		replays atomic.Int64
	)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perGoroutine; i++ {
				x := n.New()
				if _, dup := seen.LoadOrStore(x, true); dup {
					dupes.Add(1)
				}
				if err := n.Redeem(ctx, x); err != nil {
					failed.Add(1)
				}
				if err := n.Redeem(ctx, x); err == nil {
					replays.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if d := dupes.Load(); d != 0 {
		t.Errorf("%d duplicate nonces", d)
	}
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d first redemptions failed", f, goroutines*perGoroutine)
	}
	if r := replays.Load(); r != 0 {
		t.Errorf("%d second redemptions succeeded", r)
	}
	if n.next-1 != goroutines*perGoroutine {
		t.Errorf("counters issued = %d, want %d", n.next-1, goroutines*perGoroutine)
	}
}

func BenchmarkNonceNew(b *testing.B) {
	n := newTestNonces(b, newTestStore(b), "bench")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.New()
		}
	})
}

func BenchmarkNonceRedeem(b *testing.B) {
	ctx := context.Background()
	n := newTestNonces(b, newTestStore(b), "bench")
	if b.N > WindowSize {
		b.Skipf("b.N = %d exceeds the window", b.N)
	}
	nonces := make([]string, b.N)
	for i := range nonces {
		nonces[i] = n.New()
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := n.Redeem(ctx, nonces[next.Add(1)-1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkNonceRedeemForeign measures the storage round trip a nonce of
// another node costs (file storage).
func BenchmarkNonceRedeemForeign(b *testing.B) {
	ctx := context.Background()
	store := newTestStore(b)
	a, other := newTestNonces(b, store, "a"), newTestNonces(b, store, "b")
	settle(ctx, a, other)
	nonces := make([]string, b.N)
	for i := range nonces {
		nonces[i] = a.New()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := other.Redeem(ctx, nonces[i]); err != nil {
			b.Fatal(err)
		}
	}
}
