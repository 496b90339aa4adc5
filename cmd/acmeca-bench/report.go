package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Phases of the measured rounds.
const (
	phaseEmpty   = "empty"         // the regular rounds
	phaseHistory = "after-history" // our CA again, after the -history pre-load
)

// report is everything a run measured; writeText and writeJSON print it.
type report struct {
	Setup   setup           `json:"setup"`
	Notes   []string        `json:"notes"`
	Nonce   []nonceResult   `json:"nonce_bench,omitempty"`
	Rounds  []roundResult   `json:"rounds"`
	Summary []serverSummary `json:"summary"`
	Ratios  *ratios         `json:"ratios_ours_over_theirs,omitempty"`
	History *historyResult  `json:"history,omitempty"`

	lat map[string]*[numReqTypes][]time.Duration // by server and phase, for the summary
}

type setup struct {
	Caddy         string            `json:"caddy"`
	CaddyVersion  string            `json:"caddy_version"`
	RunDir        string            `json:"run_dir"`
	FileSystem    string            `json:"file_system"`
	Directories   map[string]string `json:"directories"`
	Clients       int               `json:"clients"`
	Names         int               `json:"names_per_order"`
	Rounds        int               `json:"rounds"`
	Duration      string            `json:"duration"`
	Warmup        string            `json:"warmup"`
	Poll          string            `json:"poll_interval"`
	ReuseAccounts bool              `json:"reuse_accounts"`
	Challenge     string            `json:"challenge"`
	VerifyEvery   int               `json:"verify_every"`
	CPUs          int               `json:"cpus"`
}

type roundResult struct {
	Round            int      `json:"round"`
	Server           string   `json:"server"`
	Phase            string   `json:"phase"`
	Flows            int64    `json:"flows"`
	Failed           int64    `json:"failed"`
	Seconds          float64  `json:"seconds"`
	FlowsPerSec      float64  `json:"flows_per_sec"`
	ServerCPUPerFlow float64  `json:"server_cpu_ms_per_flow"`
	GenCPUPerFlow    float64  `json:"loadgen_cpu_ms_per_flow"`
	ServerCPUCores   float64  `json:"server_cpu_cores"` // CPU seconds per second
	GenCPUCores      float64  `json:"loadgen_cpu_cores"`
	RSSMiB           float64  `json:"server_rss_mib"`
	BadNonce         int      `json:"bad_nonce_retries"`
	Verified         int      `json:"chains_verified"`
	InlineKeys       int64    `json:"account_keys_made_in_window,omitempty"`
	DNSPerFlow       float64  `json:"dns_queries_per_flow"`
	HTTP01PerFlow    float64  `json:"http01_fetches_per_flow"`
	Errors           []string `json:"errors,omitempty"`
	ServerErrorCount int      `json:"server_log_errors"`
	ServerErrors     []string `json:"server_log,omitempty"`
}

type serverSummary struct {
	Server              string             `json:"server"`
	Phase               string             `json:"phase"`
	Flows               int64              `json:"flows"`
	Failed              int64              `json:"failed"`
	MedianFlowsPerSec   float64            `json:"median_flows_per_sec"`
	MedianServerCPUms   float64            `json:"median_server_cpu_ms_per_flow"`
	MedianGenCPUms      float64            `json:"median_loadgen_cpu_ms_per_flow"`
	MedianRSSMiB        float64            `json:"median_server_rss_mib"`
	RequestsPerFlow     float64            `json:"requests_per_flow"`
	Latency             map[string]latency `json:"latency"`
	ServerLogErrorCount int                `json:"server_log_errors"`
}

type ratios struct {
	FlowsPerSec      float64 `json:"flows_per_sec"`
	ServerCPUPerFlow float64 `json:"server_cpu_per_flow"`
	GenCPUPerFlow    float64 `json:"loadgen_cpu_per_flow"`
}

