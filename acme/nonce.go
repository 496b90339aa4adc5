package acme

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/acmeca/caddy-acmeca/internal/keylock"
	"github.com/acmeca/caddy-acmeca/storage"
)

// Nonces issues and redeems anti-replay nonces (RFC 8555 §6.5) without a
// storage write per nonce.
//
// A nonce is epoch(8) | counter(8) | issued(4, unix seconds) | MAC(16),
// base64url encoded, where MAC is HMAC-SHA256 under a secret kept in storage.
// The issuing process remembers which of the last WindowSize counters of its
// epoch were used, in a bitmap: issuing and redeeming are O(1) and need no
// I/O. The Nonces value lives in a caddy.UsagePool, so a config reload keeps
// it; on a clean stop its state is saved under the instance's ID and taken
// back at the next start, so nonces handed out before a restart stay valid.
//
// Several nodes sharing one storage: each node announces its epoch in
// storage every HeartbeatInterval. A node that knows it has live peers also
// records each nonce it redeems as a marker key, and checks for one, so a
// nonce redeemed on one node cannot be replayed on another. A nonce of
// another epoch (another node's) is accepted once, by storing its marker,
// provided it was issued at least ForeignNonceGrace after this process
// started: by then its issuer knew of this node and marked what it
// redeemed. The same rule refuses, after a crash, nonces of the crashed
// process, whose redemptions were only in memory. A single node writes no
// marker at all.
type Nonces struct {
	secret  []byte
	store   *storage.Store
	stateID string // where this instance saves its state on a clean stop
	now     func() time.Time
	started time.Time   // when this process took up its epoch
	peers   atomic.Bool // another node's heartbeat is fresh
	stop    chan struct{}
	stopped sync.Once
	// markLocks serialise the check-and-set of one nonce's marker.
	markLocks keylock.Set

	mu    sync.Mutex
	epoch uint64
	next  uint64   // the counter the next nonce gets
	used  []uint64 // bitmap over counter % WindowSize
}

// Timing of the cluster protocol. ForeignNonceGrace must exceed
// HeartbeatInterval, so a peer has seen this node before this node accepts
// the peer's nonces.
const (
	HeartbeatInterval = 10 * time.Second
	PeerAliveFor      = 3 * HeartbeatInterval
	ForeignNonceGrace = HeartbeatInterval + 5*time.Second
)

// WindowSize is how many of the most recent nonces stay redeemable. At the
// 20,000 nonces/s a busy node may issue, that is 14 minutes; at ordinary
// rates, days.
const WindowSize = 1 << 24

// ForeignNonceMaxAge bounds how old a nonce of another epoch may be.
const ForeignNonceMaxAge = 30 * time.Minute

const nonceRawLen = 8 + 8 + 4 + 16

var errBadNonce = errors.New("bad nonce")

type nonceState struct {
	Epoch uint64 `json:"epoch"`
	Next  uint64 `json:"next"`
	Used  []byte `json:"used"` // bitmap, little-endian words
}

// LoadNonces prepares the nonce source of one CA: it loads (or creates) the
// shared secret and takes back the state a clean stop of this instance left.
func LoadNonces(ctx context.Context, store *storage.Store, instanceID string) (*Nonces, error) {
	secret, err := loadSecret(ctx, store, "nonce")
	if err != nil {
		return nil, err
	}
	n := &Nonces{
		secret:  secret,
		store:   store,
		stateID: instanceID,
		now:     time.Now,
		used:    make([]uint64, WindowSize/64),
		stop:    make(chan struct{}),
	}
	if b, err := store.LoadRaw(ctx, "nonce", "state", instanceID); err == nil {
		var st nonceState
		if json.Unmarshal(b, &st) == nil && len(st.Used) == WindowSize/8 {
			n.epoch, n.next = st.Epoch, st.Next
			for i := range n.used {
				n.used[i] = binary.LittleEndian.Uint64(st.Used[i*8:])
			}
		}
		// Delete it at once: if this process crashes, the next one must
		// not take this state back, since nonces redeemed from now on are
		// recorded only in memory.
		_ = store.DeleteRaw(ctx, "nonce", "state", instanceID)
	}
	if n.epoch == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		n.epoch = binary.BigEndian.Uint64(b[:]) | 1
		n.next = 1
	}
	n.started = n.now()
	// Announce this node and learn of peers before the first request.
	n.heartbeat(ctx)
	go n.heartbeats()
	return n, nil
}

// Alone reports that no other node sharing the storage has a fresh
// heartbeat.
func (n *Nonces) Alone() bool { return !n.peers.Load() }

// JoinedAt is when this process took up its epoch.
func (n *Nonces) JoinedAt() time.Time { return n.started }

// Stop ends the heartbeats and withdraws this node's announcement.
func (n *Nonces) Stop(ctx context.Context) {
	n.stopped.Do(func() {
		close(n.stop)
		_ = n.store.DeleteRaw(ctx, "nonce", "nodes", n.epochName())
	})
}

func (n *Nonces) epochName() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strconv.FormatUint(n.epoch, 16)
}

func (n *Nonces) heartbeats() {
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), HeartbeatInterval)
			n.heartbeat(ctx)
			cancel()
		}
	}
}

