// Package storage keeps all ACME state in Caddy's configured storage
// (certmagic.Storage), so any storage module works and several Caddy nodes
// sharing one storage serve one CA.
//
// Every lookup on a request path is a Load of a key computed from the
// request (indexes are keys of their own); nothing on a request path lists
// a folder of all records or takes a storage lock.
package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/caddyserver/certmagic"
)

// ErrNotFound is returned when a record does not exist.
var ErrNotFound = errors.New("not found")

// Store reads and writes the records of one CA.
type Store struct {
	s      certmagic.Storage
	prefix string
}

// New returns a Store keeping the records of the CA named caID in s.
func New(s certmagic.Storage, caID string) *Store {
	return &Store{s: s, prefix: path.Join("acme_ca", safeKey(caID))}
}

// Storage returns the underlying storage.
func (st *Store) Storage() certmagic.Storage { return st.s }

// Key layout, all below acme_ca/<ca>/.
func (st *Store) key(parts ...string) string {
	clean := make([]string, 0, len(parts)+1)
	clean = append(clean, st.prefix)
	for _, p := range parts {
		clean = append(clean, safeKey(p))
	}
	return path.Join(clean...)
}

// safeKey keeps a key component from escaping its folder. IDs we generate
// are base64url, so this only matters for values that come from requests.
func safeKey(s string) string {
	s = strings.ReplaceAll(s, "/", "_")
	s = strings.ReplaceAll(s, "\\", "_")
	if s == "." || s == ".." || s == "" {
		return "_" + s
	}
	return s
}

func (st *Store) loadJSON(ctx context.Context, key string, v any) error {
	b, err := st.s.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("loading %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding %s: %w", key, err)
	}
	return nil
}

func (st *Store) storeJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := st.s.Store(ctx, key, b); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	return nil
}

func (st *Store) loadString(ctx context.Context, key string) (string, error) {
	b, err := st.s.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading %s: %w", key, err)
	}
	return string(b), nil
}

// Account returns the account with the given ID.
func (st *Store) Account(ctx context.Context, id string) (*Account, error) {
	var a Account
	return &a, st.loadJSON(ctx, st.key("accounts", id+".json"), &a)
}

// PutAccount writes an account.
func (st *Store) PutAccount(ctx context.Context, a *Account) error {
	return st.storeJSON(ctx, st.key("accounts", a.ID+".json"), a)
}

// AccountIDByThumbprint looks an account up by its key's JWK thumbprint.
func (st *Store) AccountIDByThumbprint(ctx context.Context, thumbprint string) (string, error) {
	return st.loadString(ctx, st.key("account_keys", thumbprint))
}

// PutAccountKey points a key thumbprint at an account.
func (st *Store) PutAccountKey(ctx context.Context, thumbprint, accountID string) error {
	return st.s.Store(ctx, st.key("account_keys", thumbprint), []byte(accountID))
}

