package main

import (
	"fmt"
	"io"
	"strings"
)

// The multiplexing rows of BenchmarkWAN (benchmarks/hol_test.go): a bulk
// stream and an echo on two connections or one, and 16 concurrent opens.
var (
	holRows = []struct{ path, what string }{
		{"tcp", "raw TCP, two connections (the baseline)"},
		{"socket-ws", "separate: two ProxySocket tunnels, ws://, a connection each"},
		{"mux-tcp", "multiplexed: two mux streams on one raw TCP connection (256 KiB windows)"},
		{"mux-ws", "multiplexed: two mux streams on one ProxySocket tunnel, ws:// (256 KiB windows)"},
		{"mux-tcp-4m", "multiplexed: two mux streams on one raw TCP connection, 4 MiB windows"},
		{"mux-ws-4m", "multiplexed: the same with 4 MiB windows (above the link's bandwidth × delay)"},
	}
	holOpenRows = []struct{ path, what string }{
		{"tcp", "raw TCP, a connection each (the baseline)"},
		{"socket-ws", "separate: ProxySocket, ws://, reuse on (the idle pool follows the concurrency)"},
		{"socket-wss", "separate: ProxySocket, wss://, reuse on"},
		{"mux-ws", "multiplexed: mux streams on one open ProxySocket tunnel, ws://"},
		{"mux-wss", "multiplexed: mux streams on one open ProxySocket tunnel, wss://"},
	}
)

const (
	holName  = "BenchmarkWAN/hol/50ms/%s/%s" // loss, path
	holOpen  = "BenchmarkWAN/open16/%s/%s"   // rtt, path
	holLabel = "lost-pkts/op"
)

// renderHOL writes the multiplexing tables, if s has their rows.
func renderHOL(w io.Writer, s *Set) {
	if has(s, "BenchmarkWAN/hol/") {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "### WAN: a bulk stream and an echo, on two connections or one (BenchmarkWAN hol)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "50 ms RTT. Per op, one stream uploads 8 MiB (1 MiB with loss) to a sink while a second stream of the same path does one 64-byte echo after another until the upload has arrived. The bulk MB/s is timed from the first Write to the sink's end of stream; the echo's latency is each echo's, median and 99th percentile over every op's echoes. × raw TCP: against `tcp` in the same run (for latency, above 1 is slower).")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| path | loss | bulk MB/s | × raw TCP | echo p50 ms | × raw TCP | echo p99 ms | × raw TCP | echoes/op | lost pkts/op |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
		for _, l := range wanBulkLosses {
			base := fmt.Sprintf(holName, l.name, "tcp")
			for _, p := range holRows {
				name := fmt.Sprintf(holName, l.name, p.path)
				if _, ok := s.Runs[name]; !ok {
					continue
				}
				fmt.Fprintf(w, "| %s: %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.path, p.what, l.what,
					spread(s.Stat(name, "MB/s"), "%.2f"), ratioCell(s, name, base, "MB/s"),
					spread(s.Stat(name, "echo-p50-ms"), "%.1f"), ratioCell(s, name, base, "echo-p50-ms"),
					spread(s.Stat(name, "echo-p99-ms"), "%.1f"), ratioCell(s, name, base, "echo-p99-ms"),
					medianCell(s.Stat(name, "echoes/op"), "%.0f"), medianCell(s.Stat(name, holLabel), "%.0f"))
			}
		}
	}
	if has(s, "BenchmarkWAN/open16/") {
		rtts := []string{"0ms", "50ms"}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "### WAN: 16 concurrent short streams (BenchmarkWAN open16)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Per batch, 16 streams open at once, each echoes one byte and closes; opens/s is 16 over the median batch (in ms beside it, and in round trips at 50 ms). After one untimed batch: the pool holds idle connections, TLS sessions resume, the mux's one connection is open. `conns` is the connections the tunnel server accepted per batch.")
		fmt.Fprintln(w)
		fmt.Fprint(w, "| path |")
		for _, r := range rtts {
			fmt.Fprintf(w, " opens/s, %s RTT | ms/batch | × raw TCP | conns |", strings.TrimSuffix(r, "ms")+" ms")
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "|---|"+strings.Repeat("---|---|---|---|", len(rtts)))
		for _, p := range holOpenRows {
			cells, any := []string{}, false
			for _, r := range rtts {
				name := fmt.Sprintf(holOpen, r, p.path)
				if _, ok := s.Runs[name]; ok {
					any = true
				}
				ms := medianCell(s.Stat(name, "ms/batch"), "%.1f")
				if st := s.Stat(name, "ms/batch"); st.OK() && r != "0ms" {
					ms += fmt.Sprintf(" (%.2f RTT)", st.Median/50)
				}
				cells = append(cells, medianCell(s.Stat(name, "opens/s"), "%.0f"), ms,
					ratioCell(s, name, fmt.Sprintf(holOpen, r, "tcp"), "opens/s"), medianCell(s.Stat(name, "conns/batch"), "%.1f"))
			}
			if any {
				fmt.Fprintf(w, "| %s: %s | %s |\n", p.path, p.what, strings.Join(cells, " | "))
			}
		}
	}
}

func has(s *Set, prefix string) bool {
	for _, name := range s.Order {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}
