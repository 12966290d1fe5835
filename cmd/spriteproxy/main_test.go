package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binDir holds the binaries built once for the tests that run real
// processes (see buildBinaries).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spriteproxy-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// buildBinaries builds spriteproxy and the README's quick start into binDir,
// once for all tests (with the race detector when the tests have it), and
// returns the paths.
func buildBinaries(t *testing.T) (spriteproxy, quickstart string) {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			//lint:ignore SA1019 the test binary runs where it was built, so its GOROOT is this machine's
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		args := []string{"build", "-o", binDir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, ".", "./internal/quickstart")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goTool, args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "spriteproxy"), filepath.Join(binDir, "quickstart")
}

// output is an io.Writer that keeps what is written and lets a test wait for
// a pattern to appear, with no polling.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at each write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits up to timeout for re to match what was written, and
// returns the submatches of its first match.
func (o *output) waitFor(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	m, ok := o.waitUntil(re, nil, timeout)
	if !ok {
		t.Fatalf("no %q after %v in:\n%s", re, timeout, o.String())
	}
	return m
}

// waitUntil waits up to timeout for re to match what was written, and
// returns the submatches of its first match; it gives up early when stop
// is closed. ok is false if there was no match.
func (o *output) waitUntil(re *regexp.Regexp, stop <-chan struct{}, timeout time.Duration) (m []string, ok bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		o.mu.Lock()
		m := re.FindStringSubmatch(o.buf.String())
		changed := o.changed
		o.mu.Unlock()
		if m != nil {
			return m, true
		}
		select {
		case <-changed:
		case <-stop:
			return nil, false
		case <-deadline.C:
			return nil, false
		}
	}
}

// run is an in-process invocation of the command, running in its own
// goroutine until stop (or the test's end) cancels its context.
type run struct {
	stdout, stderr *output
	cancel         context.CancelFunc
	done           chan int
}

// env makes a getenv from pairs of names and values.
func env(pairs ...string) func(string) string {
	m := make(map[string]string)
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) string { return m[k] }
}

// start runs args in-process with getenv; the run is stopped at the end of
// the test if the test has not stopped it.
func start(t *testing.T, getenv func(string) string, args ...string) *run {
	return startCLI(t, &cli{getenv: getenv}, args...)
}

// startCLI is start with a cli whose stdout and stderr it sets.
func startCLI(t *testing.T, c *cli, args ...string) *run {
	t.Helper()
	r := &run{stdout: newOutput(), stderr: newOutput(), done: make(chan int, 1)}
	c.stdout, c.stderr = r.stdout, r.stderr
	if c.getenv == nil {
		c.getenv = env()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- c.run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%v still running 30s after its stop", args)
		}
	})
	return r
}

// stop cancels the run's context (as a signal would) and returns its exit
// status.
func (r *run) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// wait waits for the run to end by itself and returns its exit status.
func (r *run) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-r.done:
		r.done <- code // for the cleanup
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("still running after 30s; stderr:\n%s", r.stderr.String())
		return -1
	}
}

// runCLI runs args in-process to the end and returns the exit status and
// outputs.
func runCLI(t *testing.T, getenv func(string) string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	r := start(t, getenv, args...)
	code = r.wait(t)
	return code, r.stdout.String(), r.stderr.String()
}

// serveAddrRE finds the address in serve's start line.
var serveAddrRE = regexp.MustCompile(`msg="spriteproxy serving" addr=(\S+)`)

// startServe runs serve in-process on a free loopback port and returns the
// run and its address.
func startServe(t *testing.T, getenv func(string) string, args ...string) (*run, string) {
	t.Helper()
	r := start(t, getenv, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	m := r.stderr.waitFor(t, serveAddrRE, 10*time.Second)
	return r, m[1]
}

// echoService listens on 127.0.0.1 and echoes each connection until its
// client ends its side; it stops at the end of the test.
func echoService(t *testing.T) (port int) {
	t.Helper()
	return echoServiceOn(t, "127.0.0.1:0")
}

// echoServiceOn is echoService listening on addr.
func echoServiceOn(t *testing.T, addr string) (port int) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// freePort returns a loopback port that nothing listens on now: one the
// OS picked, then released, for a process to listen on (a parallel test
// may take it meanwhile: retry). A port that must refuse is testnet.HoldPort's.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// roundTrip sends a few KiB through the echo service at addr, ends its
// side, and checks that the same bytes come back, then EOF.
func roundTrip(t *testing.T, addr string, size int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	want := bytes.Repeat([]byte("spriteproxy "), size/12+1)[:size]
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write to %s: %v", addr, werr)
	}
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s echoed %d bytes, want the %d sent", addr, len(got), len(want))
	}
}

// oneLine checks that s is exactly one line that contains each of subs.
func oneLine(t *testing.T, s string, subs ...string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("want one line, got %q", s)
	}
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}
