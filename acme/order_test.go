package acme

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/acmeca/caddy-acmeca/storage"
)

var testEpoch = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// newTestServer builds a Server on a fresh file storage, with no
// validators and the injected clock.
func newTestServer(t *testing.T, clock *fakeClock) *Server {
	t.Helper()
	store := newTestStore(t)
	return NewServer(Config{
		Store:      store,
		Shared:     NewShared(newTestNonces(t, store, "test")),
		Validators: nil,
		Now:        clock.Now,
	})
}

// authzSpec describes an authorization relative to the clock.
type authzSpec struct {
	status  string
	expires time.Duration // from now
	chErr   *storage.Problem
}

func TestOrderState(t *testing.T) {
	ctx := context.Background()
	caaErr := &storage.Problem{Type: ErrorNS + ErrCAA, Detail: "CAA forbids issuance", Status: 403}
	respErr := &storage.Problem{Type: ErrorNS + ErrIncorrectResponse, Detail: "wrong key authorization", Status: 403}
	storedErr := &storage.Problem{Type: ErrorNS + ErrServerInternal, Detail: "signing failed for good", Status: 500}
	valid := authzSpec{status: storage.StatusValid, expires: 30 * 24 * time.Hour}
	pending := authzSpec{status: storage.StatusPending, expires: 7 * 24 * time.Hour}

	tests := []struct {
		name     string
		authzs   []authzSpec
		status   string        // the order's stored status
		expires  time.Duration // the order's expiry, from now
		orderErr *storage.Problem

		want       string
		wantType   string // type of the order's error, "" for none
		wantDetail string
	}{
		{
			name:   "all authorizations valid",
			authzs: []authzSpec{valid, valid}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusReady,
		},
		{
			name:   "one pending",
			authzs: []authzSpec{valid, pending}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusPending,
		},
		{
			name:   "all pending",
			authzs: []authzSpec{pending, pending}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusPending,
		},
		{
			name:   "one invalid with a challenge error",
			authzs: []authzSpec{valid, {status: storage.StatusInvalid, expires: time.Hour, chErr: respErr}}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusInvalid, wantType: ErrIncorrectResponse, wantDetail: "wrong key authorization",
		},
		{
			name:   "one invalid by CAA",
			authzs: []authzSpec{{status: storage.StatusInvalid, expires: time.Hour, chErr: caaErr}, pending}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusInvalid, wantType: ErrCAA, wantDetail: "CAA forbids issuance",
		},
		{
			name:   "invalid after a pending one",
			authzs: []authzSpec{pending, {status: storage.StatusInvalid, expires: time.Hour, chErr: respErr}}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusInvalid, wantType: ErrIncorrectResponse,
		},
		{
			name:   "one deactivated",
			authzs: []authzSpec{valid, {status: storage.StatusDeactivated, expires: time.Hour}}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusInvalid, wantType: ErrUnauthorized, wantDetail: "deactivated",
		},
		{
			name:   "one revoked",
			authzs: []authzSpec{{status: storage.StatusRevoked, expires: time.Hour}}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusInvalid, wantType: ErrUnauthorized, wantDetail: "revoked",
		},
		{
			name:   "order expired",
			authzs: []authzSpec{valid}, status: storage.StatusPending, expires: -time.Second,
			want: storage.StatusInvalid, wantType: ErrMalformed, wantDetail: "expired",
		},
		{
			name:   "order expires this instant",
			authzs: []authzSpec{valid}, status: storage.StatusPending, expires: 0,
			want: storage.StatusReady,
		},
		{
			name:   "pending authorization expired",
			authzs: []authzSpec{valid, {status: storage.StatusPending, expires: -time.Second}}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusInvalid, wantType: ErrUnauthorized, wantDetail: "expired",
		},
		{
			name:   "valid authorization expired",
			authzs: []authzSpec{{status: storage.StatusValid, expires: -time.Second}}, status: storage.StatusPending, expires: time.Hour,
			want: storage.StatusInvalid, wantType: ErrUnauthorized, wantDetail: "expired",
		},
		{
			name:   "valid",
			authzs: []authzSpec{valid}, status: storage.StatusValid, expires: time.Hour,
			want: storage.StatusValid,
		},
		{
			name:   "valid stays valid past expiry",
			authzs: []authzSpec{{status: storage.StatusValid, expires: -time.Hour}}, status: storage.StatusValid, expires: -time.Hour,
			want: storage.StatusValid,
		},
		{
			name:   "stored invalid keeps its error",
			authzs: []authzSpec{valid}, status: storage.StatusInvalid, expires: time.Hour, orderErr: storedErr,
			want: storage.StatusInvalid, wantType: ErrServerInternal, wantDetail: "signing failed for good",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(testEpoch)
			s := newTestServer(t, clock)
			now := clock.Now()
			o := &storage.Order{
				ID:          "order1",
				AccountID:   "acct1",
				Status:      tt.status,
				Expires:     now.Add(tt.expires),
				CreatedAt:   now.Add(-time.Hour),
				Error:       tt.orderErr,
				Identifiers: nil,
			}
			for i, as := range tt.authzs {
				name := fmt.Sprintf("n%d.example.com", i)
				a := &storage.Authorization{
					ID:         fmt.Sprintf("authz%d", i),
					AccountID:  "acct1",
					Identifier: dnsID(name),
					Status:     as.status,
					Expires:    now.Add(as.expires),
					CreatedAt:  now.Add(-time.Hour),
					Challenges: []storage.Challenge{{Type: "http-01", Token: "tok", Status: storage.StatusPending}},
				}
				if as.chErr != nil {
					a.Challenges[0].Status, a.Challenges[0].Error = storage.StatusInvalid, as.chErr
				}
				if err := s.store.PutAuthorization(ctx, a); err != nil {
					t.Fatal(err)
				}
				o.Identifiers = append(o.Identifiers, dnsID(name))
				o.AuthzIDs = append(o.AuthzIDs, a.ID)
			}
			if err := s.store.PutOrder(ctx, o); err != nil {
				t.Fatal(err)
			}
			stored, err := s.store.Order(ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}

			status, orderErr, p := s.orderState(ctx, stored)
			if p != nil {
				t.Fatalf("orderState failed: %v", p)
			}
			if status != tt.want {
				t.Errorf("status = %q, want %q", status, tt.want)
			}
			if tt.wantType == "" {
				if orderErr != nil {
					t.Errorf("order error = %v, want none", orderErr)
				}
			} else {
				wantProblem(t, orderErr, tt.wantType, tt.wantDetail)
			}
			// orderState only reads.
			again, err := s.store.Order(ctx, o.ID)
			if err != nil || again.Status != tt.status {
				t.Errorf("stored status changed to %q (err %v)", again.Status, err)
			}
		})
	}
}

