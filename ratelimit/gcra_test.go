package ratelimit

import (
	"testing"
	"time"
)

// t0 is the fixed "now" of the unit tests; every time is an offset from it.
var t0 = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

// TestGCRA drives one bucket through a sequence of spends, each at an
// offset from t0, and checks every answer.
func TestGCRA(t *testing.T) {
	type step struct {
		at        time.Duration // since t0
		cost      int
		wantOK    bool
		wantRetry time.Duration // since t0, when refused
	}
	tests := []struct {
		name   string
		count  int
		window time.Duration
		steps  []step
	}{
		{
			name: "N at once, N+1 refused until window/N", count: 4, window: time.Hour,
			steps: []step{
				{at: 0, cost: 1, wantOK: true},
				{at: 0, cost: 1, wantOK: true},
				{at: 0, cost: 1, wantOK: true},
				{at: 0, cost: 1, wantOK: true},
				{at: 0, cost: 1, wantOK: false, wantRetry: 15 * time.Minute},
				{at: 15*time.Minute - time.Nanosecond, cost: 1, wantOK: false, wantRetry: 15 * time.Minute},
			},
		},
		{
			name: "refills one every window/N", count: 4, window: time.Hour,
			steps: []step{
				{at: 0, cost: 4, wantOK: true},
				{at: 15 * time.Minute, cost: 1, wantOK: true},
				{at: 15 * time.Minute, cost: 1, wantOK: false, wantRetry: 30 * time.Minute},
				{at: 30 * time.Minute, cost: 1, wantOK: true},
				// A full window of quiet refills the whole bucket, no more.
				{at: 30*time.Minute + time.Hour, cost: 4, wantOK: true},
				{at: 30*time.Minute + time.Hour, cost: 1, wantOK: false, wantRetry: 45*time.Minute + time.Hour},
			},
		},
		{
			name: "long idle does not bank more than N", count: 2, window: time.Hour,
			steps: []step{
				{at: 0, cost: 1, wantOK: true},
				{at: 100 * time.Hour, cost: 2, wantOK: true},
				{at: 100 * time.Hour, cost: 1, wantOK: false, wantRetry: 100*time.Hour + 30*time.Minute},
			},
		},
		{
			name: "cost above one", count: 4, window: time.Hour,
			steps: []step{
				{at: 0, cost: 2, wantOK: true},
				{at: 0, cost: 3, wantOK: false, wantRetry: 15 * time.Minute}, // one slot short
				{at: 0, cost: 2, wantOK: true},
				{at: 0, cost: 2, wantOK: false, wantRetry: 30 * time.Minute},
				{at: 30 * time.Minute, cost: 2, wantOK: true},
			},
		},
		{
			name: "cost above count never fits", count: 2, window: time.Hour,
			steps: []step{
				{at: 0, cost: 3, wantOK: false, wantRetry: 30 * time.Minute},
				{at: 0, cost: 2, wantOK: true},
			},
		},
		{
			name: "one per window", count: 1, window: 168 * time.Hour,
			steps: []step{
				{at: 0, cost: 1, wantOK: true},
				{at: time.Hour, cost: 1, wantOK: false, wantRetry: 168 * time.Hour},
				{at: 168 * time.Hour, cost: 1, wantOK: true},
			},
		},
		{
			name: "defaults: 20 per week", count: 20, window: 168 * time.Hour,
			steps: append(repeatSteps(20, step{cost: 1, wantOK: true}),
				step{cost: 1, wantOK: false, wantRetry: 168 * time.Hour / 20}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tat time.Time
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				newTAT, ok, retry := gcra(now, tat, tt.count, tt.window, s.cost)
				if ok != s.wantOK {
					t.Fatalf("step %d (at %v, cost %d): ok = %v, want %v", i, s.at, s.cost, ok, s.wantOK)
				}
				if !ok {
					if want := t0.Add(s.wantRetry); !retry.Equal(want) {
						t.Fatalf("step %d: retryAt = +%v, want +%v", i, retry.Sub(t0), s.wantRetry)
					}
					if !newTAT.Equal(maxTime(tat, now)) {
						t.Fatalf("step %d: a refusal moved the TAT to +%v", i, newTAT.Sub(t0))
					}
					continue
				}
				if !retry.IsZero() {
					t.Fatalf("step %d: allowed but retryAt = %v", i, retry)
				}
				tat = newTAT
			}
		})
	}
}

func repeatSteps[S any](n int, s S) []S {
	out := make([]S, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestGCRARefund gives back what a spend took, never below now: a refund
// cannot bank capacity beyond a full bucket.
func TestGCRARefund(t *testing.T) {
	tests := []struct {
		name    string
		tat     time.Duration // since t0
		cost    int
		wantTAT time.Duration
	}{
		{name: "one back", tat: 45 * time.Minute, cost: 1, wantTAT: 30 * time.Minute},
		{name: "several back", tat: 45 * time.Minute, cost: 3, wantTAT: 0},
		{name: "never below now", tat: 15 * time.Minute, cost: 3, wantTAT: 0},
		{name: "old tat", tat: -time.Hour, cost: 1, wantTAT: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := gcraRefund(t0, t0.Add(tt.tat), 4, time.Hour, tt.cost)
			if want := t0.Add(tt.wantTAT); !got.Equal(want) {
				t.Fatalf("TAT after refund = +%v, want +%v", got.Sub(t0), tt.wantTAT)
			}
		})
	}

	// After a refund that hit the floor, the bucket holds exactly N again.
	tat := gcraRefund(t0, t0.Add(15*time.Minute), 4, time.Hour, 10)
	for i := range 4 {
		var ok bool
		if tat, ok, _ = gcra(t0, tat, 4, time.Hour, 1); !ok {
			t.Fatalf("spend %d after refund refused", i+1)
		}
	}
	if _, ok, _ := gcra(t0, tat, 4, time.Hour, 1); ok {
		t.Fatal("a refund banked more than a full bucket")
	}
}

// TestPendingSet checks the counting bucket's pruning and earliest expiry.
func TestPendingSet(t *testing.T) {
	s := pendingSet{
		"a": t0.Add(-time.Second).Unix(),
		"b": t0.Unix(), // expires exactly now: gone
		"c": t0.Add(2 * time.Hour).Unix(),
		"d": t0.Add(time.Hour).Unix(),
	}
	s.prune(t0)
	if len(s) != 2 || s["c"] == 0 || s["d"] == 0 {
		t.Fatalf("after prune: %v, want c and d", s)
	}
	if got, want := s.earliestExpiry(), t0.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("earliestExpiry = %v, want %v", got, want)
	}
}
