package main

import (
	"fmt"
	"io"
	"strings"
)

// Rows of each table, in order, with what they stand for. Every row of
// spriteproxy's own has the resume extension off but those named -resume.
var (
	bulkRows = []struct{ path, what string }{
		{"tcp", "raw loopback TCP (the limit)"},
		{"relay", "one-hop TCP relay, io.Copy both ways"},
		{"relay-copy", "one-hop TCP relay copying through a buffer (no splice)"},
		{"relay2", "two TCP relays in a row, io.Copy both ways"},
		{"relay-copy2", "two copying TCP relays in a row (no splice)"},
		{"ref-socket", "reference SDK way, ProxySocket"},
		{"ref-port", "reference SDK way, ProxyPort"},
		{"socket-ws", "ProxySocket, ws://"},
		{"socket-ws-resume", "ProxySocket, ws://, resume on"},
		{"socket-wss", "ProxySocket, wss:// (TLS 1.3)"},
		{"socket-wss-resume", "ProxySocket, wss:// (TLS 1.3), resume on"},
		{"port-ws", "ProxyPort, ws://"},
		{"port-ws-resume", "ProxyPort, ws://, resume on"},
		{"port-wss", "ProxyPort, wss:// (TLS 1.3)"},
		{"port-wss-resume", "ProxyPort, wss:// (TLS 1.3), resume on"},
		{"netstack", "ProxySocket, all hops on netstack"},
		{"socket-raw", "ProxySocket, ws:// with raw_stream (unframed after the handshake)"},
		{"port-raw", "ProxyPort, ws:// with raw_stream"},
	}
	bulkSizes     = []string{"1KiB", "32KiB", "1MiB"}
	parallelRows  = []string{"tcp", "ref-socket", "socket-ws"}
	parallelSizes = []string{"8streams", "64streams"}
	setupRows     = []string{"tcp", "ref-socket", "socket-ws", "socket-ws-http", "socket-wss", "socket-ws-fresh", "socket-wss-fresh"}
	idleKinds     = []string{"reference", "ours", "ours-resume", "ours-wss", "cli-ws", "cli-wss"}
)

// tcpTwin is the raw TCP row of the same benchmark and size.
func tcpTwin(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) < 2 {
		return ""
	}
	parts[1] = "tcp"
	return strings.Join(parts, "/")
}

// refTwin is the reference row that name is measured against, or "".
func refTwin(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) < 2 {
		return ""
	}
	switch p := parts[1]; {
	case p == "tcp" || strings.HasPrefix(p, "relay") || strings.HasPrefix(p, "ref-"):
		return ""
	case strings.HasPrefix(p, "port-"):
		parts[1] = "ref-port"
	default:
		parts[1] = "ref-socket"
	}
	return strings.Join(parts, "/")
}

