package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/quick-run.txt is the raw output of `go run ./benchmarks/cmd/report
// -quick` on the project's 2-core machine: three rounds of the throughput
// and setup rows, then one of BenchmarkIdleTunnel.
func loadSample(t *testing.T) *Set {
	t.Helper()
	f, err := os.Open("testdata/quick-run.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSample(t *testing.T) {
	s := loadSample(t)
	if s.Procs != 2 {
		t.Errorf("Procs = %d, want 2", s.Procs)
	}
	if s.Header["cpu"] != "AMD EPYC" || s.Header["goos"] != "linux" {
		t.Errorf("Header = %v", s.Header)
	}
	if s.Order[0] != "BenchmarkBulk/tcp/1KiB" {
		t.Errorf("first benchmark %q", s.Order[0])
	}
	if got := len(s.Order); got != 27+6+4+4 {
		t.Errorf("%d benchmarks, want 41", got)
	}
	runs := s.Runs["BenchmarkBulk/socket-ws/32KiB"]
	if len(runs) != 3 {
		t.Fatalf("%d runs of socket-ws/32KiB, want 3", len(runs))
	}
	if runs[0]["N"] != 4170 || runs[0]["MB/s"] != 372.82 || runs[1]["allocs/msg"] != 0.4854 || runs[2]["B/op"] != 12 {
		t.Errorf("socket-ws/32KiB runs = %v", runs)
	}
	st := s.Stat("BenchmarkBulk/socket-ws/32KiB", "MB/s")
	if st != (Stat{Median: 778.26, Min: 372.82, Max: 1202.87, Count: 3}) {
		t.Errorf("Stat = %+v", st)
	}
	if got := s.Stat("BenchmarkSetup/tcp", "conns/s").Median; got != 11413 {
		t.Errorf("setup tcp median %v, want 11413", got)
	}
	if got := s.Stat("BenchmarkIdleTunnel/ours", "client-heap-B/tunnel"); got.Median != 2064 || got.Count != 1 {
		t.Errorf("idle ours client heap %+v", got)
	}
	if s.Stat("BenchmarkBulk/tcp/32KiB", "no-such-unit").OK() || s.Stat("BenchmarkNope", "MB/s").OK() {
		t.Error("a missing figure has a Stat")
	}
}

func TestParseLines(t *testing.T) {
	in := `goos: linux
BenchmarkA
    some_test.go:12: a log line
BenchmarkA-8   	 10	 100 ns/op	 5.5 MB/s
--- FAIL: BenchmarkB
BenchmarkB-8   	--- FAIL
BenchmarkC	 3	 7 ns/op
PASS
ok  	example	1.0s
`
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Order) != 2 || s.Runs["BenchmarkA"][0]["MB/s"] != 5.5 || s.Runs["BenchmarkC"][0]["ns/op"] != 7 {
		t.Errorf("parsed %v %v", s.Order, s.Runs)
	}
	if _, err := Parse(strings.NewReader("BenchmarkA-2 10 100 ns/op 5.5\n")); err == nil {
		t.Error("a value without a unit parsed")
	}
	if _, err := Parse(strings.NewReader("BenchmarkA-2 10 fast ns/op\n")); err == nil {
		t.Error("a value that is not a number parsed")
	}
}

func TestRatioPairsRounds(t *testing.T) {
	// Round 2 ran on a loaded machine: both rows halved. Paired, the ratio
	// stays 0.5; the ratio of medians would not see the pairing.
	in := `BenchmarkBulk/tcp/32KiB-2 1 1 ns/op 1000 MB/s
BenchmarkBulk/socket-ws/32KiB-2 1 1 ns/op 500 MB/s
BenchmarkBulk/tcp/32KiB-2 1 1 ns/op 400 MB/s
BenchmarkBulk/socket-ws/32KiB-2 1 1 ns/op 200 MB/s
BenchmarkBulk/tcp/32KiB-2 1 1 ns/op 900 MB/s
BenchmarkBulk/socket-ws/32KiB-2 1 1 ns/op 450 MB/s
`
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := ratio(s, "BenchmarkBulk/socket-ws/32KiB", "BenchmarkBulk/tcp/32KiB", "MB/s"); !ok || r != 0.5 {
		t.Errorf("ratio = %v, %v; want 0.5", r, ok)
	}
	if _, ok := ratio(s, "BenchmarkBulk/socket-ws/32KiB", "BenchmarkBulk/ref-socket/32KiB", "MB/s"); ok {
		t.Error("a ratio to a row that did not run")
	}
}