// heartbeat announces this node, notes whether any other is alive, and
// drops what dead nodes and old markers left behind. It runs in the
// background, never on a request path.
func (n *Nonces) heartbeat(ctx context.Context) {
	now := n.now()
	me := n.epochName()
	_ = n.store.StoreRaw(ctx, []byte(now.UTC().Format(time.RFC3339Nano)), "nonce", "nodes", me)
	nodes, err := n.store.ListRaw(ctx, "nonce", "nodes")
	if err != nil {
		return
	}
	alive := false
	for _, node := range nodes {
		if node == me {
			continue
		}
		b, err := n.store.LoadRaw(ctx, "nonce", "nodes", node)
		if err != nil {
			continue
		}
		seen, err := time.Parse(time.RFC3339Nano, string(b))
		switch {
		case err != nil || now.Sub(seen) > time.Hour:
			_ = n.store.DeleteRaw(ctx, "nonce", "nodes", node)
		case now.Sub(seen) <= PeerAliveFor:
			alive = true
		}
	}
	n.peers.Store(alive)

	// Markers older than any redeemable foreign nonce are dead weight.
	hours, err := n.store.ListRaw(ctx, "nonce", "used")
	if err != nil {
		return
	}
	oldest := now.Add(-ForeignNonceMaxAge - 2*time.Hour).UTC().Format("2006010215")
	for _, h := range hours {
		if h < oldest {
			_ = n.store.DeleteRaw(ctx, "nonce", "used", h)
		}
	}
}

// loadSecret loads, or creates, a 32-byte secret shared by every node of
// the CA.
func loadSecret(ctx context.Context, store *storage.Store, name string) ([]byte, error) {
	secret, err := store.LoadRaw(ctx, name, "secret")
	if errors.Is(err, storage.ErrNotFound) {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		if err := store.StoreRaw(ctx, secret, name, "secret"); err != nil {
			return nil, fmt.Errorf("storing %s secret: %w", name, err)
		}
		// Two nodes starting at once may each store a secret; read back
		// whichever won so both use the same one.
		return store.LoadRaw(ctx, name, "secret")
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s secret: %w", name, err)
	}
	return secret, nil
}

// Save writes the state for the next start of this instance (a clean stop).
func (n *Nonces) Save(ctx context.Context) error {
	n.mu.Lock()
	st := nonceState{Epoch: n.epoch, Next: n.next, Used: make([]byte, WindowSize/8)}
	for i, w := range n.used {
		binary.LittleEndian.PutUint64(st.Used[i*8:], w)
	}
	n.mu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return n.store.StoreRaw(ctx, b, "nonce", "state", n.stateID)
}

// New returns a fresh nonce.
func (n *Nonces) New() string {
	n.mu.Lock()
	c := n.next
	n.next++
	// The slot now belongs to c; whatever used it WindowSize counters ago
	// has left the window.
	n.used[(c%WindowSize)/64] &^= 1 << (c % 64)
	epoch := n.epoch
	n.mu.Unlock()

	var raw [nonceRawLen]byte
	binary.BigEndian.PutUint64(raw[0:], epoch)
	binary.BigEndian.PutUint64(raw[8:], c)
	binary.BigEndian.PutUint32(raw[16:], uint32(n.now().Unix()))
	n.sign(raw[:20], raw[20:])
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

func (n *Nonces) sign(msg, out []byte) {
	m := hmac.New(sha256.New, n.secret)
	m.Write(msg)
	copy(out, m.Sum(nil))
}

// Redeem consumes a nonce. It fails for a nonce this CA did not issue, one
// already used, or one too old to be remembered.
func (n *Nonces) Redeem(ctx context.Context, nonce string) error {
	if len(nonce) != base64.RawURLEncoding.EncodedLen(nonceRawLen) {
		return errBadNonce
	}
	var raw [nonceRawLen]byte
	if _, err := base64.RawURLEncoding.Decode(raw[:], []byte(nonce)); err != nil {
		return errBadNonce
	}
	var mac [16]byte
	n.sign(raw[:20], mac[:])
	if !hmac.Equal(mac[:], raw[20:]) {
		return errBadNonce
	}
	epoch := binary.BigEndian.Uint64(raw[0:])
	c := binary.BigEndian.Uint64(raw[8:])
	issued := time.Unix(int64(binary.BigEndian.Uint32(raw[16:])), 0)

	n.mu.Lock()
	if epoch == n.epoch {
		if c >= n.next || n.next-c > WindowSize {
			n.mu.Unlock()
			return errBadNonce
		}
		word, bit := (c%WindowSize)/64, uint64(1)<<(c%64)
		if n.used[word]&bit != 0 {
			n.mu.Unlock()
			return errBadNonce
		}
		n.used[word] |= bit
		n.mu.Unlock()
		if !n.peers.Load() {
			return nil // alone: memory is the whole truth
		}
		return n.mark(ctx, epoch, c, issued)
	}
	n.mu.Unlock()
	return n.redeemForeign(ctx, epoch, c, issued)
}

func (n *Nonces) redeemForeign(ctx context.Context, epoch, c uint64, issued time.Time) error {
	now := n.now()
	age := now.Sub(issued)
	if age > ForeignNonceMaxAge || age < -time.Minute {
		return errBadNonce
	}
	// Issued before its issuer can have known of this node (or by a
	// process that crashed): its redemption may not have been marked.
	if issued.Before(n.started.Add(ForeignNonceGrace)) {
		return errBadNonce
	}
	return n.mark(ctx, epoch, c, issued)
}

// mark records a redeemed nonce in storage, failing if it was already
// recorded. Markers live in a folder per hour of issue, so old ones go by
// deleting whole folders.
func (n *Nonces) mark(ctx context.Context, epoch, c uint64, issued time.Time) error {
	hour := issued.UTC().Format("2006010215")
	name := strconv.FormatUint(epoch, 16) + "-" + strconv.FormatUint(c, 16)
	// Two requests with the same nonce on this node must not both find
	// the marker missing.
	defer n.markLocks.Lock(name)()
	if n.store.ExistsRaw(ctx, "nonce", "used", hour, name) {
		return errBadNonce
	}
	return n.store.StoreRaw(ctx, nil, "nonce", "used", hour, name)
}