// The order's status follows the clock without any write: the same stored
// records give pending, then invalid once the authorization has expired.
func TestOrderStateFollowsClock(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(testEpoch)
	s := newTestServer(t, clock)
	a := &storage.Authorization{ID: "z", AccountID: "acct1", Identifier: dnsID("example.com"), Status: storage.StatusPending, Expires: testEpoch.Add(time.Hour)}
	o := &storage.Order{ID: "o", AccountID: "acct1", Status: storage.StatusPending, Identifiers: []storage.Identifier{dnsID("example.com")}, AuthzIDs: []string{"z"}, Expires: testEpoch.Add(2 * time.Hour)}
	if err := s.store.PutAuthorization(ctx, a); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at   time.Duration
		want string
	}{
		{0, storage.StatusPending},
		{time.Hour, storage.StatusPending},
		{time.Hour + time.Nanosecond, storage.StatusInvalid},
		{3 * time.Hour, storage.StatusInvalid},
	}
	for _, st := range steps {
		clock.Set(testEpoch.Add(st.at))
		if got, _, p := s.orderState(ctx, o); p != nil || got != st.want {
			t.Errorf("at +%v: status %q (%v), want %q", st.at, got, p, st.want)
		}
	}
}

func TestOrderStateMissingAuthorization(t *testing.T) {
	clock := newFakeClock(testEpoch)
	s := newTestServer(t, clock)
	o := &storage.Order{ID: "o", Status: storage.StatusPending, AuthzIDs: []string{"gone"}, Expires: testEpoch.Add(time.Hour)}
	// An order whose authorization write failed is invalid, and says why.
	status, orderErr, p := s.orderState(context.Background(), o)
	if p != nil || status != storage.StatusInvalid {
		t.Fatalf("status %q (%v), want invalid", status, p)
	}
	wantProblem(t, orderErr, ErrServerInternal, "lost")
}

// A challenge left in processing by a stopped process is validated again
// when its order is read. With no validator for its type the challenge,
// and so the authorization and the order, become invalid.
func TestOrderStateResumesStaleChallenge(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(testEpoch)
	s := newTestServer(t, clock)
	if err := s.store.PutAccount(ctx, &storage.Account{ID: "acct1", Status: storage.StatusValid, Thumbprint: "thumb"}); err != nil {
		t.Fatal(err)
	}
	a := &storage.Authorization{
		ID: "z", AccountID: "acct1", Identifier: dnsID("example.com"), Status: storage.StatusPending, Expires: testEpoch.Add(time.Hour),
		Challenges: []storage.Challenge{{Type: "http-01", Token: "tok", Status: storage.StatusProcessing, ProcessingSince: testEpoch.Add(-staleAfter - time.Second)}},
	}
	o := &storage.Order{ID: "o", AccountID: "acct1", Status: storage.StatusPending, AuthzIDs: []string{"z"}, Expires: testEpoch.Add(time.Hour)}
	if err := s.store.PutAuthorization(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _, p := s.orderState(ctx, o); p != nil || got != storage.StatusPending {
		t.Fatalf("while validating: %q %v, want pending", got, p)
	}
	s.Shared.validations.Wait()
	got, orderErr, p := s.orderState(ctx, o)
	if p != nil || got != storage.StatusInvalid {
		t.Fatalf("after validation: %q %v, want invalid", got, p)
	}
	wantProblem(t, orderErr, ErrServerInternal, "example.com", "no longer offered")
}

func TestAuthzStatus(t *testing.T) {
	now := testEpoch
	tests := []struct {
		status  string
		expires time.Duration
		want    string
	}{
		{storage.StatusPending, time.Hour, storage.StatusPending},
		{storage.StatusPending, 0, storage.StatusPending},
		{storage.StatusPending, -time.Nanosecond, storage.StatusExpired},
		{storage.StatusValid, time.Hour, storage.StatusValid},
		{storage.StatusValid, -time.Hour, storage.StatusExpired},
		{storage.StatusInvalid, -time.Hour, storage.StatusInvalid},
		{storage.StatusDeactivated, -time.Hour, storage.StatusDeactivated},
		{storage.StatusRevoked, -time.Hour, storage.StatusRevoked},
		{storage.StatusInvalid, time.Hour, storage.StatusInvalid},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s expires %v", tt.status, tt.expires), func(t *testing.T) {
			a := &storage.Authorization{Status: tt.status, Expires: now.Add(tt.expires)}
			if got := authzStatus(a, now); got != tt.want {
				t.Errorf("authzStatus = %q, want %q", got, tt.want)
			}
		})
	}
}