// DeleteAccountKey removes a key thumbprint from the index (after a key change).
func (st *Store) DeleteAccountKey(ctx context.Context, thumbprint string) error {
	err := st.s.Delete(ctx, st.key("account_keys", thumbprint))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// OrderID makes the ID of a new order of an account: "<account>.<random>".
// The account part puts the order in its account's folder, so the account's
// orders list is a listing of that folder and costs no index write.
func OrderID(accountID, random string) string { return accountID + "." + random }

// orderKey is orders/<account>/<random>.json for IDs made by OrderID.
func (st *Store) orderKey(id string) string {
	// The random part is base64url and has no dot; split at the last one.
	if i := strings.LastIndexByte(id, '.'); i > 0 && i < len(id)-1 {
		return st.key("orders", id[:i], id[i+1:]+".json")
	}
	return st.key("orders", id+".json")
}

// Order returns the order with the given ID.
func (st *Store) Order(ctx context.Context, id string) (*Order, error) {
	var o Order
	return &o, st.loadJSON(ctx, st.orderKey(id), &o)
}

// PutOrder writes an order.
func (st *Store) PutOrder(ctx context.Context, o *Order) error {
	return st.storeJSON(ctx, st.orderKey(o.ID), o)
}

// DeleteOrder removes an order (one refused while it was being stored).
func (st *Store) DeleteOrder(ctx context.Context, id string) error {
	return st.deleteKey(ctx, st.orderKey(id))
}

// DeleteAuthorization removes an authorization (one refused while it was
// being stored).
func (st *Store) DeleteAuthorization(ctx context.Context, id string) error {
	return st.deleteKey(ctx, st.key("authz", id+".json"))
}

func (st *Store) deleteKey(ctx context.Context, key string) error {
	err := st.s.Delete(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// AccountOrders lists the IDs of one account's orders. It lists only that
// account's folder, never all orders.
func (st *Store) AccountOrders(ctx context.Context, accountID string) ([]string, error) {
	keys, err := st.s.List(ctx, st.key("orders", accountID), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		if rest, ok := strings.CutSuffix(path.Base(k), ".json"); ok {
			ids = append(ids, OrderID(accountID, rest))
		}
	}
	return ids, nil
}

// Authorization returns the authorization with the given ID.
func (st *Store) Authorization(ctx context.Context, id string) (*Authorization, error) {
	var a Authorization
	return &a, st.loadJSON(ctx, st.key("authz", id+".json"), &a)
}

// PutAuthorization writes an authorization with its challenges.
func (st *Store) PutAuthorization(ctx context.Context, a *Authorization) error {
	return st.storeJSON(ctx, st.key("authz", a.ID+".json"), a)
}

// ReusableAuthorizationID returns the ID of the latest authorization an
// account holds for an identifier (value with "*." for wildcards), the index
// behind authorization reuse and revocation by authorization.
func (st *Store) ReusableAuthorizationID(ctx context.Context, accountID, ident string) (string, error) {
	return st.loadString(ctx, st.key("authz_by_name", accountID, ident))
}

// PutReusableAuthorizationID records the latest authorization of an account
// for an identifier.
func (st *Store) PutReusableAuthorizationID(ctx context.Context, accountID, ident, authzID string) error {
	return st.s.Store(ctx, st.key("authz_by_name", accountID, ident), []byte(authzID))
}

// Certificate returns the certificate with the given serial (lower-case hex).
func (st *Store) Certificate(ctx context.Context, serial string) (*Certificate, error) {
	var c Certificate
	return &c, st.loadJSON(ctx, st.key("certs", serial+".json"), &c)
}

// PutCertificate writes a certificate record.
func (st *Store) PutCertificate(ctx context.Context, c *Certificate) error {
	return st.storeJSON(ctx, st.key("certs", c.Serial+".json"), c)
}

// DeleteCertificate removes a certificate record (one whose issuance the
// rate limits refused while it was being stored).
func (st *Store) DeleteCertificate(ctx context.Context, serial string) error {
	return st.deleteKey(ctx, st.key("certs", serial+".json"))
}

// PutRevocation records a revocation in its own folder, which a CRL
// publisher lists instead of scanning every certificate.
func (st *Store) PutRevocation(ctx context.Context, c *Certificate) error {
	return st.storeJSON(ctx, st.key("revoked", c.Serial+".json"), struct {
		Serial    string `json:"serial"`
		RevokedAt any    `json:"revoked_at"`
		Reason    int    `json:"reason"`
		NotAfter  any    `json:"not_after"`
	}{c.Serial, c.RevokedAt, c.RevocationReason, c.NotAfter})
}

// Load and Store of raw keys below the CA's prefix, for small pieces of
// state such as the nonce secret.

// LoadRaw loads a raw value below the CA's prefix.
func (st *Store) LoadRaw(ctx context.Context, parts ...string) ([]byte, error) {
	b, err := st.s.Load(ctx, st.key(parts...))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return b, err
}

// StoreRaw stores a raw value below the CA's prefix.
func (st *Store) StoreRaw(ctx context.Context, value []byte, parts ...string) error {
	return st.s.Store(ctx, st.key(parts...), value)
}

// ExistsRaw reports whether a raw key below the CA's prefix exists.
func (st *Store) ExistsRaw(ctx context.Context, parts ...string) bool {
	return st.s.Exists(ctx, st.key(parts...))
}

// ListRaw lists the names directly below a raw folder under the CA's
// prefix; for background maintenance only, never on a request path.
func (st *Store) ListRaw(ctx context.Context, parts ...string) ([]string, error) {
	keys, err := st.s.List(ctx, st.key(parts...), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		keys[i] = path.Base(k)
	}
	return keys, nil
}

// DeleteRaw deletes a raw key below the CA's prefix.
func (st *Store) DeleteRaw(ctx context.Context, parts ...string) error {
	err := st.s.Delete(ctx, st.key(parts...))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Lock takes the cluster-wide storage lock for name; only for rare critical
// sections (the file-system storage polls its locks once a second).
func (st *Store) Lock(ctx context.Context, name string) error {
	return st.s.Lock(ctx, st.key("locks", name))
}

// Unlock releases a lock taken with Lock.
func (st *Store) Unlock(ctx context.Context, name string) error {
	return st.s.Unlock(ctx, st.key("locks", name))
}
