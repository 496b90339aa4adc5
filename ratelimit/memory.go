package ratelimit

import (
	"sync"
	"time"
)

// memoryBuckets keeps per-node rate buckets (TATs) in memory.
type memoryBuckets struct {
	mu        sync.Mutex
	tat       map[string]time.Time
	lastSweep time.Time
}

// maxMemoryBuckets bounds memory: beyond it, buckets whose TAT has passed
// (which hold no information) are swept.
const maxMemoryBuckets = 100_000

func (m *memoryBuckets) refund(now time.Time, key string, count int, window time.Duration, cost int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tat, ok := m.tat[key]; ok {
		m.tat[key] = gcraRefund(now, tat, count, window, cost)
	}
}

func (m *memoryBuckets) spend(now time.Time, key string, count int, window time.Duration, cost int, commit bool) (bool, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tat == nil {
		m.tat = map[string]time.Time{}
	}
	newTAT, ok, retry := gcra(now, m.tat[key], count, window, cost)
	if ok && commit {
		m.tat[key] = newTAT
	}
	if len(m.tat) > maxMemoryBuckets && now.Sub(m.lastSweep) > time.Second {
		for k, t := range m.tat {
			if t.Before(now) {
				delete(m.tat, k)
			}
		}
		m.lastSweep = now
	}
	return ok, retry
}
