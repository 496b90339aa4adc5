package ratelimit

import (
	"encoding/json"
	"time"
)

// record is one stored key: a rate record (GCRA TATs, its own and those of
// buckets stored with it) or a counting set.
type record struct {
	counting bool
	rate     rateRecord
	set      pendingSet
}

// rateRecord is a stored rate bucket.
type rateRecord struct {
	TAT    int64            `json:"tat,omitempty"`    // unix nanoseconds
	Fields map[string]int64 `json:"fields,omitempty"` // Bucket.Field -> TAT
}

func decodeRecord(raw []byte, counting bool) (*record, error) {
	r := &record{counting: counting, set: pendingSet{}}
	if raw == nil {
		return r, nil
	}
	if counting {
		return r, json.Unmarshal(raw, &r.set)
	}
	return r, json.Unmarshal(raw, &r.rate)
}

// encode drops what no longer holds information (TATs in the past,
// expired items) and marshals the rest.
func (r *record) encode(now time.Time) ([]byte, error) {
	if r.counting {
		r.set.prune(now)
		return json.Marshal(r.set)
	}
	for f, tat := range r.rate.Fields {
		if tat <= now.UnixNano() {
			delete(r.rate.Fields, f)
		}
	}
	return json.Marshal(r.rate)
}

func (r *record) tat(field string) time.Time {
	if field == "" {
		return time.Unix(0, r.rate.TAT)
	}
	return time.Unix(0, r.rate.Fields[field])
}

func (r *record) setTAT(field string, t time.Time) {
	if field == "" {
		r.rate.TAT = t.UnixNano()
		return
	}
	if r.rate.Fields == nil {
		r.rate.Fields = map[string]int64{}
	}
	r.rate.Fields[field] = t.UnixNano()
}

// spend applies a spend to the record in memory, or says when it would fit.
func (r *record) spend(now time.Time, bk Bucket) (bool, time.Time) {
	if r.counting {
		return r.spendCount(now, bk)
	}
	newTAT, ok, retry := gcra(now, r.tat(bk.Field), bk.Count, bk.Window, cost(bk))
	if !ok {
		return false, retry
	}
	r.setTAT(bk.Field, newTAT)
	return true, time.Time{}
}

func (r *record) spendCount(now time.Time, bk Bucket) (bool, time.Time) {
	r.set.prune(now)
	added := 0
	for _, id := range bk.Items {
		if _, dup := r.set[id]; !dup {
			added++
		}
	}
	if len(r.set)+added > bk.Count && bk.StillCounts != nil {
		for id := range r.set {
			if !bk.StillCounts(id) {
				delete(r.set, id)
			}
		}
	}
	if len(r.set)+added > bk.Count {
		if len(r.set) == 0 {
			// More at once than the limit allows: waiting will not help,
			// so there is no later time to name.
			return false, now
		}
		return false, r.set.earliestExpiry()
	}
	for _, id := range bk.Items {
		r.set[id] = bk.Expires.Unix()
	}
	return true, time.Time{}
}

// refund gives back what a spend of bk took.
func (r *record) refund(now time.Time, bk Bucket) {
	if r.counting {
		for _, id := range bk.Items {
			delete(r.set, id)
		}
		return
	}
	r.setTAT(bk.Field, gcraRefund(now, r.tat(bk.Field), bk.Count, bk.Window, cost(bk)))
}
