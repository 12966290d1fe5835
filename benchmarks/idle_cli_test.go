package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
	"github.com/spriteproxy/spriteproxy/internal/testcert"
)

// The cli-ws and cli-wss kinds of BenchmarkIdleTunnel weigh idle tunnels as
// a user gets them: the spriteproxy binary, built from this tree, runs
// `serve` (with a throw-away certificate for cli-wss) and `forward` with
// their defaults (resume on), and the benchmark opens -tunnels connections
// to forward's local port, each echoing one byte through to a target in
// this process, and leaves them open. Nothing in those processes is
// forced: no GC is asked for and no memory handed back, so that the
// resident set (VmRSS of each process, from /proc) holds what Go's
// collector keeps at its default GOGC, as a user's `top` shows it. Only
// the *-rss-B/* figures exist for these kinds; heap and goroutines are not
// visible from outside.

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// cliBinary builds cmd/spriteproxy once per test process (without the race
// detector, as users run it) and returns its path.
func cliBinary(tb testing.TB) string {
	tb.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spriteproxy-bench-")
		if err != nil {
			cliErr = err
			return
		}
		cliBin = filepath.Join(dir, "spriteproxy")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", cliBin, "github.com/spriteproxy/spriteproxy/cmd/spriteproxy").CombinedOutput()
		if err != nil {
			cliErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		tb.Fatal(cliErr)
	}
	return cliBin
}

// cliProc is a spriteproxy process of the benchmark's, its output kept.
type cliProc struct {
	cmd    *exec.Cmd
	stderr *lineWaiter
}

// lineWaiter keeps what a process writes, for the failure messages.
type lineWaiter struct {
	mu  sync.Mutex
	all bytes.Buffer
}

func (l *lineWaiter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	return len(p), nil
}

func (l *lineWaiter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// startCLI starts the binary with args; its stdout's lines go to lines.
func startCLI(tb testing.TB, args ...string) (*cliProc, <-chan string) {
	tb.Helper()
	p := &cliProc{cmd: exec.Command(cliBinary(tb), args...), stderr: &lineWaiter{}}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	errOut, err := p.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	lines := make(chan string, 64)
	var wg sync.WaitGroup
	scan := func(r io.Reader, keep io.Writer) {
		defer wg.Done()
		s := bufio.NewScanner(r)
		for s.Scan() {
			fmt.Fprintln(keep, s.Text())
			select {
			case lines <- s.Text():
			default: // nobody waits for later lines
			}
		}
	}
	wg.Add(2)
	go scan(out, io.Discard)
	go scan(errOut, p.stderr)
	go func() { wg.Wait(); close(lines) }()
	tb.Cleanup(p.stop)
	return p, lines
}

// stop ends the process (SIGKILL: nothing of its is measured after this).
func (p *cliProc) stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// await returns the first line that matches re, or fails after a minute.
func (p *cliProc) await(tb testing.TB, lines <-chan string, re *regexp.Regexp) []string {
	tb.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				tb.Fatalf("%s ended; stderr:\n%s", p.cmd.Path, p.stderr)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			tb.Fatalf("no line matching %s; stderr:\n%s", re, p.stderr)
		}
	}
}

// rss is the process's VmRSS in bytes.
func (p *cliProc) rss(tb testing.TB) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		tb.Skipf("no /proc here: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb * 1024
		}
	}
	tb.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

var (
	serveAddr  = regexp.MustCompile(`spriteproxy serving" addr=(\S+)`)
	forwardOut = regexp.MustCompile(`^\{.*"local_port".*\}$`)
)

