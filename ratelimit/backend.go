package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/acmeca/caddy-acmeca/internal/keylock"
)

func init() {
	caddy.RegisterModule(new(StorageBackend))
}

// Bucket is a backend's view of one transaction: where its state lives and
// the limit's parameters.
type Bucket struct {
	Key    string        // unique, storage-safe
	Count  int           // the limit
	Window time.Duration // zero for a counting bucket (pending authorizations)
	Cost   int
	// Field stores this bucket inside the record at Key, next to that
	// record's own bucket, so related limits cost one write (duplicate
	// certificates live in their registered domain's record).
	Field string

	Items   []string  // counting buckets: the items added or removed
	Expires time.Time // counting buckets: when added items leave on their own
	// Counting buckets: whether a recorded item still counts; asked only
	// when the bucket would otherwise refuse (see Transaction.StillCounts).
	StillCounts func(item string) bool
}

// Backend keeps the state of the counting limits. Implementations are
// modules in the acme_ca.ratelimit namespace.
type Backend interface {
	// Spend checks every bucket and, when commit is set and all allow,
	// spends them all at once. When one refuses it returns its index and
	// when it frees up, and spends nothing. refused is -1 when all allow.
	Spend(ctx context.Context, now time.Time, buckets []Bucket, commit bool) (refused int, retryAt time.Time, err error)
	// Refund gives back what a Spend of the same buckets took.
	Refund(ctx context.Context, now time.Time, buckets []Bucket) error
}

// StorageBackend keeps buckets in Caddy's storage, so every node sharing
// that storage enforces the same limits. A spend takes the storage lock of
// each bucket (sorted, so two spends never deadlock) after an in-process
// lock, so the storage lock is contended only between nodes. Checks read
// without locking.
type StorageBackend struct {
	storage certmagic.Storage // set at Provision
	locks   *keylock.Set      // set at Provision

	// cluster says whether other nodes share the storage, and from when
	// this node may spend under storage locks. Set with SetCluster; nil
	// means always take storage locks.
	cluster Cluster
}

// Cluster tells a backend about the other nodes sharing its storage.
type Cluster interface {
	// Alone reports that no other node's heartbeat is fresh.
	Alone() bool
	// JoinedAt is when this node started; nodes that were there before
	// notice it within a heartbeat.
	JoinedAt() time.Time
}

// joinGrace is how long a node that found peers at start waits before its
// first spend, so that every peer has noticed it and takes storage locks
// too (peers notice within one heartbeat, 10s).
const joinGrace = 15 * time.Second

// SetCluster lets the backend skip storage locks while this node is alone:
// the in-process lock is then the whole truth, and a spend costs no lock
// file. With peers, every spend takes the buckets' storage locks.
func (b *StorageBackend) SetCluster(c Cluster) { b.cluster = c }

// CaddyModule returns the Caddy module information.
func (*StorageBackend) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "acme_ca.ratelimit.storage",
		New: func() caddy.Module { return new(StorageBackend) },
	}
}

// Provision takes the storage Caddy is configured with.
func (b *StorageBackend) Provision(ctx caddy.Context) error {
	b.storage = ctx.Storage()
	b.locks = new(keylock.Set)
	return nil
}

// NewStorageBackend returns a backend on s, for use outside a Caddy config.
func NewStorageBackend(s certmagic.Storage) *StorageBackend {
	return &StorageBackend{storage: s, locks: new(keylock.Set)}
}

// Spend implements Backend.
func (b *StorageBackend) Spend(ctx context.Context, now time.Time, buckets []Bucket, commit bool) (int, time.Time, error) {
	if commit {
		unlock, err := b.lockAll(ctx, buckets)
		if err != nil {
			return -1, time.Time{}, err
		}
		defer unlock()
	}
	recs, err := b.loadRecords(ctx, buckets)
	if err != nil {
		return -1, time.Time{}, err
	}
	for i, bk := range buckets {
		if ok, retry := recs.get(bk).spend(now, bk); !ok {
			return i, retry, nil
		}
	}
	if !commit {
		return -1, time.Time{}, nil
	}
	return -1, time.Time{}, b.storeRecords(ctx, now, recs)
}