func TestRenderSample(t *testing.T) {
	var b bytes.Buffer
	Render(&b, loadSample(t))
	out := b.String()
	for _, want := range []string{
		"| heap per idle tunnel, client | 2.01 MiB | ≤ 4 KiB | 2.0 KiB | pass |",
		"| socket-ws: ProxySocket, ws:// | 32KiB | 778 [373–1203] |",
		"| client | reference | 2.01 MiB |",
		"| tcp | 11413 [10768–12170] | — | — |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not run") {
		t.Errorf("a target is not run:\n%s", out)
	}
	if got := strings.Count(out, "\n| ") - 4*1; got < len(targets)+27+6+4+4 {
		t.Errorf("only %d table rows", got)
	}
}

func TestRenderFloors(t *testing.T) {
	in := `BenchmarkBulk/tcp/32KiB-2 1 1 ns/op 1000 MB/s 0.5 cpu-s/GiB
BenchmarkBulk/relay-copy/32KiB-2 1 1 ns/op 700 MB/s 0.8 cpu-s/GiB
BenchmarkBulk/socket-ws/32KiB-2 1 1 ns/op 630 MB/s 1.0 cpu-s/GiB
`
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	Render(&b, s)
	out := b.String()
	// socket-raw's floor, relay, did not run: no line for it.
	want := "| socket-ws | reads every byte into a buffer and writes it out (framing, unmasking) | relay-copy | 0.70 | 0.90 | 1.25 |"
	if !strings.Contains(out, want) || strings.Contains(out, "| socket-raw | splices") {
		t.Errorf("report lacks %q, or has a line for socket-raw:\n%s", want, out)
	}
	b.Reset()
	Render(&b, loadSample(t))
	if strings.Contains(b.String(), "copy floors") {
		t.Errorf("a floors table from a run without relay-copy:\n%s", b.String())
	}
}

func TestTwins(t *testing.T) {
	for _, c := range []struct{ name, tcp, ref string }{
		{"BenchmarkBulk/port-wss/1MiB", "BenchmarkBulk/tcp/1MiB", "BenchmarkBulk/ref-port/1MiB"},
		{"BenchmarkBulk/netstack/1KiB", "BenchmarkBulk/tcp/1KiB", "BenchmarkBulk/ref-socket/1KiB"},
		{"BenchmarkBulk/relay/1KiB", "BenchmarkBulk/tcp/1KiB", ""},
		{"BenchmarkBulk/relay-copy/32KiB", "BenchmarkBulk/tcp/32KiB", ""},
		{"BenchmarkSetup/socket-ws", "BenchmarkSetup/tcp", "BenchmarkSetup/ref-socket"},
		{"BenchmarkParallel/ref-socket/8streams", "BenchmarkParallel/tcp/8streams", ""},
	} {
		if got := tcpTwin(c.name); got != c.tcp {
			t.Errorf("tcpTwin(%s) = %s", c.name, got)
		}
		if got := refTwin(c.name); got != c.ref {
			t.Errorf("refTwin(%s) = %s", c.name, got)
		}
	}
}

func TestReplaceBetweenMarkers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "README.md")
	os.WriteFile(file, []byte("# T\n\nintro\n"+beginMarker+"\nold table\n"+endMarker+"\n\nafter\n"), 0o644)
	if err := replaceBetweenMarkers(file, []byte("new table\n")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(file)
	want := "# T\n\nintro\n" + beginMarker + "\nnew table\n" + endMarker + "\n\nafter\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	os.WriteFile(file, []byte("no markers"), 0o644)
	if err := replaceBetweenMarkers(file, nil); err == nil {
		t.Error("a file without markers was accepted")
	}
}