// Render writes the markdown report: targets first, then every table.
func Render(w io.Writer, s *Set) {
	wanOnly := onlyWAN(s)
	all, title := targets, "### Targets of issue #6"
	switch {
	case wanOnly:
		all, title = wanTargets, "### Targets of issue #17 (WAN)"
	case hasWAN(s):
		all, title = append(all[:len(all):len(all)], wanTargets...), "### Targets of issues #6 and #17 (WAN)"
	}
	if !wanOnly && hasResume(s) {
		all = append(all[:len(all):len(all)], resumeTargets...)
		title += ", and of issue #16 (resume)"
	}
	fmt.Fprintln(w, title)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| measure | reference SDK way (measured here) | target for spriteproxy | spriteproxy | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, t := range all {
		text, pass, ok := t.ours(s)
		verdict := "**FAIL**"
		if !ok {
			text, verdict = "not run", "—"
		} else if pass {
			verdict = "pass"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", t.measure, t.reference(s), t.goal, text, verdict)
	}

	if wanOnly {
		renderWAN(w, s)
		return
	}
	renderFloors(w, s)
	renderResume(w, s)

	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Bulk throughput, one stream (BenchmarkBulk)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | writes | MB/s, median [min–max] | × raw TCP | × reference | cpu-s/GiB | CPU × raw TCP | allocs/msg |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, size := range bulkSizes {
		for _, r := range bulkRows {
			name := "BenchmarkBulk/" + r.path + "/" + size
			if _, ok := s.Runs[name]; !ok {
				continue
			}
			fmt.Fprintf(w, "| %s: %s | %s | %s | %s | %s | %s | %s | %s |\n", r.path, r.what, size,
				spread(s.Stat(name, "MB/s"), "%.0f"),
				ratioCell(s, name, tcpTwin(name), "MB/s"),
				ratioCell(s, name, refTwin(name), "MB/s"),
				spread(s.Stat(name, "cpu-s/GiB"), "%.2f"),
				ratioCell(s, name, tcpTwin(name), "cpu-s/GiB"),
				medianCell(s.Stat(name, "allocs/msg"), "%.3g"))
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Parallel throughput, 32 KiB writes (BenchmarkParallel)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | streams | aggregate MB/s, median [min–max] | × raw TCP | × reference | cpu-s/GiB | CPU × raw TCP |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, k := range parallelSizes {
		for _, p := range parallelRows {
			name := "BenchmarkParallel/" + p + "/" + k
			if _, ok := s.Runs[name]; !ok {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", p, strings.TrimSuffix(k, "streams"),
				spread(s.Stat(name, "MB/s"), "%.0f"),
				ratioCell(s, name, tcpTwin(name), "MB/s"),
				ratioCell(s, name, refTwin(name), "MB/s"),
				spread(s.Stat(name, "cpu-s/GiB"), "%.2f"),
				ratioCell(s, name, tcpTwin(name), "cpu-s/GiB"))
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Connection setup: dial + 1-byte echo + close (BenchmarkSetup)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | conns/s, median [min–max] | × raw TCP | × reference | CPU µs/conn | CPU × raw TCP | allocs/conn |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, p := range setupRows {
		name := "BenchmarkSetup/" + p
		if _, ok := s.Runs[name]; !ok {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", p,
			spread(s.Stat(name, "conns/s"), "%.0f"),
			ratioCell(s, name, tcpTwin(name), "conns/s"),
			ratioCell(s, name, refTwin(name), "conns/s"),
			spread(s.Stat(name, "cpu-us/conn"), "%.0f"),
			ratioCell(s, name, tcpTwin(name), "cpu-us/conn"),
			medianCell(s.Stat(name, "allocs/op"), "%.0f"))
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Memory per tunnel (BenchmarkIdleTunnel)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| side | tunnel | heap, idle | RSS, idle | heap, idle after 1 MiB each way | RSS, idle after 1 MiB each way | goroutines |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, side := range []string{"client", "server"} {
		for _, k := range idleKinds {
			name := "BenchmarkIdleTunnel/" + k
			if _, ok := s.Runs[name]; !ok {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", side, k,
				bytesCell(s.Stat(name, side+"-heap-B/tunnel")),
				bytesCell(s.Stat(name, side+"-rss-B/tunnel")),
				bytesCell(s.Stat(name, side+"-heap-B/used-tunnel")),
				bytesCell(s.Stat(name, side+"-rss-B/used-tunnel")),
				medianCell(s.Stat(name, side+"-goroutines/tunnel"), "%.1f"))
		}
	}

	renderWAN(w, s)
}

// spread is "median [min–max]", or the median alone for one run.
func spread(st Stat, format string) string {
	if !st.OK() {
		return "—"
	}
	m := fmt.Sprintf(format, st.Median)
	if st.Count == 1 {
		return m
	}
	return fmt.Sprintf("%s ["+format+"–"+format+"]", m, st.Min, st.Max)
}

func medianCell(st Stat, format string) string {
	if !st.OK() {
		return "—"
	}
	return fmt.Sprintf(format, st.Median)
}

func ratioCell(s *Set, a, b, unit string) string {
	if b == "" || a == b {
		return "—"
	}
	r, ok := ratio(s, a, b, unit)
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.2f", r)
}

func bytesCell(st Stat) string {
	if !st.OK() {
		return "—"
	}
	if st.Count == 1 || bytesText(st.Min) == bytesText(st.Max) {
		return bytesText(st.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", bytesText(st.Median), bytesText(st.Min), bytesText(st.Max))
}

// bytesText prints a byte count in B, KiB or MiB.
func bytesText(v float64) string {
	switch a := max(v, -v); {
	case a >= 1<<20:
		return fmt.Sprintf("%.2f MiB", v/(1<<20))
	case a >= 10<<10:
		return fmt.Sprintf("%.0f KiB", v/(1<<10))
	case a >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// floorRows are the tunnels set against the relays that move bytes the
// same way, over as many hops, with nothing else to do.
var floorRows = []struct{ path, relay, how string }{
	{"socket-ws", "relay-copy", "reads every byte into a buffer and writes it out (framing, unmasking)"},
	{"socket-raw", "relay", "splices, as the relay does"},
	{"port-ws", "relay-copy2", "two hops (client, server) that read every byte and write it out"},
	{"port-raw", "relay2", "two hops that splice"},
}

// renderFloors sets each tunnel's 32 KiB figures against the relays that
// copy the way it must, measured in the same rounds.
func renderFloors(w io.Writer, s *Set) {
	var lines []string
	for _, f := range floorRows {
		name, relay := fmt.Sprintf(bulk32, f.path), fmt.Sprintf(bulk32, f.relay)
		if _, ok := s.Runs[name]; !ok {
			continue
		}
		if _, ok := s.Runs[relay]; !ok {
			continue
		}
		lines = append(lines, fmt.Sprintf("| %s | %s | %s | %s | %s | %s |", f.path, f.how, f.relay,
			ratioCell(s, relay, tcpTwin(relay), "MB/s"),
			ratioCell(s, name, relay, "MB/s"),
			ratioCell(s, name, relay, "cpu-s/GiB")))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Tunnels against their copy floors, 32 KiB writes")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "A tunnel's server is a relay, and so is a ProxyPort's client. A framed one (ws) must read every byte into a buffer, since it masks or unmasks it, so each hop adds two kernel copies per byte to raw TCP's two; `relay-copy` is a relay that does just that and nothing else, and `relay-copy2` is two of them in a row, as a ProxyPort's bytes cross two. A raw_stream tunnel splices, as `relay` and `relay2` do.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | its server | floor | floor × raw TCP | MB/s × floor | CPU × floor |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
