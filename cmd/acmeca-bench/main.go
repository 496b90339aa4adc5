// Command acmeca-bench measures this repository's ACME CA (the acme_ca
// handler) against Caddy's built-in acme_server, on loopback, in one run.
//
// It starts two `caddy run` processes from ./cmd/caddy, serves the http-01
// responses on 127.0.0.1:80 and a DNS server that answers 127.0.0.1 for
// every name, and drives complete RFC 8555 flows (new account, order,
// authorization, challenge, finalize, download) with concurrent workers of
// its own lean ACME client. The two servers are measured in interleaved
// rounds; the report gives flows per second, latency per request type,
// server and load-generator CPU per flow, and server memory.
//
// It must run as root (or with CAP_NET_BIND_SERVICE), because both CAs
// validate http-01 on port 80:
//
//	go run ./cmd/acmeca-bench -rounds 2 -duration 10s
//	go run ./cmd/acmeca-bench -rounds 1 -duration 3s -warmup 1s   # smoke run
//	go run ./cmd/acmeca-bench -only ours -history 100000           # ours, empty vs loaded
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

// config is what the flags choose.
type config struct {
	caddyBin   string // a prebuilt Caddy binary; empty: build ./cmd/caddy
	storageDir string // parent of the run's directory; empty: the system temp dir
	keep       bool   // keep the run's directory (storage, logs, Caddyfiles)

	only          string        // ours, theirs or both
	clients       int           // concurrent workers
	names         int           // names per order
	rounds        int           // measured rounds per server
	duration      time.Duration // measured time per round
	warmup        time.Duration // unmeasured load before each round
	reuseAccounts bool          // one account per worker instead of one per flow
	poll          time.Duration // fixed polling interval
	flowTimeout   time.Duration // the most one flow may take
	verifyEvery   int           // verify the chain of every n-th certificate (and each worker's first); parsing is always done
	challenge     string        // http-01 or dns-01

	nonceBench    bool
	nonceDuration time.Duration // per server and request kind

	history        int           // certificates to pre-load into ours; 0: off
	historyClients int           // workers for the pre-load
	historyMax     time.Duration // give up pre-loading after this long

	json        bool   // print the report as JSON
	cpuProfile  string // the load generator's CPU profile
	serverPprof string // directory for the servers' CPU profiles; turns the admin endpoint on

	progress io.Writer // progress lines; the report itself goes to the caller
}

func defaultConfig() config {
	return config{
		only:           "both",
		clients:        8,
		names:          1,
		rounds:         3,
		duration:       15 * time.Second,
		warmup:         3 * time.Second,
		poll:           5 * time.Millisecond,
		flowTimeout:    30 * time.Second,
		verifyEvery:    10,
		challenge:      "http-01",
		nonceBench:     true,
		nonceDuration:  3 * time.Second,
		historyClients: 32,
		historyMax:     time.Hour,
		progress:       os.Stderr,
	}
}

