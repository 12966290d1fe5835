package benchmarks

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
)

// tunnelsEnv sets the default of -tunnels.
const tunnelsEnv = "SPRITEPROXY_BENCH_TUNNELS"

// carrySize is what each tunnel carries, each way, before the second
// weighing of BenchmarkIdleTunnel.
const carrySize = 1 << 20

var tunnels = flag.Int("tunnels", defaultTunnels(), "idle tunnels BenchmarkIdleTunnel opens (default from $"+tunnelsEnv+", else 2000)")

func defaultTunnels() int {
	if n, err := strconv.Atoi(os.Getenv(tunnelsEnv)); err == nil && n > 0 {
		return n
	}
	return 2000
}

// BenchmarkIdleTunnel weighs idle tunnels: a client process opens -tunnels
// tunnels (the reference's, ProxySocket over ws://, ProxySocket over
// wss:// with TLS 1.3, and ProxySocket over ws:// with the resume
// extension granted: "ours" and "ours-wss" have it off) through a server process to an echo target in this
// process, and each process reports, per tunnel, the
// growth of its live heap (HeapAlloc after GC) and of its resident set
// (VmRSS, after returning freed memory to the OS): *-heap-B/tunnel and
// *-rss-B/tunnel. Then every tunnel carries 1 MiB each way (echoed), and
// the idle tunnels are weighed again: *-B/used-tunnel. *-goroutines/tunnel
// counts goroutines. The cli-ws and cli-wss kinds weigh the spriteproxy
// binary's serve and forward instead, resident set only, with no GC forced
// (idle_cli_test.go). The figures come from one measurement per run of the
// benchmark function, whatever b.N: ns/op means nothing here.
func BenchmarkIdleTunnel(b *testing.B) {
	for _, kind := range idleKinds {
		b.Run(kind, func(b *testing.B) { idleTunnels(b, kind) })
	}
}

// idleKinds are the rows of BenchmarkIdleTunnel: the helper processes'
// kinds (rig.ChildEnv).
var idleKinds = []string{"reference", "ours", "ours-resume", "ours-wss", "cli-ws", "cli-wss"}

// idleMemo keeps each benchmark's one measurement across the calls the
// testing package makes to settle b.N.
var idleMemo sync.Map // *testing.B → map[string]float64

func idleTunnels(b *testing.B, kind string) {
	m, ok := idleMemo.Load(b)
	if !ok {
		m = measureIdle(b, kind, *tunnels)
		idleMemo.Store(b, m)
	}
	for unit, v := range m.(map[string]float64) {
		b.ReportMetric(v, unit)
	}
}

// measureIdle weighs n idle tunnels of kind (one of idleKinds) in helper processes, as BenchmarkIdleTunnel reports them.
func measureIdle(tb testing.TB, kind string, n int) map[string]float64 {
	if strings.HasPrefix(kind, "cli-") {
		return measureCLI(tb, kind, n)
	}
	target, err := rig.ListenLoopback(rig.Echo)
	if err != nil {
		tb.Fatal(err)
	}
	defer target.Close()
	srv := startChild(tb, "server-"+kind)
	defer srv.quit(tb)
	// "url URL" or, over TLS, "url URL ROOT": open takes ROOT after ADDR.
	url, root, _ := strings.Cut(strings.TrimPrefix(srv.read(tb), "url "), " ")
	cli := startChild(tb, "client-"+kind)
	defer cli.quit(tb)

	s0, c0 := srv.mem(tb), cli.mem(tb)
	cli.ask(tb, strings.TrimSpace(fmt.Sprintf("open %d %s %s %s", n, url, target.Addr(), root)))
	deadline := time.Now().Add(time.Minute)
	for srv.live(tb) < n || target.Live() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d tunnels at the server and %d at the target, want %d", srv.live(tb), target.Live(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s1, c1 := srv.mem(tb), cli.mem(tb)
	cli.ask(tb, fmt.Sprintf("carry %d", carrySize))
	s2, c2 := srv.mem(tb), cli.mem(tb)

	m := map[string]float64{}
	per := func(side string, before, after rig.Mem, suffix string) {
		m[side+"-heap-B/"+suffix] = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
		m[side+"-rss-B/"+suffix] = (float64(after.RSS) - float64(before.RSS)) / float64(n)
		m[side+"-goroutines/"+suffix] = float64(after.Goroutines-before.Goroutines) / float64(n)
	}
	per("client", c0, c1, "tunnel")
	per("server", s0, s1, "tunnel")
	per("client", c0, c2, "used-tunnel")
	per("server", s0, s2, "used-tunnel")
	return m
}

// child is a helper process: this test binary run with rig.ChildEnv.
type child struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr bytes.Buffer
	done   bool
}

func startChild(tb testing.TB, role string) *child {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	c := &child{cmd: exec.Command(exe)}
	c.cmd.Env = append(os.Environ(), rig.ChildEnv+"="+role)
	c.cmd.Stderr = &c.stderr
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	c.out = bufio.NewScanner(out)
	if err := c.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	return c
}

// read returns the next line the child says.
func (c *child) read(tb testing.TB) string {
	tb.Helper()
	if !c.out.Scan() {
		c.kill()
		tb.Fatalf("%s: no answer (%v); stderr:\n%s", c.role(), c.out.Err(), c.stderr.String())
	}
	line := c.out.Text()
	if strings.HasPrefix(line, "err ") {
		c.kill()
		tb.Fatalf("%s: %s", c.role(), line)
	}
	return line
}

// ask sends a command and returns the answer.
func (c *child) ask(tb testing.TB, cmd string) string {
	tb.Helper()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		c.kill()
		tb.Fatalf("%s: %v", c.role(), err)
	}
	return c.read(tb)
}

func (c *child) mem(tb testing.TB) rig.Mem {
	tb.Helper()
	var m rig.Mem
	line := c.ask(tb, "mem")
	if _, err := fmt.Sscanf(line, "mem %d %d %d %d", &m.HeapAlloc, &m.StackInuse, &m.RSS, &m.Goroutines); err != nil {
		c.kill()
		tb.Fatalf("%s: %q: %v", c.role(), line, err)
	}
	return m
}

func (c *child) live(tb testing.TB) int {
	tb.Helper()
	var n int
	fmt.Sscanf(c.ask(tb, "live"), "live %d", &n)
	return n
}

// quit asks the child to close everything and waits for it to exit.
func (c *child) quit(tb testing.TB) {
	if c.done {
		return
	}
	c.done = true
	io.WriteString(c.in, "quit\n")
	c.in.Close()
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			tb.Errorf("%s: %v; stderr:\n%s", c.role(), err, c.stderr.String())
		}
	case <-time.After(time.Minute):
		c.cmd.Process.Kill()
		<-exited
		tb.Errorf("%s did not exit", c.role())
	}
}

func (c *child) kill() {
	if !c.done {
		c.done = true
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

func (c *child) role() string {
	for _, e := range c.cmd.Env {
		if v, ok := strings.CutPrefix(e, rig.ChildEnv+"="); ok {
			return v
		}
	}
	return "child"
}
