package acme

import (
	"strconv"
	"testing"
	"time"

	"github.com/acmeca/caddy-acmeca/storage"
)

// TestAccountCacheStaysSmall: with a fresh account per request, the cache
// holds about a TTL's worth of accounts, not every account ever seen.
func TestAccountCacheStaysSmall(t *testing.T) {
	var c accountCache
	now := time.Unix(1_000_000, 0)
	for i := 0; i < 20*sweepEvery; i++ {
		now = now.Add(10 * time.Millisecond) // 100 accounts a second
		c.put(&storage.Account{ID: strconv.Itoa(i)}, nil, now)
	}
	// 5s TTL at 100/s is 500 live entries, plus at most one sweep interval.
	if n := len(c.entries); n > 500+sweepEvery {
		t.Fatalf("cache holds %d entries", n)
	}
	if _, _, ok := c.get(strconv.Itoa(20*sweepEvery-1), now); !ok {
		t.Error("the newest entry is gone")
	}
	if _, _, ok := c.get("0", now); ok {
		t.Error("an entry past its TTL is still served")
	}
	c.forget(strconv.Itoa(20*sweepEvery - 1))
	if _, _, ok := c.get(strconv.Itoa(20*sweepEvery-1), now); ok {
		t.Error("a forgotten entry is still served")
	}
}