// Refund implements Backend.
func (b *StorageBackend) Refund(ctx context.Context, now time.Time, buckets []Bucket) error {
	unlock, err := b.lockAll(ctx, buckets)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := b.loadRecords(ctx, buckets)
	if err != nil {
		return err
	}
	for _, bk := range buckets {
		recs.get(bk).refund(now, bk)
	}
	return b.storeRecords(ctx, now, recs)
}

// records are the decoded states of the keys a spend touches, each loaded
// once however many buckets share it.
type records struct {
	keys  []string // in first-use order
	orig  map[string][]byte
	state map[string]*record
}

func (r *records) get(bk Bucket) *record { return r.state[bk.Key] }

func (b *StorageBackend) loadRecords(ctx context.Context, buckets []Bucket) (*records, error) {
	recs := &records{orig: map[string][]byte{}, state: map[string]*record{}}
	for _, bk := range buckets {
		if _, done := recs.state[bk.Key]; done {
			continue
		}
		raw, err := b.load(ctx, bk.Key)
		if err != nil {
			return nil, err
		}
		rec, err := decodeRecord(raw, bk.Window == 0)
		if err != nil {
			return nil, fmt.Errorf("decoding rate limit bucket %s: %w", bk.Key, err)
		}
		recs.keys = append(recs.keys, bk.Key)
		recs.orig[bk.Key] = raw
		recs.state[bk.Key] = rec
	}
	return recs, nil
}

// storeRecords writes every touched key. If one write fails, the keys
// already written get their old state back, so a failed spend spends
// nothing.
func (b *StorageBackend) storeRecords(ctx context.Context, now time.Time, recs *records) error {
	for i, k := range recs.keys {
		next, err := recs.state[k].encode(now)
		if err == nil {
			err = b.storage.Store(ctx, k, next)
		}
		if err != nil {
			for _, prev := range recs.keys[:i] {
				if old := recs.orig[prev]; old != nil {
					_ = b.storage.Store(ctx, prev, old)
				} else {
					_ = b.storage.Delete(ctx, prev)
				}
			}
			return fmt.Errorf("storing rate limit bucket %s: %w", k, err)
		}
	}
	return nil
}

func (b *StorageBackend) lockAll(ctx context.Context, buckets []Bucket) (func(), error) {
	keys := make([]string, 0, len(buckets))
	seen := map[string]bool{}
	for _, bk := range buckets {
		if !seen[bk.Key] {
			seen[bk.Key] = true
			keys = append(keys, bk.Key)
		}
	}
	sort.Strings(keys)
	var unlocks []func()
	unlockAll := func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
	useStorageLocks := b.cluster == nil || !b.cluster.Alone()
	if useStorageLocks && b.cluster != nil {
		// A node that has just joined others waits until they have seen
		// it, so no peer still spends without the storage lock.
		if wait := time.Until(b.cluster.JoinedAt().Add(joinGrace)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	for _, k := range keys {
		unlocks = append(unlocks, b.locks.Lock(k))
		if !useStorageLocks {
			continue
		}
		if err := b.storage.Lock(ctx, k); err != nil {
			unlockAll()
			return nil, fmt.Errorf("locking rate limit bucket %s: %w", k, err)
		}
		k := k
		unlocks = append(unlocks, func() { _ = b.storage.Unlock(context.Background(), k) })
	}
	return unlockAll, nil
}

func (b *StorageBackend) load(ctx context.Context, key string) ([]byte, error) {
	v, err := b.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return v, err
}

func cost(bk Bucket) int {
	if bk.Cost <= 0 {
		return 1
	}
	return bk.Cost
}

// Interface guards
var (
	_ caddy.Provisioner = (*StorageBackend)(nil)
	_ Backend           = (*StorageBackend)(nil)
)
