package ratelimit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// The benchmarks run on file storage, as a single-node Caddy does. A check
// is a Load of one known key per bucket, so its cost must not depend on how
// many buckets other domains have: compare BenchmarkCheckEmpty with
// BenchmarkCheckAfter100k.

// benchHistory is how many certificates' worth of buckets (a registered
// domain's record with its name set's bucket) BenchmarkCheckAfter100k
// starts with.
const benchHistory = 100_000

// benchEngine is an engine on file storage in dir with a budget no
// benchmark exhausts.
func benchEngine(b *testing.B, dir string) *Engine {
	return benchEngineOn(b, &certmagic.FileStorage{Path: dir})
}

func benchEngineOn(b *testing.B, s certmagic.Storage) *Engine {
	b.Helper()
	e, err := NewEngine(&Config{Limits: limits(
		CertificatesPerRegisteredDomain, per(1<<30, time.Hour),
		DuplicateCertificates, per(1<<30, time.Hour),
	)}, NewStorageBackend(s), testPrefix, nil)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// bulkStorage loads history fast: no locks (the loader is alone) and
// plain writes. Only writeHistory uses it.
type bulkStorage struct {
	*certmagic.FileStorage
	dirs map[string]bool
}

func (s *bulkStorage) Lock(context.Context, string) error   { return nil }
func (s *bulkStorage) Unlock(context.Context, string) error { return nil }

func (s *bulkStorage) Store(_ context.Context, key string, value []byte) error {
	name := s.Filename(key)
	if d := filepath.Dir(name); !s.dirs[d] {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		s.dirs[d] = true
	}
	return os.WriteFile(name, value, 0o600)
}

// writeHistory leaves in the file storage under dir what n issuances for
// other domains would have: their buckets, written by the engine itself
// through bulkStorage (Spend on the real storage would take minutes of
// lock files and fsyncs).
func writeHistory(b *testing.B, dir string, n int) {
	b.Helper()
	loader := benchEngineOn(b, &bulkStorage{FileStorage: &certmagic.FileStorage{Path: dir}, dirs: map[string]bool{}})
	ctx := context.Background()
	for i := range n {
		txns := CertificateTransactions("acct", []string{fmt.Sprintf("www.d%06d.example", i)})
		if d, err := loader.Spend(ctx, txns); d != nil || err != nil {
			b.Fatal(d, err)
		}
	}
}

// benchCheck times Check (the newOrder path) for a domain with no bucket
// and for one with a bucket, and Spend (the finalize path) on fresh
// domains.
func benchCheck(b *testing.B, e *Engine) {
	ctx := context.Background()
	fresh := CertificateTransactions("acct", []string{"www.fresh.example"})
	b.Run("CheckNoBucket", func(b *testing.B) {
		for b.Loop() {
			if d, err := e.Check(ctx, fresh); d != nil || err != nil {
				b.Fatal(d, err)
			}
		}
	})
	used := CertificateTransactions("acct", []string{"www.used.example"})
	if d, err := e.Spend(ctx, used); d != nil || err != nil {
		b.Fatal(d, err)
	}
	b.Run("CheckBucket", func(b *testing.B) {
		for b.Loop() {
			if d, err := e.Check(ctx, used); d != nil || err != nil {
				b.Fatal(d, err)
			}
		}
	})
	run := 0
	b.Run("SpendFresh", func(b *testing.B) {
		run++
		i := 0
		for b.Loop() {
			i++
			txns := CertificateTransactions("acct", []string{fmt.Sprintf("www.new%d-%d.example", run, i)})
			if d, err := e.Spend(ctx, txns); d != nil || err != nil {
				b.Fatal(d, err)
			}
		}
	})
}

func BenchmarkCheckEmpty(b *testing.B) {
	dir := b.TempDir()
	benchCheck(b, benchEngine(b, dir))
}

func BenchmarkCheckAfter100k(b *testing.B) {
	dir := b.TempDir()
	began := time.Now()
	writeHistory(b, dir, benchHistory)
	files, err := filepath.Glob(filepath.Join(dir, testPrefix, CertificatesPerRegisteredDomain, "*"))
	if err != nil || len(files) != benchHistory {
		b.Fatalf("history: %d bucket records (%v), want %d", len(files), err, benchHistory)
	}
	b.Logf("wrote %d bucket records in %v", len(files), time.Since(began))
	benchCheck(b, benchEngine(b, dir))
}

// BenchmarkSpend times one certificate's spend (one record: the registered
// domain's bucket with its name set's) on the same domain again and again,
// as a node with peers does it: under the bucket's storage lock.
func BenchmarkSpend(b *testing.B) {
	benchSpend(b, nil)
}

// BenchmarkSpendAlone is the same spend on a node that knows it is alone:
// the in-process lock only, no lock file.
func BenchmarkSpendAlone(b *testing.B) {
	benchSpend(b, fakeCluster{alone: true, joined: time.Now().Add(-time.Hour)})
}

func benchSpend(b *testing.B, c Cluster) {
	backend := NewStorageBackend(&certmagic.FileStorage{Path: b.TempDir()})
	if c != nil {
		backend.SetCluster(c)
	}
	e, err := NewEngine(&Config{Limits: limits(
		CertificatesPerRegisteredDomain, per(1<<30, time.Hour),
		DuplicateCertificates, per(1<<30, time.Hour),
	)}, backend, testPrefix, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	txns := CertificateTransactions("acct", []string{"www.example.com"})
	for b.Loop() {
		if d, err := e.Spend(ctx, txns); d != nil || err != nil {
			b.Fatal(d, err)
		}
	}
}
