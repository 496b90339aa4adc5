package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxErrors is how many failed flows a phase keeps in full.
const maxErrors = 5

// phase is one stretch of load on one server: workers run flows without
// pause; after the warmup the window opens and CPU is sampled; when it
// closes (duration elapsed, or target flows done) the workers are cut off
// and flows still running are dropped, counted neither way.
type phase struct {
	srv      *server
	cfg      *config
	env      *env
	keys     *keyPool
	certKeys []*ecdsa.PrivateKey
	seq      *atomic.Int64 // flow numbers, unique over the run

	clients  int
	warmup   time.Duration
	duration time.Duration
	target   int64 // stop once this many flows succeeded; 0: run for duration
	profile  string
	progress func(done int64) // called now and then during long phases
}

// phaseResult is what a phase measured.
type phaseResult struct {
	Flows      int64
	Failed     int64
	Elapsed    time.Duration
	ServerCPU  time.Duration
	LoadgenCPU time.Duration
	RSS        int64 // bytes, at the end
	BadNonce   int
	Verified   int
	InlineKeys int64 // account keys made during the window because the pool ran dry
	DNSQueries int64 // queries the bench's DNS server answered during the window
	HTTP01     int64 // http-01 responses the bench served during the window
	Errors     []string
	Lat        [numReqTypes][]time.Duration
}

func (p *phase) run(ctx context.Context) (*phaseResult, error) {
	if err := p.srv.alive(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	win := &window{}
	res := &phaseResult{}
	var flows, failed atomic.Int64
	var mu sync.Mutex // guards res.Errors and the merge
	targetReached := make(chan struct{})
	var reachOnce sync.Once

	workers := make([]*worker, p.clients)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{srv: p.srv, cfg: p.cfg, env: p.env, hc: httpClient(p.srv), win: win, keys: p.keys, certKeys: p.certKeys}
		workers[i] = w
		wg.Go(func() {
			defer w.hc.CloseIdleConnections()
			for ctx.Err() == nil {
				fctx, fcancel := context.WithTimeout(ctx, p.cfg.flowTimeout)
				err := w.flow(fctx, p.seq.Add(1))
				fcancel()
				end := time.Now()
				if ctx.Err() != nil {
					return // cut off by the end of the phase
				}
				if err != nil {
					// After a failure the worker starts over as a new
					// client: the nonce or account may be what failed.
					w.nonce, w.acct = "", nil
				}
				if !win.contains(end) {
					continue
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(res.Errors) < maxErrors {
						res.Errors = append(res.Errors, err.Error())
					}
					mu.Unlock()
					continue
				}
				if n := flows.Add(1); p.target > 0 && n >= p.target {
					reachOnce.Do(func() { close(targetReached) })
				}
			}
		})
	}

	stop := func(err error) (*phaseResult, error) {
		cancel()
		wg.Wait()
		return nil, err
	}
	if err := sleep(ctx, p.warmup); err != nil {
		return stop(err)
	}

	cpu0, err := procCPU(p.srv.pid())
	if err != nil {
		return stop(err)
	}
	self0 := selfCPU()
	inline0 := p.keys.inline.Load()
	dns0, http0 := p.env.dns.queries.Load(), p.env.http01.served.Load()
	t0 := time.Now()
	win.start.Store(t0.UnixNano())

	var profDone chan error
	if p.profile != "" {
		profDone = make(chan error, 1)
		go func() { profDone <- p.srv.cpuProfile(ctx, p.duration, p.profile) }()
	}

	timer := time.NewTimer(p.duration)
	tick := time.NewTicker(10 * time.Second)
	func() {
		defer timer.Stop()
		defer tick.Stop()
		for {
			select {
			case <-timer.C:
				return
			case <-targetReached:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if p.progress != nil {
					p.progress(flows.Load())
				}
			}
		}
	}()
	t1 := time.Now()
	win.end.Store(t1.UnixNano())
	cpu1, cpuErr := procCPU(p.srv.pid())
	self1 := selfCPU()
	res.InlineKeys = p.keys.inline.Load() - inline0
	res.DNSQueries = p.env.dns.queries.Load() - dns0
	res.HTTP01 = p.env.http01.served.Load() - http0
	interrupted := ctx.Err()

	if profDone != nil {
		if err := <-profDone; err != nil {
			fmt.Fprintf(p.cfg.progress, "%s: server CPU profile: %v\n", p.srv.name, err)
		}
	}
	cancel()
	wg.Wait()
	if interrupted != nil {
		return nil, interrupted
	}
	if err := p.srv.alive(); err != nil {
		return nil, err
	}
	if cpuErr != nil {
		return nil, cpuErr
	}
	res.RSS, err = procRSS(p.srv.pid())
	if err != nil {
		return nil, err
	}

	res.Flows, res.Failed = flows.Load(), failed.Load()
	res.Elapsed = t1.Sub(t0)
	res.ServerCPU = cpu1 - cpu0
	res.LoadgenCPU = self1 - self0
	for _, w := range workers {
		res.BadNonce += w.badNonce
		res.Verified += w.verified
		for t := range numReqTypes {
			res.Lat[t] = append(res.Lat[t], w.lat[t]...)
		}
	}
	return res, nil
}

// newCertKeys makes the certificate keys that CSRs reuse round-robin. They
// are never account keys, which both CAs refuse in a CSR.
func newCertKeys(n int) ([]*ecdsa.PrivateKey, error) {
	keys := make([]*ecdsa.PrivateKey, n)
	for i := range keys {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}
