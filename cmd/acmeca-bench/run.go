package main

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// readyTimeout bounds a server's start, first-time key generation included.
const readyTimeout = time.Minute

// bench is the state of one run.
type bench struct {
	cfg      *config
	rep      *report
	env      *env
	servers  []*server
	keys     map[string]*keyPool // account keys, by server
	certKeys map[string][]*ecdsa.PrivateKey
	seq      atomic.Int64
	rate     map[string]float64 // the last flows/s per server, to size the key pool
	profiled map[string]bool    // -server-pprof: servers already profiled
}

// run starts everything, measures, stops everything, and returns the
// report; on error or interruption, the report holds what was measured.
func run(ctx context.Context, cfg config) (*report, error) {
	if cfg.progress == nil {
		cfg.progress = io.Discard
	}
	b := &bench{
		cfg:      &cfg,
		rep:      &report{},
		keys:     map[string]*keyPool{},
		certKeys: map[string][]*ecdsa.PrivateKey{},
		rate:     map[string]float64{},
		profiled: map[string]bool{},
	}
	h01, err := startHTTP01()
	if err != nil {
		return nil, err
	}
	defer h01.close()
	dnsSrv, err := startDNS()
	if err != nil {
		return nil, err
	}
	defer dnsSrv.close()
	b.env = &env{http01: h01, dns: dnsSrv}

	bin := cfg.caddyBin
	if bin == "" {
		binDir, err := os.MkdirTemp("", "acmeca-bench-bin-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(binDir)
		if bin, err = buildCaddy(ctx, binDir, cfg.progress); err != nil {
			return nil, err
		}
	}
	if cfg.storageDir != "" {
		if err := os.MkdirAll(cfg.storageDir, 0o755); err != nil {
			return nil, err
		}
	}
	parent, err := os.MkdirTemp(cfg.storageDir, "acmeca-bench-")
	if err != nil {
		return nil, err
	}
	if cfg.keep {
		defer fmt.Fprintf(cfg.progress, "kept %s\n", parent)
	} else {
		defer os.RemoveAll(parent)
	}
	if cfg.serverPprof != "" {
		if err := os.MkdirAll(cfg.serverPprof, 0o755); err != nil {
			return nil, err
		}
	}

	b.rep.Setup = setup{
		Caddy: bin, CaddyVersion: caddyVersion(ctx, bin),
		RunDir: parent, FileSystem: fsKind(parent),
		Directories: map[string]string{},
		Clients:     cfg.clients, Names: cfg.names, Rounds: cfg.rounds,
		Duration: cfg.duration.String(), Warmup: cfg.warmup.String(), Poll: cfg.poll.String(),
		ReuseAccounts: cfg.reuseAccounts, Challenge: cfg.challenge, VerifyEvery: cfg.verifyEvery,
		CPUs: runtime.NumCPU(),
	}
	b.rep.Notes = notes(&cfg)

	defer b.stopServers()
	for _, name := range serverNames(cfg.only) {
		s, err := startServer(name, bin, parent, dnsSrv.addr, &cfg)
		if err != nil {
			return b.rep, err
		}
		b.servers = append(b.servers, s)
		b.rep.Setup.Directories[name] = s.directoryURL
		b.keys[name] = &keyPool{}
		keys, err := newCertKeys(64)
		if err != nil {
			return b.rep, err
		}
		b.certKeys[name] = keys
	}
	for _, s := range b.servers {
		if err := s.waitReady(ctx, readyTimeout); err != nil {
			return b.rep, err
		}
		fmt.Fprintf(cfg.progress, "%s (%s) ready at %s, pid %d\n", s.name, s.handler, s.directoryURL, s.pid())
		s.newLogLines() // start-up lines are not a round's errors
	}

	err = b.measure(ctx)
	b.rep.summarize()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", err)
	}
	return b.rep, err
}

func (b *bench) measure(ctx context.Context) error {
	if b.cfg.nonceBench {
		for _, s := range b.servers {
			for _, typ := range []reqType{reqNewNonce, reqDirectory} {
				fmt.Fprintf(b.cfg.progress, "nonce bench: %s %s for %s\n", s.name, typ, b.cfg.nonceDuration)
				res, err := nonceBench(ctx, s, b.cfg, typ)
				if res != nil {
					b.rep.Nonce = append(b.rep.Nonce, *res)
				}
				if err != nil {
					return err
				}
			}
			s.newLogLines()
		}
	}

	if err := b.rounds(ctx, b.servers, phaseEmpty); err != nil {
		return err
	}
	if b.cfg.history == 0 {
		return nil
	}
	s := b.server(ours)
	if err := b.preload(ctx, s); err != nil {
		return err
	}
	return b.rounds(ctx, []*server{s}, phaseHistory)
}

