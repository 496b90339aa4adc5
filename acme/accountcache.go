package acme

import (
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/acmeca/caddy-acmeca/storage"
)

// accountCacheTTL bounds how long a node trusts its copy of an account.
// Changes made on this node take effect at once; a change made on another
// node sharing the storage (a deactivation, a key change) takes effect here
// within this time.
const accountCacheTTL = 5 * time.Second

// maxCachedAccounts bounds the cache; past it, the cache starts over.
const maxCachedAccounts = 100_000

// accountCache keeps recently used accounts with their parsed keys, so an
// authenticated request costs no storage read and no JWK parse.
type accountCache struct {
	mu      sync.Mutex
	entries map[string]cachedAccount
	puts    int // since the last sweep
}

// sweepEvery is how many puts pass between sweeps of expired entries, so
// the cache holds about the accounts of the last TTL, not of all time.
const sweepEvery = 1024

type cachedAccount struct {
	acct    *storage.Account
	key     *jose.JSONWebKey
	expires time.Time
}

func (c *accountCache) get(id string, now time.Time) (*storage.Account, *jose.JSONWebKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || now.After(e.expires) {
		return nil, nil, false
	}
	return e.acct, e.key, true
}

func (c *accountCache) put(a *storage.Account, key *jose.JSONWebKey, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxCachedAccounts {
		c.entries = make(map[string]cachedAccount)
	}
	if c.puts++; c.puts >= sweepEvery {
		c.puts = 0
		for id, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, id)
			}
		}
	}
	c.entries[a.ID] = cachedAccount{acct: a, key: key, expires: now.Add(accountCacheTTL)}
}

func (c *accountCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, id)
}
