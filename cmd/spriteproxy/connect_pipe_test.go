package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// How "spriteproxy connect" ends its tunnel (pipe): a signal mid-stream, a
// target's half-close and a failing stdin, against a serve run in-process
// and a service on a loopback port of the OS's choosing. The time bounds
// below are hang guards only, never reached when connect works.

// sinkResult is what a sinkService read from its one connection: the bytes
// and how the stream ended (nil for a clean end of stream).
type sinkResult struct {
	data string
	err  error
}

// sinkService starts a service that reads its one connection to its end
// and sends the bytes and the read's final error on result. arrived is
// sent to once the first bytes came in; with halfClose, the service first
// shuts down its writing (a TCP FIN) and goes on reading, as TCP allows.
func sinkService(t *testing.T, halfClose bool) (port int, arrived <-chan struct{}, result <-chan sinkResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	arr := make(chan struct{}, 1)
	res := make(chan sinkResult, 1)
	go func() {
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard
		var got []byte
		buf := make([]byte, 4096)
		first := true
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if n > 0 && first {
				first = false
				if halfClose {
					c.(*net.TCPConn).CloseWrite()
				}
				arr <- struct{}{}
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				res <- sinkResult{string(got), err}
				return
			}
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, arr, res
}

// awaitSink waits for what a sinkService read, within a hang guard.
func awaitSink(t *testing.T, result <-chan sinkResult, stderr *output) sinkResult {
	t.Helper()
	select {
	case res := <-result:
		return res
	case <-time.After(25 * time.Second):
		t.Fatalf("the service's connection never ended; stderr: %s", stderr.String())
		return sinkResult{}
	}
}

// closingOutput is an output (connect's stdout) that is an io.Closer, as
// os.Stdout is, and says when it was closed.
type closingOutput struct {
	*output
	once   sync.Once
	closed chan struct{}
}

func newClosingOutput() *closingOutput {
	return &closingOutput{output: newOutput(), closed: make(chan struct{})}
}

func (o *closingOutput) Close() error {
	o.once.Do(func() { close(o.closed) })
	return nil
}

// TestConnectSignalMidStreamIsReset checks that "spriteproxy connect"
// stopped by a signal (its context) while stdin is still open cuts the
// tunnel, so that the service inside the sprite reads a reset, not a clean
// end of stream after a truncated upload, and that connect exits 1 with
// one line on stderr. It failed before the fix (found by review): pipe
// closed the tunnel gracefully, the service took the cut upload for the
// whole of it, and connect exited 0.
func TestConnectSignalMidStreamIsReset(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	port, arrived, result := sinkService(t, false)

	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() }) // frees connect's stdin reader
	c := &cli{getenv: env(envToken, testToken), stdin: pr}
	r := startCLI(t, c, "connect", "--api", "http://"+addr, "box", fmt.Sprintf("localhost:%d", port))

	go pw.Write([]byte("first half of a longer upload"))
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatalf("nothing arrived; stderr: %s", r.stderr.String())
	}
	code := r.stop(t) // SIGINT/SIGTERM mid-stream, stdin not ended
	res := awaitSink(t, result, r.stderr)
	if res.err == nil {
		t.Errorf("the service read %q then a clean end of stream (connect exit %d): the cut upload looks complete", res.data, code)
	}
	if code != exitFail {
		t.Errorf("exit %d after a signal mid-stream, want %d", code, exitFail)
	}
	if s := r.stderr.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "spriteproxy connect: ") {
		t.Errorf("stderr is not one line: %q", s)
	}
	if s := r.stdout.String(); s != "" {
		t.Errorf("stdout: %q", s)
	}
}

// TestConnectHalfClosedReplyKeepsStdin checks that when the service
// half-closes (shuts down its writing and goes on reading), connect
// closes its stdout and still sends stdin to its end, passes that end on,
// and exits 0 once both directions have ended: the service reads all of
// stdin then a clean end of stream. It failed before the fix (found by
// review): connect took the reply's end for the end of the whole tunnel
// and closed it while stdin was still open, dropping the rest of stdin
// with no error anywhere.
func TestConnectHalfClosedReplyKeepsStdin(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	port, arrived, result := sinkService(t, true)

	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	stdout, stderr := newClosingOutput(), newOutput()
	c := &cli{getenv: env(envToken, testToken), stdin: pr, stdout: stdout, stderr: stderr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- c.run(ctx, []string{"connect", "--api", "http://" + addr, "box", fmt.Sprintf("localhost:%d", port)})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("connect still running 30s after its stop")
		}
	})

	go pw.Write([]byte("hello"))
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatalf("nothing arrived; stderr: %s", stderr.String())
	}
	// The reply's end closes stdout; the service must not see its stream
	// end before stdin does.
	select {
	case <-stdout.closed:
	case res := <-result:
		t.Fatalf("with stdin still open, the service read %q then end of stream (err %v); stderr: %s", res.data, res.err, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("stdout not closed after the service's half-close; stderr: %s", stderr.String())
	}
	if _, err := pw.Write([]byte(" world")); err != nil {
		t.Fatalf("stdin no longer read after the reply's end: %v", err)
	}
	pw.Close()
	res := awaitSink(t, result, stderr)
	if res.data != "hello world" || res.err != nil {
		t.Errorf("service read %q, %v; want all of stdin then a clean end", res.data, res.err)
	}
	select {
	case code := <-done:
		done <- code // for the cleanup
		if code != exitOK {
			t.Errorf("exit %d, want %d; stderr: %q", code, exitOK, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("connect still running after both directions ended; stderr: %s", stderr.String())
	}
	if s := stdout.String(); s != "" {
		t.Errorf("stdout: %q", s)
	}
}

// errStdinBroken is what failingStdin fails with.
var errStdinBroken = errors.New("read /dev/stdin: input/output error")

// failingStdin yields data once, then fails as a broken stdin would.
type failingStdin struct{ sent bool }

func (s *failingStdin) Read(p []byte) (int, error) {
	if !s.sent {
		s.sent = true
		return copy(p, "ping\n"), nil
	}
	return 0, errStdinBroken
}

// TestConnectStdinErrorCutsTunnel checks that a read error on stdin (not
// its end) cuts the tunnel, so that the service reads a reset after what
// stdin gave, and that connect exits 1 naming the error, against a
// service that never answers and waits for its input's end. It failed
// before the fix (found by review): the error was neither passed on as an
// end of stream nor as a cut, and connect waited for the reply for ever.
func TestConnectStdinErrorCutsTunnel(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	port, _, result := sinkService(t, false)
	c := &cli{getenv: env(envToken, testToken), stdin: &failingStdin{}}
	r := startCLI(t, c, "connect", "--api", "http://"+addr, "box", fmt.Sprintf("localhost:%d", port))
	select {
	case code := <-r.done:
		r.done <- code // for the cleanup
		if code != exitFail {
			t.Errorf("exit %d after a stdin read error, want %d; stderr %q", code, exitFail, r.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("connect still running 15s after stdin failed (stdout %q, stderr %q)", r.stdout.String(), r.stderr.String())
	}
	if s := r.stderr.String(); strings.Count(s, "\n") != 1 || !strings.Contains(s, errStdinBroken.Error()) {
		t.Errorf("stderr does not name the stdin error in one line: %q", s)
	}
	res := awaitSink(t, result, r.stderr)
	if res.err == nil {
		t.Errorf("the service read %q then a clean end of stream: the broken stdin looks complete", res.data)
	}
}
