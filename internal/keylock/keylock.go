// Package keylock gives each key its own mutex, created on first use and
// dropped when nobody holds or waits for it.
package keylock

import "sync"

// Set is a set of per-key mutexes. The zero value is ready to use.
type Set struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	mu   sync.Mutex
	refs int
}

// Lock locks key and returns the function that unlocks it. Different keys
// never share a mutex, so one goroutine may hold several keys at once
// (take them in a fixed order to avoid deadlocks).
func (s *Set) Lock(key string) (unlock func()) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*entry{}
	}
	e := s.locks[key]
	if e == nil {
		e = &entry{}
		s.locks[key] = e
	}
	e.refs++
	s.mu.Unlock()

	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		s.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
}
