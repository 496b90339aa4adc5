package storage

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// newTestStore returns a Store for caID on a fresh file storage, and the
// storage's folder.
func newTestStore(t testing.TB, caID string) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	return New(&certmagic.FileStorage{Path: dir}, caID), dir
}

// t0 is a fixed instant with nanoseconds, so a round trip that drops
// precision shows.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func TestRecordRoundTrip(t *testing.T) {
	ctx := context.Background()
	prob := &Problem{Type: "urn:ietf:params:acme:error:incorrectResponse", Detail: "wrong key authorization", Status: 403}

	tests := []struct {
		name string
		put  func(*Store) error
		get  func(*Store) (any, error)
		want any
	}{
		{
			name: "account",
			want: &Account{
				ID:          "acct1",
				Status:      StatusValid,
				Contact:     []string{"mailto:a@example.com", "mailto:b@example.com"},
				TermsAgreed: true,
				Key:         json.RawMessage(`{"crv":"P-256","kty":"EC","x":"AAAA","y":"BBBB"}`),
				Thumbprint:  "thumb1",
				CreatedAt:   t0,
				UpdatedAt:   t0.Add(time.Hour),
			},
		},
		{
			name: "order",
			want: &Order{
				ID:          "order1",
				AccountID:   "acct1",
				Status:      StatusInvalid,
				Identifiers: []Identifier{{Type: "dns", Value: "example.com"}, {Type: "dns", Value: "*.example.com"}},
				AuthzIDs:    []string{"authz1", "authz2"},
				Expires:     t0.Add(7 * 24 * time.Hour),
				CreatedAt:   t0,
				Error:       prob,
			},
		},
		{
			name: "authorization",
			want: &Authorization{
				ID:         "authz1",
				AccountID:  "acct1",
				Identifier: Identifier{Type: "dns", Value: "example.com"},
				Wildcard:   true,
				Status:     StatusInvalid,
				Expires:    t0.Add(24 * time.Hour),
				CreatedAt:  t0,
				Challenges: []Challenge{
					{Type: "http-01", Token: "tok1", Status: StatusPending},
					{Type: "dns-01", Token: "tok2", Status: StatusInvalid, ProcessingSince: t0.Add(time.Second), Error: prob},
					{Type: "tls-alpn-01", Token: "tok3", Status: StatusValid, Validated: t0.Add(2 * time.Second)},
				},
				ValidatedAt: t0.Add(3 * time.Second),
			},
		},
		{
			name: "certificate",
			want: &Certificate{
				Serial:           "0a1b2c",
				AccountID:        "acct1",
				OrderID:          "order1",
				Names:            []string{"example.com", "*.example.com"},
				NotBefore:        t0,
				NotAfter:         t0.Add(90 * 24 * time.Hour),
				ChainPEM:         "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
				RevokedAt:        t0.Add(48 * time.Hour),
				RevocationReason: 4,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := newTestStore(t, "ca1")
			var got any
			var err error
			switch w := tt.want.(type) {
			case *Account:
				if err := st.PutAccount(ctx, w); err != nil {
					t.Fatal(err)
				}
				got, err = st.Account(ctx, w.ID)
			case *Order:
				if err := st.PutOrder(ctx, w); err != nil {
					t.Fatal(err)
				}
				got, err = st.Order(ctx, w.ID)
			case *Authorization:
				if err := st.PutAuthorization(ctx, w); err != nil {
					t.Fatal(err)
				}
				got, err = st.Authorization(ctx, w.ID)
			case *Certificate:
				if err := st.PutCertificate(ctx, w); err != nil {
					t.Fatal(err)
				}
				got, err = st.Certificate(ctx, w.Serial)
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("round trip changed the record:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestRecordOverwrite(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	o := &Order{ID: "o1", AccountID: "a1", Status: StatusPending, Identifiers: []Identifier{{Type: "dns", Value: "example.com"}}, AuthzIDs: []string{"z1"}}
	if err := st.PutOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	o.Status, o.AuthzIDs = StatusValid, []string{"z2"}
	if err := st.PutOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	got, err := st.Order(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusValid || len(got.AuthzIDs) != 1 || got.AuthzIDs[0] != "z2" {
		t.Errorf("after overwrite: status %q authz %v, want valid [z2]", got.Status, got.AuthzIDs)
	}
}

func TestRevocationRecord(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	c := &Certificate{Serial: "0abc", NotAfter: t0.Add(time.Hour), RevokedAt: t0, RevocationReason: 1}
	if !c.Revoked() {
		t.Error("Revoked() = false for a certificate with RevokedAt set")
	}
	if (&Certificate{}).Revoked() {
		t.Error("Revoked() = true for a certificate without RevokedAt")
	}
	if err := st.PutRevocation(ctx, c); err != nil {
		t.Fatal(err)
	}
	b, err := st.LoadRaw(ctx, "revoked", "0abc.json")
	if err != nil {
		t.Fatalf("revocation not stored under revoked/: %v", err)
	}
	var got struct {
		Serial    string    `json:"serial"`
		RevokedAt time.Time `json:"revoked_at"`
		Reason    int       `json:"reason"`
		NotAfter  time.Time `json:"not_after"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("revocation record %s: %v", b, err)
	}
	if got.Serial != "0abc" || !got.RevokedAt.Equal(t0) || got.Reason != 1 || !got.NotAfter.Equal(t0.Add(time.Hour)) {
		t.Errorf("revocation record = %+v", got)
	}
	// The certificate itself is not touched by PutRevocation.
	if _, err := st.Certificate(ctx, "0abc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Certificate after PutRevocation only: err = %v, want ErrNotFound", err)
	}
}

func TestNotFound(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	tests := []struct {
		name string
		load func() error
	}{
		{"account", func() error { _, err := st.Account(ctx, "nope"); return err }},
		{"order", func() error { _, err := st.Order(ctx, "nope"); return err }},
		{"authorization", func() error { _, err := st.Authorization(ctx, "nope"); return err }},
		{"certificate", func() error { _, err := st.Certificate(ctx, "nope"); return err }},
		{"account key index", func() error { _, err := st.AccountIDByThumbprint(ctx, "nope"); return err }},
		{"authorization index", func() error { _, err := st.ReusableAuthorizationID(ctx, "acct", "example.com"); return err }},
		{"raw", func() error { _, err := st.LoadRaw(ctx, "nonce", "secret"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.load(); !errors.Is(err, ErrNotFound) {
				t.Errorf("err = %v, want ErrNotFound", err)
			}
		})
	}
}

// A record that does not decode is an error, but not ErrNotFound: callers
// must not mistake a corrupt record for a missing one.
func TestCorruptRecordIsNotNotFound(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	if err := st.StoreRaw(ctx, []byte("{not json"), "orders", "o1.json"); err != nil {
		t.Fatal(err)
	}
	_, err := st.Order(ctx, "o1")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v, want a decoding error", err)
	}
}

func TestAccountKeyIndex(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	if err := st.PutAccountKey(ctx, "thumbA", "acct1"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutAccountKey(ctx, "thumbB", "acct2"); err != nil {
		t.Fatal(err)
	}
	for thumb, want := range map[string]string{"thumbA": "acct1", "thumbB": "acct2"} {
		got, err := st.AccountIDByThumbprint(ctx, thumb)
		if err != nil || got != want {
			t.Errorf("AccountIDByThumbprint(%s) = %q, %v; want %q", thumb, got, err, want)
		}
	}
	if err := st.DeleteAccountKey(ctx, "thumbA"); err != nil {
		t.Fatalf("DeleteAccountKey: %v", err)
	}
	if _, err := st.AccountIDByThumbprint(ctx, "thumbA"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: err = %v, want ErrNotFound", err)
	}
	if got, err := st.AccountIDByThumbprint(ctx, "thumbB"); err != nil || got != "acct2" {
		t.Errorf("deleting thumbA touched thumbB: %q, %v", got, err)
	}
	if err := st.DeleteAccountKey(ctx, "thumbA"); err != nil {
		t.Errorf("deleting a missing key index: %v, want nil", err)
	}
}

func TestReusableAuthorizationIndex(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	steps := []struct{ acct, ident, authz string }{
		{"acct1", "example.com", "z1"},
		{"acct1", "*.example.com", "z2"},
		{"acct2", "example.com", "z3"},
		{"acct1", "example.com", "z4"}, // the latest replaces z1
	}
	for _, s := range steps {
		if err := st.PutReusableAuthorizationID(ctx, s.acct, s.ident, s.authz); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct{ acct, ident, want string }{
		{"acct1", "example.com", "z4"},
		{"acct1", "*.example.com", "z2"},
		{"acct2", "example.com", "z3"},
	}
	for _, tt := range tests {
		got, err := st.ReusableAuthorizationID(ctx, tt.acct, tt.ident)
		if err != nil || got != tt.want {
			t.Errorf("ReusableAuthorizationID(%s, %s) = %q, %v; want %q", tt.acct, tt.ident, got, err, tt.want)
		}
	}
	if _, err := st.ReusableAuthorizationID(ctx, "acct2", "*.example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another account's index leaked: err = %v, want ErrNotFound", err)
	}
}

func TestAccountOrders(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	// acct10 shares a prefix with acct1: a listing by string prefix would
	// mix them up.
	add := map[string][]string{
		"acct1":  {"o1", "o2", "o3"},
		"acct10": {"o10"},
		"acct2":  {"o20", "o21"},
	}
	for acct, orders := range add {
		for _, o := range orders {
			if err := st.PutOrder(ctx, &Order{ID: OrderID(acct, o), AccountID: acct}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Writing the same order twice lists it once.
	if err := st.PutOrder(ctx, &Order{ID: OrderID("acct1", "o1"), AccountID: "acct1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		acct string
		want []string
	}{
		{"acct1", []string{"acct1.o1", "acct1.o2", "acct1.o3"}},
		{"acct10", []string{"acct10.o10"}},
		{"acct2", []string{"acct2.o20", "acct2.o21"}},
		{"nobody", nil},
	}
	for _, tt := range tests {
		t.Run(tt.acct, func(t *testing.T) {
			got, err := st.AccountOrders(ctx, tt.acct)
			if err != nil {
				t.Fatalf("AccountOrders: %v", err)
			}
			slices.Sort(got)
			if len(got) != len(tt.want) || (len(got) > 0 && !slices.Equal(got, tt.want)) {
				t.Errorf("AccountOrders(%s) = %v, want %v", tt.acct, got, tt.want)
			}
		})
	}
}

func TestRawKeys(t *testing.T) {
	ctx := context.Background()
	st, _ := newTestStore(t, "ca1")
	if st.ExistsRaw(ctx, "nonce", "secret") {
		t.Fatal("ExistsRaw before StoreRaw = true")
	}
	if err := st.StoreRaw(ctx, []byte("s3cret"), "nonce", "secret"); err != nil {
		t.Fatal(err)
	}
	if !st.ExistsRaw(ctx, "nonce", "secret") {
		t.Error("ExistsRaw after StoreRaw = false")
	}
	if b, err := st.LoadRaw(ctx, "nonce", "secret"); err != nil || string(b) != "s3cret" {
		t.Errorf("LoadRaw = %q, %v", b, err)
	}
	if err := st.DeleteRaw(ctx, "nonce", "secret"); err != nil {
		t.Fatal(err)
	}
	if st.ExistsRaw(ctx, "nonce", "secret") {
		t.Error("ExistsRaw after DeleteRaw = true")
	}
	if err := st.DeleteRaw(ctx, "nonce", "secret"); err != nil {
		t.Errorf("DeleteRaw of a missing key = %v, want nil", err)
	}
}

// Two CAs on one storage keep separate records.
func TestCAsAreSeparate(t *testing.T) {
	ctx := context.Background()
	fsys := &certmagic.FileStorage{Path: t.TempDir()}
	a, b := New(fsys, "ca-a"), New(fsys, "ca-b")
	if err := a.PutAccount(ctx, &Account{ID: "acct1", Status: StatusValid}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Account(ctx, "acct1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("CA b sees CA a's account: err = %v", err)
	}
}

func TestSafeKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"abc", "abc"},
		{"a/b", "a_b"},
		{`a\b`, "a_b"},
		{"../x", ".._x"},
		{"/etc/passwd", "_etc_passwd"},
		{"..", "_.."},
		{".", "_."},
		{"", "_"},
	}
	for _, tt := range tests {
		if got := safeKey(tt.in); got != tt.want {
			t.Errorf("safeKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Hostile key components, in the CA name and in record IDs, must leave
// every file below <dir>/acme_ca/<ca>/.
func TestKeysStayBelowCAPrefix(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, caID, id string
		wantCADir      string
	}{
		{"dot dot slash in id", "ca1", "../x", "ca1"},
		{"slash in id", "ca1", "a/b", "ca1"},
		{"deep escape in id", "ca1", "../../../../etc/passwd", "ca1"},
		{"dot dot id", "ca1", "..", "ca1"},
		{"backslash in id", "ca1", `..\..\x`, "ca1"},
		{"dot dot slash in ca", "../x", "acct", ".._x"},
		{"slash in ca", "a/b", "acct", "a_b"},
		{"dot dot ca", "..", "acct", "_.."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, dir := newTestStore(t, tt.caID)
			id := tt.id
			puts := []func() error{
				func() error { return st.PutAccount(ctx, &Account{ID: id}) },
				func() error { return st.PutAccountKey(ctx, id, id) },
				func() error { return st.PutOrder(ctx, &Order{ID: id}) },
				func() error { return st.PutOrder(ctx, &Order{ID: OrderID(id, "o1")}) },
				func() error { return st.PutAuthorization(ctx, &Authorization{ID: id}) },
				func() error { return st.PutReusableAuthorizationID(ctx, id, id, id) },
				func() error { return st.PutCertificate(ctx, &Certificate{Serial: id}) },
				func() error { return st.PutRevocation(ctx, &Certificate{Serial: id}) },
				func() error { return st.StoreRaw(ctx, []byte("x"), "nonce", id, id) },
			}
			for i, put := range puts {
				if err := put(); err != nil {
					t.Fatalf("put %d: %v", i, err)
				}
			}
			root := filepath.Join(dir, "acme_ca", tt.wantCADir) + string(filepath.Separator)
			var files int
			err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				files++
				if !strings.HasPrefix(p, root) {
					t.Errorf("file %s is outside %s", p, root)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if files < len(puts) {
				t.Errorf("found %d files, want at least %d", files, len(puts))
			}
			// And every record is still found by the same hostile key.
			if _, err := st.Account(ctx, id); err != nil {
				t.Errorf("Account(%q): %v", id, err)
			}
			if got, err := st.AccountIDByThumbprint(ctx, id); err != nil || got != id {
				t.Errorf("AccountIDByThumbprint(%q) = %q, %v", id, got, err)
			}
			if got, err := st.AccountOrders(ctx, id); err != nil || len(got) != 1 {
				t.Errorf("AccountOrders(%q) = %v, %v; want one order", id, got, err)
			}
		})
	}
}

// A lock can be taken again after Unlock, and the same lock name of two CAs
// on one storage are two locks (each is scoped by its CA prefix).
func TestLockUnlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	fsys := &certmagic.FileStorage{Path: t.TempDir()}
	a, b := New(fsys, "ca-a"), New(fsys, "ca-b")
	if err := a.Lock(ctx, "issuance"); err != nil {
		t.Fatal(err)
	}
	// FileStorage would poll until ctx ends if this were the same lock.
	if err := b.Lock(ctx, "issuance"); err != nil {
		t.Fatalf("CA b's lock waited for CA a's: %v", err)
	}
	if err := a.Unlock(ctx, "issuance"); err != nil {
		t.Fatal(err)
	}
	if err := a.Lock(ctx, "issuance"); err != nil {
		t.Fatalf("relock: %v", err)
	}
	for _, st := range []*Store{a, b} {
		if err := st.Unlock(ctx, "issuance"); err != nil {
			t.Fatal(err)
		}
	}
}
