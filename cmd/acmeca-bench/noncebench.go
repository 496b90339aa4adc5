package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// nonceResult is one server's rate for one cheap request kind.
type nonceResult struct {
	Server    string   `json:"server"`
	Kind      string   `json:"kind"` // "newNonce HEAD" or "directory GET"
	Requests  int64    `json:"requests"`
	Failed    int64    `json:"failed"`
	Seconds   float64  `json:"seconds"`
	PerSecond float64  `json:"per_second"`
	P50ms     float64  `json:"p50_ms"`
	P99ms     float64  `json:"p99_ms"`
	Errors    []string `json:"errors,omitempty"`
}

// nonceWarmup opens every worker's connection before the window.
const nonceWarmup = 300 * time.Millisecond

// nonceBench sends one kind of request as fast as the workers can, each
// on its own keep-alive connection.
func nonceBench(ctx context.Context, s *server, cfg *config, typ reqType) (*nonceResult, error) {
	if err := s.alive(); err != nil {
		return nil, err
	}
	method, url, kind := http.MethodHead, s.dir0.NewNonce, "newNonce HEAD"
	if typ == reqDirectory {
		method, url, kind = http.MethodGet, s.directoryURL, "directory GET"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	win := &window{}
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	workers := make([]*worker, cfg.clients)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{srv: s, cfg: cfg, hc: httpClient(s), win: win}
		workers[i] = w
		wg.Go(func() {
			defer w.hc.CloseIdleConnections()
			for ctx.Err() == nil {
				w.nonce = ""
				r, err := w.do(ctx, typ, method, url, nil)
				end := time.Now()
				if ctx.Err() != nil {
					return
				}
				if !win.contains(end) {
					continue
				}
				if err == nil && r.status != http.StatusOK {
					err = newRequestError(typ, url, r)
				}
				if err == nil && typ == reqNewNonce && w.nonce == "" {
					err = fmt.Errorf("%s %s: no Replay-Nonce", kind, url)
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(errs) < maxErrors {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	if err := sleep(ctx, nonceWarmup); err != nil {
		cancel()
		wg.Wait()
		return nil, err
	}
	t0 := time.Now()
	win.start.Store(t0.UnixNano())
	err := sleep(ctx, cfg.nonceDuration)
	t1 := time.Now()
	win.end.Store(t1.UnixNano())
	cancel()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	var lat []time.Duration
	for _, w := range workers {
		lat = append(lat, w.lat[typ]...)
	}
	q := quantiles(lat)
	secs := t1.Sub(t0).Seconds()
	return &nonceResult{
		Server: s.name, Kind: kind,
		Requests: ok.Load(), Failed: failed.Load(), Seconds: secs,
		PerSecond: float64(ok.Load()) / secs,
		P50ms:     q.P50, P99ms: q.P99,
		Errors: errs,
	}, s.alive()
}