// TestRenderWAN renders WAN rows: first-byte cells in ms and round trips,
// the bulk ratio to raw TCP, and the WAN targets alone when only WAN rows
// ran.
func TestRenderWAN(t *testing.T) {
	in := `BenchmarkWAN/first-byte/150ms/socket-ws/fresh-2 	5	 1 ns/op	 1.000 conns/op	 600.0 ms	 4.000 rtt
BenchmarkWAN/first-byte/150ms/socket-ws/reused-2 	5	 1 ns/op	 0 conns/op	 300.0 ms	 2.000 rtt
BenchmarkWAN/first-byte/150ms/port-ws/reused-2 	5	 1 ns/op	 0 conns/op	 150.0 ms	 1.000 rtt
BenchmarkWAN/first-byte/0ms/socket-ws/fresh-2 	5	 1 ns/op	 1.000 conns/op	 1.5 ms
BenchmarkWAN/bulk/50ms/loss-0pct/tcp-2 	1	 1 ns/op	 10.00 MB/s	 0 lost-pkts/op
BenchmarkWAN/bulk/50ms/loss-0pct/socket-ws-2 	1	 1 ns/op	 8.00 MB/s	 0 lost-pkts/op
`
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	Render(&b, s)
	out := b.String()
	for _, want := range []string{
		"### Targets of issue #17 (WAN)",
		"| socket-ws: ProxySocket, ws:// | fresh | 1.5 | — | — | 600.0 (4.00) | 1 |",
		"| socket-ws: ProxySocket, ws:// | reused | — | — | — | 300.0 (2.00) | 0 |",
		"| socket-ws | 8.00 | 0.80 | — | — |",
		"| first echoed byte, reused connection (ProxySocket ws; ProxyPort ws), 150 ms RTT, in round trips | not run | ≤ 1.2 RTT | 2.00; 1.00 RTT | **FAIL** |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no line %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "Targets of issue #6") || strings.Contains(out, "BenchmarkBulk") {
		t.Errorf("a WAN-only report shows the other tables:\n%s", out)
	}
}

// TestRenderHOL renders the multiplexing rows: bulk and echo latency with
// their ratios to raw TCP per loss, and the open rates with round trips.
func TestRenderHOL(t *testing.T) {
	in := `BenchmarkWAN/hol/50ms/loss-1pct/tcp-2 	2	 1 ns/op	 0.40 MB/s	 55.0 echo-p50-ms	 300.0 echo-p99-ms	 80.00 echoes/op	 40 lost-pkts/op
BenchmarkWAN/hol/50ms/loss-1pct/mux-ws-2 	2	 1 ns/op	 0.20 MB/s	 110.0 echo-p50-ms	 1200.0 echo-p99-ms	 30.00 echoes/op	 41 lost-pkts/op
BenchmarkWAN/open16/50ms/tcp-2 	2	 1 ns/op	 160.0 opens/s	 100.0 ms/batch	 0 conns/batch
BenchmarkWAN/open16/50ms/mux-ws-2 	2	 1 ns/op	 320.0 opens/s	 50.0 ms/batch	 0 conns/batch
`
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	Render(&b, s)
	out := b.String()
	for _, want := range []string{
		"### WAN: a bulk stream and an echo, on two connections or one (BenchmarkWAN hol)",
		"| mux-ws: multiplexed: two mux streams on one ProxySocket tunnel, ws:// (256 KiB windows) | 1 % loss each way | 0.20 | 0.50 | 110.0 | 2.00 | 1200.0 | 4.00 | 30 | 41 |",
		"| mux-ws: multiplexed: mux streams on one open ProxySocket tunnel, ws:// | — | — | — | — | 320 | 50.0 (1.00 RTT) | 2.00 | 0.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no line %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "socket-wss: separate") {
		t.Errorf("a row that did not run is shown:\n%s", out)
	}
}

