package main

import "fmt"

// Benchmark names the report reads.
const (
	bulk32   = "BenchmarkBulk/%s/32KiB"
	setupRow = "BenchmarkSetup/%s"
	idleRow  = "BenchmarkIdleTunnel/%s"
)

// maxSteadyAllocs is the most allocations per message that still counts as
// "no allocation per message": a few allocations over a timed run of tens
// of thousands of messages, from keep-alive timers or the runtime, stay far
// below it; one allocation every hundred messages does not.
const maxSteadyAllocs = 0.01

// target is one line of issue #6's table of targets.
type target struct {
	measure string
	// reference is what the reference SDK's way achieves here, as text.
	reference func(s *Set) string
	goal      string
	// ours returns spriteproxy's figure as text and whether it meets the
	// goal; ok is false when a figure is missing.
	ours func(s *Set) (text string, pass, ok bool)
}

// median is the median of unit over name's runs, and whether there was one.
func median(s *Set, name, unit string) (float64, bool) {
	st := s.Stat(name, unit)
	return st.Median, st.OK() && st.Median != 0
}

// ratio is a over b for unit: the median of the ratios within each round
// when both rows ran the same number of times (the i-th run of each is from
// round i), else the ratio of the medians.
func ratio(s *Set, a, b, unit string) (float64, bool) {
	ra, rb := s.Runs[a], s.Runs[b]
	if len(ra) > 0 && len(ra) == len(rb) {
		var rs []float64
		for i := range ra {
			x, ok1 := ra[i][unit]
			y, ok2 := rb[i][unit]
			if ok1 && ok2 && y != 0 {
				rs = append(rs, x/y)
			}
		}
		if len(rs) == len(ra) {
			return medianOf(rs), true
		}
	}
	x, ok1 := median(s, a, unit)
	y, ok2 := median(s, b, unit)
	if !ok1 || !ok2 {
		return 0, false
	}
	return x / y, true
}

func ratioText(s *Set, a, b, unit, of string) string {
	r, ok := ratio(s, a, b, unit)
	if !ok {
		return "not run"
	}
	return fmt.Sprintf("%.2f × %s", r, of)
}

var targets = []target{
	{
		measure: "ProxySocket ws, 32 KiB writes",
		reference: func(s *Set) string {
			return ratioText(s, fmt.Sprintf(bulk32, "ref-socket"), fmt.Sprintf(bulk32, "tcp"), "MB/s", "raw TCP")
		},
		goal: "≥ 0.8 × raw TCP and ≥ 1.4 × reference",
		ours: func(s *Set) (string, bool, bool) {
			return twoRatios(s, fmt.Sprintf(bulk32, "socket-ws"), fmt.Sprintf(bulk32, "ref-socket"), "MB/s", 0.8, 1.4)
		},
	},
	{
		measure: "ProxyPort ws, 32 KiB writes",
		reference: func(s *Set) string {
			return ratioText(s, fmt.Sprintf(bulk32, "ref-port"), fmt.Sprintf(bulk32, "tcp"), "MB/s", "raw TCP")
		},
		goal: "≥ 0.55 × raw TCP and ≥ 1.3 × reference",
		ours: func(s *Set) (string, bool, bool) {
			return twoRatios(s, fmt.Sprintf(bulk32, "port-ws"), fmt.Sprintf(bulk32, "ref-port"), "MB/s", 0.55, 1.3)
		},
	},
	{
		measure: "CPU seconds per GiB, ProxySocket ws (32 KiB writes)",
		reference: func(s *Set) string {
			return ratioText(s, fmt.Sprintf(bulk32, "ref-socket"), fmt.Sprintf(bulk32, "tcp"), "cpu-s/GiB", "raw TCP")
		},
		goal: "≤ 1.6 × raw TCP",
		ours: func(s *Set) (string, bool, bool) {
			r, ok := ratio(s, fmt.Sprintf(bulk32, "socket-ws"), fmt.Sprintf(bulk32, "tcp"), "cpu-s/GiB")
			return fmt.Sprintf("%.2f × raw TCP", r), r <= 1.6, ok
		},
	},
	{
		measure: "connection setup (ProxySocket ws)",
		reference: func(s *Set) string {
			t := ratioText(s, fmt.Sprintf(setupRow, "ref-socket"), fmt.Sprintf(setupRow, "tcp"), "conns/s", "raw TCP")
			if v, ok := median(s, fmt.Sprintf(setupRow, "ref-socket"), "conns/s"); ok {
				t += fmt.Sprintf(" (%.0f/s)", v)
			}
			return t
		},
		goal: "≥ 0.35 × raw TCP and ≥ 4 × reference",
		ours: func(s *Set) (string, bool, bool) {
			text, pass, ok := twoRatios(s, fmt.Sprintf(setupRow, "socket-ws"), fmt.Sprintf(setupRow, "ref-socket"), "conns/s", 0.35, 4)
			if v, ok := median(s, fmt.Sprintf(setupRow, "socket-ws"), "conns/s"); ok {
				text += fmt.Sprintf(" (%.0f/s)", v)
			}
			return text, pass, ok
		},
	},
	{
		measure: "heap per idle tunnel, client",
		reference: func(s *Set) string {
			v, ok := median(s, fmt.Sprintf(idleRow, "reference"), "client-heap-B/tunnel")
			if !ok {
				return "not run"
			}
			return bytesText(v)
		},
		goal: "≤ 4 KiB",
		ours: func(s *Set) (string, bool, bool) {
			v, ok := median(s, fmt.Sprintf(idleRow, "ours"), "client-heap-B/tunnel")
			return bytesText(v), v <= 4096, ok
		},
	},
	idleCLITarget,
	{
		measure: "allocations per 32 KiB message, steady state (ProxySocket ws; ProxyPort ws)",
		reference: func(s *Set) string {
			v, ok := median(s, fmt.Sprintf(bulk32, "ref-socket"), "allocs/msg")
			if !ok {
				return "not run"
			}
			return fmt.Sprintf("%.3g", v)
		},
		goal: fmt.Sprintf("0 (below %g: none per message)", maxSteadyAllocs),
		ours: func(s *Set) (string, bool, bool) {
			a, ok1 := allocs(s, "socket-ws")
			b, ok2 := allocs(s, "port-ws")
			return fmt.Sprintf("%.3g; %.3g", a, b), a < maxSteadyAllocs && b < maxSteadyAllocs, ok1 && ok2
		},
	},
	{
		measure:   "in-process netstack chain (ProxySocket ws, 32 KiB writes)",
		reference: func(*Set) string { return "—" },
		goal:      "≥ 0.5 × raw loopback TCP, no OS socket",
		ours: func(s *Set) (string, bool, bool) {
			r, ok := ratio(s, fmt.Sprintf(bulk32, "netstack"), fmt.Sprintf(bulk32, "tcp"), "MB/s")
			return fmt.Sprintf("%.2f × raw TCP", r), r >= 0.5, ok
		},
	},
	{
		measure:   "wss vs ws, 32 KiB writes (ProxySocket; ProxyPort)",
		reference: func(*Set) string { return "—" },
		goal:      "≥ 0.6 × the ws figure",
		ours: func(s *Set) (string, bool, bool) {
			a, ok1 := ratio(s, fmt.Sprintf(bulk32, "socket-wss"), fmt.Sprintf(bulk32, "socket-ws"), "MB/s")
			b, ok2 := ratio(s, fmt.Sprintf(bulk32, "port-wss"), fmt.Sprintf(bulk32, "port-ws"), "MB/s")
			return fmt.Sprintf("%.2f; %.2f", a, b), a >= 0.6 && b >= 0.6, ok1 && ok2
		},
	},
}