// rounds measures the servers in interleaved rounds, alternating which
// goes first, so a drift of the machine affects both alike.
func (b *bench) rounds(ctx context.Context, servers []*server, phaseName string) error {
	for round := 1; round <= b.cfg.rounds; round++ {
		order := slices.Clone(servers)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, s := range order {
			fmt.Fprintf(b.cfg.progress, "round %d/%d (%s): %s, %s warmup + %s\n", round, b.cfg.rounds, phaseName, s.name, b.cfg.warmup, b.cfg.duration)
			if err := b.fillKeys(ctx, s, b.cfg.warmup+b.cfg.duration); err != nil {
				return err
			}
			p := b.newPhase(s, b.cfg.clients)
			p.warmup, p.duration = b.cfg.warmup, b.cfg.duration
			if b.cfg.serverPprof != "" && !b.profiled[s.name] {
				b.profiled[s.name] = true
				p.profile = filepath.Join(b.cfg.serverPprof, s.name+".cpu.pprof")
			}
			res, err := p.run(ctx)
			if err != nil {
				return err
			}
			b.rate[s.name] = float64(res.Flows) / res.Elapsed.Seconds()
			b.rep.addRound(round, s, phaseName, res, s.newLogLines())
			fmt.Fprintf(b.cfg.progress, "  %d flows (%.1f/s), %d failed\n", res.Flows, b.rate[s.name], res.Failed)
			if res.Flows == 0 {
				return fmt.Errorf("round %d: no flow against %s succeeded; see the errors in the report", round, s.name)
			}
		}
	}
	return nil
}

func (b *bench) newPhase(s *server, clients int) *phase {
	return &phase{
		srv: s, cfg: b.cfg, env: b.env, keys: b.keys[s.name], certKeys: b.certKeys[s.name], seq: &b.seq,
		clients: clients,
	}
}

// fillKeys generates, before the timing, the account keys a phase of
// length d is expected to use: 1.5 times the last rate, or a generous
// guess the first time. A shortfall is made up inline and reported.
func (b *bench) fillKeys(ctx context.Context, s *server, d time.Duration) error {
	if b.cfg.reuseAccounts {
		return b.keys[s.name].fill(ctx, b.cfg.clients*2)
	}
	rate := b.rate[s.name]
	if rate == 0 {
		rate = 500
	}
	n := int(rate*1.5*d.Seconds()) + 4*b.cfg.clients
	return b.keys[s.name].fill(ctx, n)
}

func (b *bench) server(name string) *server {
	for _, s := range b.servers {
		if s.name == name {
			return s
		}
	}
	return nil
}

// stopServers stops all servers at once and waits for them.
func (b *bench) stopServers() {
	var wg sync.WaitGroup
	for _, s := range b.servers {
		wg.Go(s.stop)
	}
	wg.Wait()
}

func serverNames(only string) []string {
	switch only {
	case ours, theirs:
		return []string{only}
	}
	return []string{ours, theirs}
}

// notes say what the numbers do and do not include.
func notes(cfg *config) []string {
	n := []string{
		"Both servers run the same Caddy binary and the same Caddyfile apart from the handler (acme_ca vs acme_server), " +
			"each offering only " + cfg.challenge + ", on loopback, with TLS (HTTP/1.1 keep-alive, one connection per worker).",
		"Polling uses a fixed interval and ignores Retry-After, the same for both. A challenge or finalize response " +
			"that is already valid is not polled: Caddy's acme_server validates and issues within the request, and ours " +
			"waits up to 300 ms for its background validation, so polls are rare for both.",
		"Flows cut off at the end of a round are dropped, not counted as failures; each round's CPU is the delta over its window.",
		"gen CPU is the bench's own process: the ACME client, plus the http-01 responder and the DNS server that answer the CAs.",
		"Our CA keeps its counting rate limits (new_requests and directory_requests are raised for 127.0.0.1); " +
			"every flow orders names under its own registered domain (f<N>.r<N>.bench-test).",
	}
	if cfg.challenge == "http-01" {
		n = append(n, "Caddy's acme_server resolves http-01 names with the system resolver, not its `resolvers` (those serve only dns-01 TXT lookups), "+
			"so the bench gives that process HTTP_PROXY=http://127.0.0.1:80: its validation request still arrives at port 80, "+
			"but without a DNS lookup and over a keep-alive proxy connection. Our CA looks the name up in the bench's DNS "+
			"(A, and CAA after validation) and dials a new connection per validation.")
	}
	return n
}
