package keylock

import (
	"sync"
	"testing"
	"time"
)

// TestLockExcludes: one key is held by one goroutine at a time, different
// keys do not wait for each other, and the map forgets unused keys.
func TestLockExcludes(t *testing.T) {
	var s Set
	var mu sync.Mutex
	held := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		key := []string{"a", "b"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := s.Lock(key)
			mu.Lock()
			held[key]++
			if held[key] > 1 {
				t.Errorf("key %s held twice", key)
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			held[key]--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()

	// Holding one key does not block another, so one goroutine may hold
	// both (the key change holds an account's and a key's lock).
	ua := s.Lock("a")
	ub := s.Lock("b")
	ub()
	ua()
	if n := len(s.locks); n != 0 {
		t.Errorf("%d keys remain after every lock was released", n)
	}
}
