package ratelimit

import "time"

// gcra spends cost from a bucket of count per window whose theoretical
// arrival time is tat. It returns the new TAT when the spend fits, or the
// time at which it would fit.
func gcra(now, tat time.Time, count int, window time.Duration, cost int) (newTAT time.Time, ok bool, retryAt time.Time) {
	interval := window / time.Duration(count)
	if tat.Before(now) {
		tat = now
	}
	newTAT = tat.Add(interval * time.Duration(cost))
	if newTAT.Sub(now) > window {
		return tat, false, newTAT.Add(-window)
	}
	return newTAT, true, time.Time{}
}

// gcraRefund gives back cost, never below now.
func gcraRefund(now, tat time.Time, count int, window time.Duration, cost int) time.Time {
	tat = tat.Add(-window / time.Duration(count) * time.Duration(cost))
	if tat.Before(now) {
		return now
	}
	return tat
}

// pendingSet is the bucket of a counting limit: item -> expiry (unix
// seconds).
type pendingSet map[string]int64

// prune drops expired items.
func (s pendingSet) prune(now time.Time) {
	for id, exp := range s {
		if exp <= now.Unix() {
			delete(s, id)
		}
	}
}

// earliestExpiry is when the first item leaves on its own.
func (s pendingSet) earliestExpiry() time.Time {
	var min int64
	for _, exp := range s {
		if min == 0 || exp < min {
			min = exp
		}
	}
	return time.Unix(min, 0)
}
