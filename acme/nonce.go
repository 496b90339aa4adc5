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
	"time"

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
// A nonce of another epoch (issued by another node sharing the storage, or
// by a process that crashed) is accepted once, within ForeignNonceMaxAge,
// by storing a marker key for it: rare, and exact across nodes up to the
// storage's own consistency.
type Nonces struct {
	secret  []byte
	store   *storage.Store
	stateID string // where this instance saves its state on a clean stop
	now     func() time.Time

	mu     sync.Mutex
	epoch  uint64
	next   uint64   // the counter the next nonce gets
	used   []uint64 // bitmap over counter % WindowSize
	issued uint64   // counters handed out since start (for metrics)
}

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
	secret, err := store.LoadRaw(ctx, "nonce", "secret")
	if errors.Is(err, storage.ErrNotFound) {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		if err := store.StoreRaw(ctx, secret, "nonce", "secret"); err != nil {
			return nil, fmt.Errorf("storing nonce secret: %w", err)
		}
		// Two nodes starting at once may each store a secret; read back
		// whichever won so both use the same one.
		if secret, err = store.LoadRaw(ctx, "nonce", "secret"); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("loading nonce secret: %w", err)
	}
	n := &Nonces{
		secret:  secret,
		store:   store,
		stateID: instanceID,
		now:     time.Now,
		used:    make([]uint64, WindowSize/64),
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
	return n, nil
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
	n.issued++
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
		defer n.mu.Unlock()
		if c >= n.next || n.next-c > WindowSize {
			return errBadNonce
		}
		word, bit := (c%WindowSize)/64, uint64(1)<<(c%64)
		if n.used[word]&bit != 0 {
			return errBadNonce
		}
		n.used[word] |= bit
		return nil
	}
	n.mu.Unlock()
	return n.redeemForeign(ctx, epoch, c, issued)
}

func (n *Nonces) redeemForeign(ctx context.Context, epoch, c uint64, issued time.Time) error {
	age := n.now().Sub(issued)
	if age > ForeignNonceMaxAge || age < -time.Minute {
		return errBadNonce
	}
	// Markers live in a folder per hour, so old ones can be dropped by
	// deleting whole folders.
	hour := issued.UTC().Format("2006010215")
	name := strconv.FormatUint(epoch, 16) + "-" + strconv.FormatUint(c, 16)
	if n.store.ExistsRaw(ctx, "nonce", "used", hour, name) {
		return errBadNonce
	}
	if err := n.store.StoreRaw(ctx, nil, "nonce", "used", hour, name); err != nil {
		return err
	}
	return nil
}