// allocs is the median of allocs/msg of a path's 32 KiB bulk row. A median
// of zero is a real figure here.
func allocs(s *Set, path string) (float64, bool) {
	st := s.Stat(fmt.Sprintf(bulk32, path), "allocs/msg")
	return st.Median, st.OK()
}

// twoRatios checks name against raw TCP (same row with "tcp") and against
// ref, each with its own floor.
func twoRatios(s *Set, name, ref, unit string, minTCP, minRef float64) (string, bool, bool) {
	tcp := tcpTwin(name)
	a, ok1 := ratio(s, name, tcp, unit)
	b, ok2 := ratio(s, name, ref, unit)
	return fmt.Sprintf("%.2f × raw TCP, %.2f × reference", a, b), a >= minTCP && b >= minRef, ok1 && ok2
}

// idleCLITarget is issue #17's "an idle wss tunnel ≤ 40 KiB, client and
// server together, through the CLI": BenchmarkIdleTunnel's cli-wss kind,
// the resident set that serve and forward grow by per idle tunnel, as a
// user's top shows it (cli-ws beside it). The reference column is the
// reference's two processes, weighed the same way (RSS after a GC).
var idleCLITarget = target{
	measure: "idle wss tunnel through the CLI (serve + forward, RSS, client and server together)",
	reference: func(s *Set) string {
		c, ok1 := median(s, fmt.Sprintf(idleRow, "reference"), "client-rss-B/tunnel")
		v, ok2 := median(s, fmt.Sprintf(idleRow, "reference"), "server-rss-B/tunnel")
		if !ok1 || !ok2 {
			return "not run"
		}
		return bytesText(c+v) + " (ws, its test processes)"
	},
	goal: "≤ 40 KiB",
	ours: func(s *Set) (string, bool, bool) {
		v, ok := median(s, fmt.Sprintf(idleRow, "cli-wss"), "total-rss-B/tunnel")
		text := bytesText(v)
		if ws, found := median(s, fmt.Sprintf(idleRow, "cli-ws"), "total-rss-B/tunnel"); found {
			text += " (ws: " + bytesText(ws) + ")"
		}
		return text, v <= 40<<10, ok
	},
}