// measureCLI weighs n idle tunnels of kind cli-ws or cli-wss through the
// spriteproxy binary, as BenchmarkIdleTunnel reports them.
func measureCLI(tb testing.TB, kind string, n int) map[string]float64 {
	target, err := rig.ListenLoopback(rig.Echo)
	if err != nil {
		tb.Fatal(err)
	}
	defer target.Close()

	serveArgs := []string{"serve", "--listen", "127.0.0.1:0", "--insecure-no-auth", "--max-tunnels", strconv.Itoa(n + 100), "--max-tunnels-per-token", strconv.Itoa(n + 100)}
	forwardArgs := []string{"forward", "--json", "--token", "bench"}
	scheme := "http"
	if kind == "cli-wss" {
		pair, err := testcert.New()
		if err != nil {
			tb.Fatal(err)
		}
		dir := tb.TempDir()
		cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := os.WriteFile(cert, pair.CertPEM, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(key, pair.KeyPEM, 0o600); err != nil {
			tb.Fatal(err)
		}
		serveArgs = append(serveArgs, "--tls-cert", cert, "--tls-key", key)
		forwardArgs = append(forwardArgs, "--tls-ca", cert)
		scheme = "https"
	}
	srv, srvLines := startCLI(tb, serveArgs...)
	addr := srv.await(tb, srvLines, serveAddr)[1]
	forwardArgs = append(forwardArgs, "--api", scheme+"://"+addr, "bench-sprite", fmt.Sprintf("0:%d", target.Port()))
	fwd, fwdLines := startCLI(tb, forwardArgs...)
	var mapping struct {
		LocalPort int `json:"local_port"`
	}
	if err := json.Unmarshal([]byte(fwd.await(tb, fwdLines, forwardOut)[0]), &mapping); err != nil {
		tb.Fatal(err)
	}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: mapping.LocalPort}

	open := func() net.Conn {
		c, err := net.DialTCP("tcp", nil, local)
		if err != nil {
			tb.Fatal(err)
		}
		var b [1]byte
		if _, err := c.Write([]byte{'x'}); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			tb.Fatalf("echo through forward: %v; serve:\n%s\nforward:\n%s", err, srv.stderr, fwd.stderr)
		}
		return c
	}
	// A few tunnels first, closed: the processes' first allocations (the
	// TLS session cache, the idle pool, the runtime's) are not the idle
	// tunnels'.
	for range 8 {
		open().Close()
	}
	s0, c0 := srv.rss(tb), fwd.rss(tb)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		conns = append(conns, open())
	}
	s1, c1 := srv.rss(tb), fwd.rss(tb)

	// Then 1 MiB each way through every tunnel, as the other kinds carry.
	buf := make([]byte, 32<<10)
	p := rig.Payload()
	for _, c := range conns {
		if err := roundTripCLI(c, p, buf, carrySize); err != nil {
			tb.Fatal(err)
		}
	}
	s2, c2 := srv.rss(tb), fwd.rss(tb)

	per := func(v float64) float64 { return v / float64(n) }
	return map[string]float64{
		"client-rss-B/tunnel":      per(c1 - c0),
		"server-rss-B/tunnel":      per(s1 - s0),
		"total-rss-B/tunnel":       per(c1 - c0 + s1 - s0),
		"client-rss-B/used-tunnel": per(c2 - c0),
		"server-rss-B/used-tunnel": per(s2 - s0),
		"total-rss-B/used-tunnel":  per(c2 - c0 + s2 - s0),
	}
}

// roundTripCLI writes size bytes (p over and over) through c while reading
// their echo back, and checks every byte.
func roundTripCLI(c net.Conn, p, buf []byte, size int) error {
	errc := make(chan error, 1)
	go func() {
		left := size
		for left > 0 {
			k := min(left, len(p))
			if _, err := c.Write(p[:k]); err != nil {
				errc <- err
				return
			}
			left -= k
		}
		errc <- nil
	}()
	got := 0
	for got < size {
		k, err := c.Read(buf[:min(len(buf), size-got)])
		for i := 0; i < k; {
			off := (got + i) % len(p)
			m := min(k-i, len(p)-off)
			if !bytes.Equal(buf[i:i+m], p[off:off+m]) {
				return fmt.Errorf("echo: bytes %d to %d differ from those sent", got+i, got+i+m)
			}
			i += m
		}
		got += k
		if err != nil {
			return fmt.Errorf("echo: %d of %d bytes: %w", got, size, err)
		}
	}
	return <-errc
}