func TestRenderResume(t *testing.T) {
	// Two rounds; the second ran on a loaded machine. ws on/off: 0.96 and
	// 0.98 (median 0.97, pass); port-ws: 0.90 both rounds (fail).
	in := `BenchmarkBulk/socket-ws/32KiB-2 1 1 ns/op 1000 MB/s 1.00 cpu-s/GiB 0 allocs/msg
BenchmarkBulk/socket-ws-resume/32KiB-2 1 1 ns/op 960 MB/s 1.10 cpu-s/GiB 0.002 allocs/msg
BenchmarkBulk/port-ws/32KiB-2 1 1 ns/op 800 MB/s 1.2 cpu-s/GiB
BenchmarkBulk/port-ws-resume/32KiB-2 1 1 ns/op 720 MB/s 1.3 cpu-s/GiB
BenchmarkBulk/socket-ws/32KiB-2 1 1 ns/op 500 MB/s 2.00 cpu-s/GiB 0 allocs/msg
BenchmarkBulk/socket-ws-resume/32KiB-2 1 1 ns/op 490 MB/s 2.10 cpu-s/GiB 0.002 allocs/msg
BenchmarkBulk/port-ws/32KiB-2 1 1 ns/op 400 MB/s 2.4 cpu-s/GiB
BenchmarkBulk/port-ws-resume/32KiB-2 1 1 ns/op 360 MB/s 2.6 cpu-s/GiB
BenchmarkIdleTunnel/ours-2 1 1 ns/op 2048 client-heap-B/tunnel 4096 server-heap-B/tunnel
BenchmarkIdleTunnel/ours-resume-2 1 1 ns/op 3072 client-heap-B/tunnel 5120 server-heap-B/tunnel
`
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	Render(&b, s)
	out := b.String()
	for _, want := range []string{
		"and of issue #16 (resume)",
		"| resume on vs off, 32 KiB writes, ws (ProxySocket; ProxyPort) | — | ≥ 0.95 × resume off | 0.970; 0.900 × off | **FAIL** |",
		"| socket-ws | 32KiB | 725 [490–960] | 750 [500–1000] | 0.970 | 1.60 [1.10–2.10] | 1.50 [1.00–2.00] | 1.075 | 0.002 | 0 |",
		"| heap per idle tunnel, client, resume on | not run | ≤ 4 KiB (issue #6's, for the tunnel a user gets by default) | 3.0 KiB | pass |",
		"| client | 3.0 KiB | 2.0 KiB | 1.0 KiB |",
		"| socket-ws-resume: ProxySocket, ws://, resume on | 32KiB |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// The wss pair did not run: its target says so rather than passing.
	if !strings.Contains(out, "| resume on vs off, 32 KiB writes, wss (ProxySocket; ProxyPort) | — | ≥ 0.95 × resume off | not run | — |") {
		t.Errorf("the wss target is not marked not run:\n%s", out)
	}
	b.Reset()
	Render(&b, loadSample(t))
	if strings.Contains(b.String(), "issue #16") {
		t.Errorf("resume tables from a run without resume rows:\n%s", b.String())
	}
}

// TestOpen16Target: the open16 target is wss's opens/s over ws's of the
// same run at 0 and 50 ms, passing only when both reach 0.8, and not run
// when a row is missing.
func TestOpen16Target(t *testing.T) {
	t.Parallel()
	rows := func(wss0 string) string {
		return `BenchmarkWAN/open16/0ms/socket-ws-2 	2	 1 ns/op	 5000 opens/s	 3.2 ms/batch	 0 conns/batch
BenchmarkWAN/open16/0ms/socket-wss-2 	2	 1 ns/op	 ` + wss0 + ` opens/s	 4.0 ms/batch	 0 conns/batch
BenchmarkWAN/open16/50ms/socket-ws-2 	2	 1 ns/op	 100 opens/s	 160 ms/batch	 0 conns/batch
BenchmarkWAN/open16/50ms/socket-wss-2 	2	 1 ns/op	 95 opens/s	 168 ms/batch	 0 conns/batch
`
	}
	for _, tc := range []struct{ in, want string }{
		{rows("4500"), "| 16 concurrent opens, wss vs ws (ProxySocket, BenchmarkWAN open16), 0 ms; 50 ms RTT | — | ≥ 0.8 × ws | 0.90; 0.95 × ws | pass |"},
		{rows("2500"), "| 16 concurrent opens, wss vs ws (ProxySocket, BenchmarkWAN open16), 0 ms; 50 ms RTT | — | ≥ 0.8 × ws | 0.50; 0.95 × ws | **FAIL** |"},
		{rows("4500")[:strings.Index(rows("4500"), "BenchmarkWAN/open16/50ms")], "| 16 concurrent opens, wss vs ws (ProxySocket, BenchmarkWAN open16), 0 ms; 50 ms RTT | — | ≥ 0.8 × ws | not run | — |"},
	} {
		s, err := Parse(strings.NewReader(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		Render(&b, s)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("report lacks %q:\n%s", tc.want, b.String())
		}
	}
}
