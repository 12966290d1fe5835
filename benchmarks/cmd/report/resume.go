package main

import (
	"fmt"
	"io"
	"strings"
)

// The resume extension's rows (issue #16): each tunnel path with resume on
// ("<path>-resume") ran right after its twin with resume off in every
// round, so that their ratio is taken seconds apart.

// resumeSuffix names a row with the resume extension granted.
const resumeSuffix = "-resume"

// resumePairs are the paths measured with resume off and on.
var resumePairs = []string{"socket-ws", "socket-wss", "port-ws", "port-wss"}

// minResumeRatio is issue #16's floor: resume on moves at least this share
// of what resume off moves.
const minResumeRatio = 0.95

// hasResume reports whether s holds a row with resume on.
func hasResume(s *Set) bool {
	for name := range s.Runs {
		if strings.Contains(name, resumeSuffix+"/") || strings.HasSuffix(name, resumeSuffix) {
			return true
		}
	}
	return false
}

// resumeRatios checks the 32 KiB throughput of resume on against off for
// the two paths (ProxySocket and ProxyPort of one scheme).
func resumeRatios(s *Set, socket, port string) (string, bool, bool) {
	a, ok1 := ratio(s, fmt.Sprintf(bulk32, socket+resumeSuffix), fmt.Sprintf(bulk32, socket), "MB/s")
	b, ok2 := ratio(s, fmt.Sprintf(bulk32, port+resumeSuffix), fmt.Sprintf(bulk32, port), "MB/s")
	return fmt.Sprintf("%.3f; %.3f × off", a, b), a >= minResumeRatio && b >= minResumeRatio, ok1 && ok2
}

var resumeTargets = []target{
	{
		measure:   "resume on vs off, 32 KiB writes, ws (ProxySocket; ProxyPort)",
		reference: func(*Set) string { return "—" },
		goal:      fmt.Sprintf("≥ %.2f × resume off", minResumeRatio),
		ours:      func(s *Set) (string, bool, bool) { return resumeRatios(s, "socket-ws", "port-ws") },
	},
	{
		measure:   "resume on vs off, 32 KiB writes, wss (ProxySocket; ProxyPort)",
		reference: func(*Set) string { return "—" },
		goal:      fmt.Sprintf("≥ %.2f × resume off", minResumeRatio),
		ours:      func(s *Set) (string, bool, bool) { return resumeRatios(s, "socket-wss", "port-wss") },
	},
	{
		measure: "heap per idle tunnel, client, resume on",
		reference: func(s *Set) string {
			v, ok := median(s, fmt.Sprintf(idleRow, "reference"), "client-heap-B/tunnel")
			if !ok {
				return "not run"
			}
			return bytesText(v)
		},
		goal: "≤ 4 KiB (issue #6's, for the tunnel a user gets by default)",
		ours: func(s *Set) (string, bool, bool) {
			v, ok := median(s, fmt.Sprintf(idleRow, "ours"+resumeSuffix), "client-heap-B/tunnel")
			return bytesText(v), v <= 4096, ok
		},
	},
}

// renderResume writes the resume rows against their resume-off twins.
func renderResume(w io.Writer, s *Set) {
	if !hasResume(s) {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Resume on against off (issue #16)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Each path with the resume extension granted (byte numbering, cumulative acks, a 4 MiB send buffer per direction) beside the same path without it, which ran just before it in each round; the rows without a suffix elsewhere in this report are resume off. Ratios are on / off, the median of the ratios within each round.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | writes | MB/s on, median [min–max] | MB/s off | MB/s on / off | cpu-s/GiB on | cpu-s/GiB off | CPU on / off | allocs/msg on | allocs/msg off |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, size := range bulkSizes {
		for _, p := range resumePairs {
			on, off := "BenchmarkBulk/"+p+resumeSuffix+"/"+size, "BenchmarkBulk/"+p+"/"+size
			if _, ok := s.Runs[on]; !ok {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p, size,
				spread(s.Stat(on, "MB/s"), "%.0f"),
				spread(s.Stat(off, "MB/s"), "%.0f"),
				ratioCell3(s, on, off, "MB/s"),
				spread(s.Stat(on, "cpu-s/GiB"), "%.2f"),
				spread(s.Stat(off, "cpu-s/GiB"), "%.2f"),
				ratioCell3(s, on, off, "cpu-s/GiB"),
				medianCell(s.Stat(on, "allocs/msg"), "%.3g"),
				medianCell(s.Stat(off, "allocs/msg"), "%.3g"))
		}
	}
	on, off := fmt.Sprintf(idleRow, "ours"+resumeSuffix), fmt.Sprintf(idleRow, "ours")
	if _, ok := s.Runs[on]; !ok {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Memory per idle tunnel, ProxySocket ws:// (BenchmarkIdleTunnel `ours-resume` against `ours`): growth per tunnel, and what resume adds (on − off, medians).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| side | heap on | heap off | heap added | RSS on | RSS off | heap on, after 1 MiB each way | heap off, after 1 MiB each way | goroutines on; off |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, side := range []string{"client", "server"} {
		heap := side + "-heap-B/tunnel"
		added := "—"
		if a, b := s.Stat(on, heap), s.Stat(off, heap); a.OK() && b.OK() {
			added = bytesText(a.Median - b.Median)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s; %s |\n", side,
			bytesCell(s.Stat(on, heap)),
			bytesCell(s.Stat(off, heap)),
			added,
			bytesCell(s.Stat(on, side+"-rss-B/tunnel")),
			bytesCell(s.Stat(off, side+"-rss-B/tunnel")),
			bytesCell(s.Stat(on, side+"-heap-B/used-tunnel")),
			bytesCell(s.Stat(off, side+"-heap-B/used-tunnel")),
			medianCell(s.Stat(on, side+"-goroutines/tunnel"), "%.1f"),
			medianCell(s.Stat(off, side+"-goroutines/tunnel"), "%.1f"))
	}
}

// ratioCell3 is ratioCell with three decimals: the resume rows are judged
// against a 5 % margin.
func ratioCell3(s *Set, a, b, unit string) string {
	r, ok := ratio(s, a, b, unit)
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.3f", r)
}