type historyResult struct {
	Target             int      `json:"target"`
	Loaded             int64    `json:"loaded"`
	Failed             int64    `json:"failed"`
	IssuedBefore       int64    `json:"issued_before"` // by the empty rounds, warmups not counted
	Clients            int      `json:"clients"`
	Seconds            float64  `json:"seconds"`
	PerSecond          float64  `json:"per_second"`
	StorageBefore      int64    `json:"storage_bytes_before"`
	StorageAfter       int64    `json:"storage_bytes_after"`
	KiBPerCert         float64  `json:"storage_kib_per_certificate"`
	EmptyFlowsPerSec   float64  `json:"median_flows_per_sec_empty"`
	HistoryFlowsPerSec float64  `json:"median_flows_per_sec_after"`
	Note               string   `json:"note,omitempty"`
	Errors             []string `json:"errors,omitempty"`
}

// maxLogLines is how many server log lines a round keeps in full.
const maxLogLines = 5

// addRound turns a phase's result into a row and keeps its latencies.
func (r *report) addRound(round int, s *server, phase string, res *phaseResult, logLines []string) {
	secs := res.Elapsed.Seconds()
	row := roundResult{
		Round: round, Server: s.name, Phase: phase,
		Flows: res.Flows, Failed: res.Failed, Seconds: secs,
		FlowsPerSec:      ratio(float64(res.Flows), secs),
		ServerCPUPerFlow: ratio(ms(res.ServerCPU), float64(res.Flows)),
		GenCPUPerFlow:    ratio(ms(res.LoadgenCPU), float64(res.Flows)),
		ServerCPUCores:   ratio(res.ServerCPU.Seconds(), secs),
		GenCPUCores:      ratio(res.LoadgenCPU.Seconds(), secs),
		RSSMiB:           float64(res.RSS) / (1 << 20),
		BadNonce:         res.BadNonce,
		Verified:         res.Verified,
		InlineKeys:       res.InlineKeys,
		DNSPerFlow:       ratio(float64(res.DNSQueries), float64(res.Flows)),
		HTTP01PerFlow:    ratio(float64(res.HTTP01), float64(res.Flows)),
		Errors:           res.Errors,
		ServerErrorCount: len(logLines),
	}
	row.ServerErrors = logLines[:min(len(logLines), maxLogLines)]
	r.Rounds = append(r.Rounds, row)
	if r.lat == nil {
		r.lat = map[string]*[numReqTypes][]time.Duration{}
	}
	key := s.name + "/" + phase
	if r.lat[key] == nil {
		r.lat[key] = new([numReqTypes][]time.Duration)
	}
	for t := range numReqTypes {
		r.lat[key][t] = append(r.lat[key][t], res.Lat[t]...)
	}
}

// summarize fills Summary and Ratios from the rounds.
func (r *report) summarize() {
	r.Summary = nil
	for _, phase := range []string{phaseEmpty, phaseHistory} {
		for _, name := range []string{ours, theirs} {
			var fps, scpu, gcpu, rss []float64
			sum := serverSummary{Server: name, Phase: phase, Latency: map[string]latency{}}
			for _, row := range r.Rounds {
				if row.Server != name || row.Phase != phase {
					continue
				}
				fps = append(fps, row.FlowsPerSec)
				scpu = append(scpu, row.ServerCPUPerFlow)
				gcpu = append(gcpu, row.GenCPUPerFlow)
				rss = append(rss, row.RSSMiB)
				sum.Flows += row.Flows
				sum.Failed += row.Failed
				sum.ServerLogErrorCount += row.ServerErrorCount
			}
			if len(fps) == 0 {
				continue
			}
			sum.MedianFlowsPerSec, sum.MedianServerCPUms, sum.MedianGenCPUms, sum.MedianRSSMiB = median(fps), median(scpu), median(gcpu), median(rss)
			requests := 0
			if lat := r.lat[name+"/"+phase]; lat != nil {
				for t := range numReqTypes {
					sum.Latency[t.String()] = quantiles(lat[t])
					requests += len(lat[t])
				}
			}
			sum.RequestsPerFlow = ratio(float64(requests), float64(sum.Flows+sum.Failed))
			r.Summary = append(r.Summary, sum)
		}
	}
	o, t := r.summary(ours, phaseEmpty), r.summary(theirs, phaseEmpty)
	if o != nil && t != nil {
		r.Ratios = &ratios{
			FlowsPerSec:      ratio(o.MedianFlowsPerSec, t.MedianFlowsPerSec),
			ServerCPUPerFlow: ratio(o.MedianServerCPUms, t.MedianServerCPUms),
			GenCPUPerFlow:    ratio(o.MedianGenCPUms, t.MedianGenCPUms),
		}
	}
	if h := r.History; h != nil {
		if s := r.summary(ours, phaseEmpty); s != nil {
			h.EmptyFlowsPerSec = s.MedianFlowsPerSec
		}
		if s := r.summary(ours, phaseHistory); s != nil {
			h.HistoryFlowsPerSec = s.MedianFlowsPerSec
		}
	}
}

