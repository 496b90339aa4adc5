package main

import (
	"context"
	"fmt"
	"time"
)

// preload issues cfg.history certificates from our CA with real flows, as
// fast as -history-clients workers can, and measures the storage they
// take. It gives up after -history-max and says so.
func (b *bench) preload(ctx context.Context, s *server) error {
	cfg := b.cfg
	h := &historyResult{Target: cfg.history, Clients: cfg.historyClients}
	for _, row := range b.rep.Rounds {
		if row.Server == ours {
			h.IssuedBefore += row.Flows
		}
	}
	b.rep.History = h

	before, err := diskUsage(s.storage)
	if err != nil {
		return err
	}
	h.StorageBefore = before
	if !cfg.reuseAccounts {
		n := cfg.history + 4*cfg.historyClients
		fmt.Fprintf(cfg.progress, "history: generating %d account keys\n", n)
		if err := b.keys[s.name].fill(ctx, n); err != nil {
			return err
		}
	}

	fmt.Fprintf(cfg.progress, "history: issuing %d certificates with %d workers (at most %s)\n", cfg.history, cfg.historyClients, cfg.historyMax)
	p := b.newPhase(s, cfg.historyClients)
	p.duration = cfg.historyMax
	p.target = int64(cfg.history)
	start := time.Now()
	p.progress = func(done int64) {
		el := time.Since(start)
		fmt.Fprintf(cfg.progress, "  history: %d/%d after %s (%.1f/s)\n", done, cfg.history, el.Round(time.Second), float64(done)/el.Seconds())
	}
	res, err := p.run(ctx)
	if err != nil {
		return err
	}
	s.newLogLines()
	h.Loaded, h.Failed, h.Errors = res.Flows, res.Failed, res.Errors
	h.Seconds = res.Elapsed.Seconds()
	h.PerSecond = ratio(float64(res.Flows), h.Seconds)
	if res.Flows < int64(cfg.history) {
		h.Note = fmt.Sprintf("stopped after -history-max %s with %d of %d certificates; the after-history numbers are for %d",
			cfg.historyMax, res.Flows, cfg.history, res.Flows)
	}
	after, err := diskUsage(s.storage)
	if err != nil {
		return err
	}
	h.StorageAfter = after
	h.KiBPerCert = ratio(float64(after-before)/1024, float64(res.Flows))
	fmt.Fprintf(cfg.progress, "history: %d certificates in %.1fs, %.2f KiB each\n", res.Flows, h.Seconds, h.KiBPerCert)
	return nil
}