func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("acmeca-bench", flag.ContinueOnError)
	fs.StringVar(&cfg.caddyBin, "caddy", "", "Caddy binary built from ./cmd/caddy (default: build it into a temp dir)")
	fs.StringVar(&cfg.storageDir, "storage-dir", "", "parent directory for both servers' storage, e.g. /dev/shm for tmpfs (default: the system temp dir)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the run directory (storage, Caddyfiles, logs) after the run")
	fs.StringVar(&cfg.only, "only", cfg.only, "which servers to measure: ours, theirs or both")
	fs.IntVar(&cfg.clients, "clients", cfg.clients, "concurrent workers")
	fs.IntVar(&cfg.names, "names", cfg.names, "DNS names per order")
	fs.IntVar(&cfg.rounds, "rounds", cfg.rounds, "measured rounds per server, interleaved")
	fs.DurationVar(&cfg.duration, "duration", cfg.duration, "measured time per round and server")
	fs.DurationVar(&cfg.warmup, "warmup", cfg.warmup, "unmeasured load before each round")
	fs.BoolVar(&cfg.reuseAccounts, "reuse-accounts", false, "one account per worker instead of a fresh account per flow")
	fs.DurationVar(&cfg.poll, "poll", cfg.poll, "fixed polling interval for authorizations and orders (Retry-After is ignored)")
	fs.DurationVar(&cfg.flowTimeout, "flow-timeout", cfg.flowTimeout, "the most one flow may take")
	fs.IntVar(&cfg.verifyEvery, "verify-every", cfg.verifyEvery, "verify the chain of every n-th certificate of the run, and of each worker's first, against the server's root (1: all, 0: only the first)")
	fs.StringVar(&cfg.challenge, "challenge", cfg.challenge, "challenge type to answer: http-01 or dns-01")
	fs.BoolVar(&cfg.nonceBench, "nonce-bench", cfg.nonceBench, "measure newNonce and directory requests per second")
	fs.DurationVar(&cfg.nonceDuration, "nonce-duration", cfg.nonceDuration, "time per server and request kind in the nonce bench")
	fs.IntVar(&cfg.history, "history", 0, "pre-load this many certificates into our CA, then measure it again")
	fs.IntVar(&cfg.historyClients, "history-clients", cfg.historyClients, "workers for the -history pre-load")
	fs.DurationVar(&cfg.historyMax, "history-max", cfg.historyMax, "stop the -history pre-load after this long")
	fs.BoolVar(&cfg.json, "json", false, "print the report as JSON")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the load generator's CPU profile to this file")
	fs.StringVar(&cfg.serverPprof, "server-pprof", "", "turn on the servers' admin endpoint (loopback) and save a CPU profile of each server's first round in this directory")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, cfg.check()
}

// check rejects settings the run cannot work with, naming the flag.
func (c *config) check() error {
	switch {
	case c.only != "ours" && c.only != "theirs" && c.only != "both":
		return fmt.Errorf("-only must be ours, theirs or both, not %q", c.only)
	case c.challenge != "http-01" && c.challenge != "dns-01":
		return fmt.Errorf("-challenge must be http-01 or dns-01, not %q", c.challenge)
	case c.clients < 1:
		return errors.New("-clients must be at least 1")
	case c.names < 1 || c.names > 100:
		return errors.New("-names must be between 1 and 100")
	case c.rounds < 1:
		return errors.New("-rounds must be at least 1")
	case c.duration <= 0:
		return errors.New("-duration must be positive")
	case c.warmup < 0:
		return errors.New("-warmup must not be negative")
	case c.poll <= 0:
		return errors.New("-poll must be positive")
	case c.flowTimeout <= 0:
		return errors.New("-flow-timeout must be positive")
	case c.verifyEvery < 0:
		return errors.New("-verify-every must not be negative")
	case c.history < 0:
		return errors.New("-history must not be negative")
	case c.history > 0 && c.only == "theirs":
		return errors.New("-history pre-loads our CA, so it needs -only ours or both")
	case c.historyClients < 1:
		return errors.New("-history-clients must be at least 1")
	case c.nonceBench && c.nonceDuration <= 0:
		return errors.New("-nonce-duration must be positive")
	}
	return nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "acmeca-bench:", err)
		os.Exit(2)
	}
	os.Exit(runMain(cfg))
}

// runMain runs the benchmark and prints the report; it returns the exit
// code, so every deferred cleanup has run before main exits.
func runMain(cfg config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "acmeca-bench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "acmeca-bench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	rep, err := run(ctx, cfg)
	if rep != nil {
		if cfg.json {
			if werr := rep.writeJSON(os.Stdout); werr != nil {
				fmt.Fprintln(os.Stderr, "acmeca-bench:", werr)
			}
		} else {
			rep.writeText(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "acmeca-bench:", err)
		return 1
	}
	return 0
}