func (r *report) summary(name, phase string) *serverSummary {
	for i := range r.Summary {
		if r.Summary[i].Server == name && r.Summary[i].Phase == phase {
			return &r.Summary[i]
		}
	}
	return nil
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeText prints the report as tables.
func (r *report) writeText(out io.Writer) {
	s := r.Setup
	accounts := "a fresh account (and directory + newNonce) per flow"
	if s.ReuseAccounts {
		accounts = "one account per worker"
	}
	fmt.Fprintf(out, "\nacmeca-bench: %d clients, %d name(s) per order, %s, %s\n", s.Clients, s.Names, accounts, s.Challenge)
	fmt.Fprintf(out, "rounds: %d x %s per server (after %s warmup each), interleaved; %d CPUs shared by both servers and the bench\n", s.Rounds, s.Duration, s.Warmup, s.CPUs)
	fmt.Fprintf(out, "polling: every %s, Retry-After ignored, for both servers alike\n", s.Poll)
	fmt.Fprintf(out, "storage: %s (%s)\n", s.RunDir, s.FileSystem)
	fmt.Fprintf(out, "caddy:   %s (%s)\n", s.Caddy, s.CaddyVersion)
	for _, name := range []string{ours, theirs} {
		if d, ok := s.Directories[name]; ok {
			fmt.Fprintf(out, "  %-6s %s\n", name, d)
		}
	}

	if len(r.Nonce) > 0 {
		fmt.Fprintf(out, "\nNonce bench (%d workers, keep-alive)\n", s.Clients)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "server\trequest\treq/s\tp50 ms\tp99 ms\trequests\tfailed\t")
		for _, n := range r.Nonce {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.2f\t%.2f\t%d\t%d\t\n", n.Server, n.Kind, n.PerSecond, n.P50ms, n.P99ms, n.Requests, n.Failed)
		}
		tw.Flush()
	}

	fmt.Fprintln(out, "\nRounds (CPU in ms per completed flow; cores = CPU seconds per second)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tserver\tphase\tflows\tfailed\tflows/s\tsrv CPU ms\tsrv cores\tgen CPU ms\tgen cores\tsrv RSS MiB\tDNS q/flow\tbadNonce\tverified\t")
	for _, row := range r.Rounds {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%d\t%d\t\n",
			row.Round, row.Server, row.Phase, row.Flows, row.Failed, row.FlowsPerSec,
			row.ServerCPUPerFlow, row.ServerCPUCores, row.GenCPUPerFlow, row.GenCPUCores, row.RSSMiB, row.DNSPerFlow, row.BadNonce, row.Verified)
	}
	tw.Flush()

	fmt.Fprintln(out, "\nMedians over rounds")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tphase\tflows/s\tsrv CPU ms/flow\tgen CPU ms/flow\tsrv RSS MiB\trequests/flow\tflows\tfailed\t")
	for _, sum := range r.Summary {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.2f\t%.2f\t%.1f\t%.1f\t%d\t%d\t\n", sum.Server, sum.Phase, sum.MedianFlowsPerSec,
			sum.MedianServerCPUms, sum.MedianGenCPUms, sum.MedianRSSMiB, sum.RequestsPerFlow, sum.Flows, sum.Failed)
	}
	if r.Ratios != nil {
		fmt.Fprintf(tw, "ours/theirs\t\t%.2fx\t%.2fx\t%.2fx\t\t\t\t\t\n", r.Ratios.FlowsPerSec, r.Ratios.ServerCPUPerFlow, r.Ratios.GenCPUPerFlow)
	}
	tw.Flush()

	for _, phase := range []string{phaseEmpty, phaseHistory} {
		var sums []*serverSummary
		for _, name := range []string{ours, theirs} {
			if sum := r.summary(name, phase); sum != nil {
				sums = append(sums, sum)
			}
		}
		if len(sums) == 0 {
			continue
		}
		fmt.Fprintf(out, "\nLatency per request type, ms (%s rounds)\n", phase)
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		head := "request\t"
		for _, sum := range sums {
			head += fmt.Sprintf("%s n\tp50\tp95\tp99\t", sum.Server)
		}
		fmt.Fprintln(tw, head)
		for t := range numReqTypes {
			line := t.String() + "\t"
			for _, sum := range sums {
				l := sum.Latency[t.String()]
				if l.N == 0 {
					line += "0\t-\t-\t-\t"
					continue
				}
				line += fmt.Sprintf("%d\t%.2f\t%.2f\t%.2f\t", l.N, l.P50, l.P95, l.P99)
			}
			fmt.Fprintln(tw, line)
		}
		tw.Flush()
	}

	if h := r.History; h != nil {
		fmt.Fprintln(out, "\nHistory (our CA)")
		fmt.Fprintf(out, "  pre-loaded %d of %d certificates with %d workers in %.1fs (%.1f/s), %d failed flows; %d issued before\n",
			h.Loaded, h.Target, h.Clients, h.Seconds, h.PerSecond, h.Failed, h.IssuedBefore)
		fmt.Fprintf(out, "  storage: %.1f MiB before, %.1f MiB after: %.2f KiB per certificate (account, order, authz, cert, limits)\n",
			float64(h.StorageBefore)/(1<<20), float64(h.StorageAfter)/(1<<20), h.KiBPerCert)
		fmt.Fprintf(out, "  flows/s (median): %.1f empty, %.1f after history (%.2fx)\n", h.EmptyFlowsPerSec, h.HistoryFlowsPerSec, ratio(h.HistoryFlowsPerSec, h.EmptyFlowsPerSec))
		if h.Note != "" {
			fmt.Fprintln(out, "  note:", h.Note)
		}
		for _, e := range h.Errors {
			fmt.Fprintln(out, "  error:", e)
		}
	}

	var problems []string
	for _, n := range r.Nonce {
		for _, e := range n.Errors {
			problems = append(problems, fmt.Sprintf("nonce bench %s %s: %s", n.Server, n.Kind, e))
		}
	}
	for _, row := range r.Rounds {
		for _, e := range row.Errors {
			problems = append(problems, fmt.Sprintf("round %d %s (%s) flow failed: %s", row.Round, row.Server, row.Phase, e))
		}
		for _, l := range row.ServerErrors {
			problems = append(problems, fmt.Sprintf("round %d %s (%s) server log: %s", row.Round, row.Server, row.Phase, l))
		}
		if row.ServerErrorCount > len(row.ServerErrors) {
			problems = append(problems, fmt.Sprintf("round %d %s (%s) server log: ... %d more lines", row.Round, row.Server, row.Phase, row.ServerErrorCount-len(row.ServerErrors)))
		}
	}
	if len(problems) > 0 {
		fmt.Fprintln(out, "\nErrors (first few of each round)")
		for _, p := range problems {
			fmt.Fprintln(out, "  "+p)
		}
	} else {
		fmt.Fprintln(out, "\nErrors: none (no failed flow, no server log line at level ERROR)")
	}

	if len(r.Notes) > 0 {
		fmt.Fprintln(out, "\nNotes")
		for _, n := range r.Notes {
			fmt.Fprintln(out, "  - "+strings.ReplaceAll(n, "\n", "\n    "))
		}
	}
}
