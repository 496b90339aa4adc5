package acme

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/acmeca/caddy-acmeca/storage"
)

// newTestStore returns a Store for one CA on a fresh file storage.
func newTestStore(t testing.TB) *storage.Store {
	t.Helper()
	return storage.New(&certmagic.FileStorage{Path: t.TempDir()}, "test-ca")
}

// newTestNonces loads the nonces of instanceID on store.
func newTestNonces(t testing.TB, store *storage.Store, instanceID string) *Nonces {
	t.Helper()
	n, err := LoadNonces(context.Background(), store, instanceID)
	if err != nil {
		t.Fatalf("LoadNonces(%s): %v", instanceID, err)
	}
	t.Cleanup(func() { n.Stop(context.Background()) })
	return n
}

// fakeClock is an injected clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// wantProblem checks that p has the short ACME error type typ (p must be
// nil when typ is "") and that its detail holds every string in contains.
func wantProblem(t *testing.T, p *Problem, typ string, contains ...string) {
	t.Helper()
	if typ == "" {
		if p != nil {
			t.Fatalf("want no problem, got %s (status %d)", p, p.Status)
		}
		return
	}
	if p == nil {
		t.Fatalf("want a %s problem, got none", typ)
	}
	if p.Type != ErrorNS+typ {
		t.Errorf("problem type = %q, want %q (detail: %s)", p.Type, ErrorNS+typ, p.Detail)
	}
	for _, c := range contains {
		if !strings.Contains(p.Detail, c) {
			t.Errorf("problem detail %q does not contain %q", p.Detail, c)
		}
	}
}
