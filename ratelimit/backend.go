package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
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
	Key     string        // unique, storage-safe
	Count   int           // the limit
	Window  time.Duration // zero for a counting bucket (pending authorizations)
	Cost    int
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
	states := make([][]byte, len(buckets))
	for i, bk := range buckets {
		state, err := b.load(ctx, bk.Key)
		if err != nil {
			return -1, time.Time{}, err
		}
		next, ok, retry, err := apply(now, bk, state)
		if err != nil {
			return -1, time.Time{}, err
		}
		if !ok {
			return i, retry, nil
		}
		states[i] = next
	}
	if !commit {
		return -1, time.Time{}, nil
	}
	for i, bk := range buckets {
		if err := b.storage.Store(ctx, bk.Key, states[i]); err != nil {
			// Earlier buckets of this spend were written: give them back
			// so a failed spend spends nothing.
			for j := 0; j < i; j++ {
				_ = b.refundLocked(ctx, now, buckets[j])
			}
			return -1, time.Time{}, fmt.Errorf("storing rate limit bucket %s: %w", bk.Key, err)
		}
	}
	return -1, time.Time{}, nil
}

// Refund implements Backend.
func (b *StorageBackend) Refund(ctx context.Context, now time.Time, buckets []Bucket) error {
	unlock, err := b.lockAll(ctx, buckets)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, bk := range buckets {
		errs = append(errs, b.refundLocked(ctx, now, bk))
	}
	return errors.Join(errs...)
}

func (b *StorageBackend) refundLocked(ctx context.Context, now time.Time, bk Bucket) error {
	state, err := b.load(ctx, bk.Key)
	if err != nil || state == nil {
		return err
	}
	var next []byte
	if bk.Window == 0 {
		set := pendingSet{}
		if err := json.Unmarshal(state, &set); err != nil {
			return err
		}
		for _, id := range bk.Items {
			delete(set, id)
		}
		set.prune(now)
		if next, err = json.Marshal(set); err != nil {
			return err
		}
	} else {
		tat, err := parseTAT(state)
		if err != nil {
			return err
		}
		next = formatTAT(gcraRefund(now, tat, bk.Count, bk.Window, cost(bk)))
	}
	return b.storage.Store(ctx, bk.Key, next)
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

// apply computes a bucket's next state after a spend, or refuses.
func apply(now time.Time, bk Bucket, state []byte) (next []byte, ok bool, retry time.Time, err error) {
	if bk.Window == 0 {
		set := pendingSet{}
		if state != nil {
			if err := json.Unmarshal(state, &set); err != nil {
				return nil, false, time.Time{}, fmt.Errorf("decoding bucket %s: %w", bk.Key, err)
			}
		}
		set.prune(now)
		added := 0
		for _, id := range bk.Items {
			if _, dup := set[id]; !dup {
				added++
			}
		}
		if len(set)+added > bk.Count && bk.StillCounts != nil {
			for id := range set {
				if !bk.StillCounts(id) {
					delete(set, id)
				}
			}
		}
		if len(set)+added > bk.Count {
			if len(set) == 0 {
				// More at once than the limit allows: waiting will not
				// help, so there is no later time to name.
				return nil, false, now, nil
			}
			return nil, false, set.earliestExpiry(), nil
		}
		for _, id := range bk.Items {
			set[id] = bk.Expires.Unix()
		}
		next, err := json.Marshal(set)
		return next, true, time.Time{}, err
	}
	var tat time.Time
	if state != nil {
		if tat, err = parseTAT(state); err != nil {
			return nil, false, time.Time{}, fmt.Errorf("decoding bucket %s: %w", bk.Key, err)
		}
	}
	newTAT, ok, retry := gcra(now, tat, bk.Count, bk.Window, cost(bk))
	if !ok {
		return nil, false, retry, nil
	}
	return formatTAT(newTAT), true, time.Time{}, nil
}

func parseTAT(b []byte) (time.Time, error) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, n), nil
}

func formatTAT(t time.Time) []byte { return []byte(strconv.FormatInt(t.UnixNano(), 10)) }

// Interface guards
var (
	_ caddy.Provisioner = (*StorageBackend)(nil)
	_ Backend           = (*StorageBackend)(nil)
)
