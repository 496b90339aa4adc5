package storage

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// The request path's storage operations on the default file storage. A
// Load is a file read; a Store is a synced atomic write, which is what an
// issuance's cost on disk comes down to (see the README's benchmark).

func BenchmarkLoadAccount(b *testing.B) {
	st, _ := newTestStore(b, "bench")
	ctx := context.Background()
	if err := st.PutAccount(ctx, &Account{ID: "acct", Status: StatusValid, Key: []byte(`{"kty":"EC"}`), CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := st.Account(ctx, "acct"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStoreAuthorization(b *testing.B) {
	st, _ := newTestStore(b, "bench")
	ctx := context.Background()
	a := &Authorization{AccountID: "acct", Identifier: Identifier{Type: "dns", Value: "www.example.com"}, Status: StatusPending,
		Challenges: []Challenge{{Type: "http-01", Token: "t1", Status: StatusPending}, {Type: "dns-01", Token: "t2", Status: StatusPending}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.ID = "authz" + strconv.Itoa(i)
		if err := st.PutAuthorization(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMissingKey is a lookup that finds nothing (an index probe).
func BenchmarkMissingKey(b *testing.B) {
	st, _ := newTestStore(b, "bench")
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := st.ReusableAuthorizationID(ctx, "acct", "www.example.com"); err != ErrNotFound {
			b.Fatal(err)
		}
	}
}
