package acme

import (
	"context"
	"testing"
	"time"

	"github.com/acmeca/caddy-acmeca/internal/testdns"
	"github.com/acmeca/caddy-acmeca/storage"
	"github.com/acmeca/caddy-acmeca/validate"
)

// TestRecheckCAA: finalize checks CAA again for authorizations validated
// more than 8 hours earlier, and only for those.
func TestRecheckCAA(t *testing.T) {
	ctx := context.WithValue(context.Background(), baseURLKey, "https://ca.test/acme")
	dns := testdns.Start(t)
	dns.SetCAA("old.example.test", 0, "issue", "other-ca.example")
	dns.SetCAA("fresh.example.test", 0, "issue", "other-ca.example")
	clock := newFakeClock(testEpoch)
	store := newTestStore(t)
	s := NewServer(Config{
		Store:         store,
		Shared:        NewShared(newTestNonces(t, store, "test")),
		Resolver:      validate.NewResolver([]string{dns.Addr()}, time.Second),
		CAA:           true,
		CAAIdentities: []string{"ca.test"},
		Now:           clock.Now,
	})
	authz := func(id, name string, validatedAgo time.Duration) string {
		a := &storage.Authorization{
			ID: id, AccountID: "acct", Identifier: storage.Identifier{Type: "dns", Value: name},
			Status: storage.StatusValid, Expires: testEpoch.Add(24 * time.Hour), ValidatedAt: testEpoch.Add(-validatedAgo),
			Challenges: []storage.Challenge{{Type: "http-01", Status: storage.StatusValid}},
		}
		if err := store.PutAuthorization(ctx, a); err != nil {
			t.Fatal(err)
		}
		return id
	}
	fresh := &storage.Order{ID: "acct.o1", AccountID: "acct", AuthzIDs: []string{authz("a1", "fresh.example.test", time.Hour)}}
	if p := s.recheckCAA(ctx, fresh, nil); p != nil {
		t.Errorf("an authorization validated an hour ago was checked again: %v", p)
	}
	old := &storage.Order{ID: "acct.o2", AccountID: "acct", AuthzIDs: []string{authz("a2", "old.example.test", 9*time.Hour)}}
	wantProblem(t, s.recheckCAA(ctx, old, nil), ErrCAA, "old.example.test", "other-ca.example")

	dns.Clear("old.example.test")
	if p := s.recheckCAA(ctx, old, nil); p != nil {
		t.Errorf("with the CAA record gone: %v", p)
	}
}
