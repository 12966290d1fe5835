package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// Resume through the CLI (issue 16): "spriteproxy serve" and "spriteproxy
// forward" (or "connect") as real processes, with a TCP relay between them
// that the test kills, resetting every relayed connection, and restarts
// on the same port, mid-transfer.

// relay passes TCP connections from its port to target, both ways.
type relay struct {
	t      *testing.T
	target string
	addr   string

	mu       sync.Mutex
	ln       net.Listener
	accepted chan struct{} // closed once ln's accept loop has returned
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup // the accept loops and the copiers
}

// startRelay listens on a free loopback port and relays to target; it is
// killed, and its goroutines joined, at the end of the test.
func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	r.serve(ln)
	t.Cleanup(func() {
		r.kill(false)
		r.wg.Wait()
	})
	return r
}

func (r *relay) serve(ln net.Listener) {
	done := make(chan struct{})
	r.mu.Lock()
	r.ln, r.accepted = ln, done
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns[c], r.conns[up] = struct{}{}, struct{}{}
			r.mu.Unlock()
			r.wg.Add(2)
			go r.copy(up, c)
			go r.copy(c, up)
		}
	}()
}

// copy moves a to b, and passes a's clean end on as b's; a failure (the
// kill closing a) passes nothing on, so that b sees only the kill's reset.
func (r *relay) copy(b, a net.Conn) {
	defer r.wg.Done()
	if _, err := io.Copy(b, a); err == nil {
		b.(*net.TCPConn).CloseWrite()
	}
}

// kill stops listening and resets both sides of every relayed connection
// (SetLinger(0): an RST, not a FIN). With restart, it listens again on the
// same port, and does so before the resets: a TCP connection refused where
// the server was means the server is gone (PROTOCOL.md, Extension resume),
// so a client coming back must find the port open again.
func (r *relay) kill(restart bool) {
	r.mu.Lock()
	ln, accepted := r.ln, r.accepted
	r.ln = nil
	old := make([]net.Conn, 0, len(r.conns))
	for c := range r.conns {
		old = append(old, c)
	}
	clear(r.conns)
	r.mu.Unlock()
	if ln != nil {
		ln.Close()
		<-accepted
	}
	if restart {
		ln, err := net.Listen("tcp", r.addr)
		if err != nil {
			r.t.Errorf("relay: listening again on %s: %v", r.addr, err)
		} else {
			r.serve(ln)
		}
	}
	for _, c := range old {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
}

// progress is a writer that hashes what it is given and calls at(n) each
// time the count passes a multiple of every bytes.
type progress struct {
	h     hash.Hash
	n     int64
	every int64
	at    func(n int64)
}

func newProgress(every int64, at func(int64)) *progress {
	return &progress{h: sha256.New(), every: every, at: at}
}

func (p *progress) Write(b []byte) (int, error) {
	before := p.n / p.every
	p.h.Write(b)
	p.n += int64(len(b))
	if p.n/p.every != before {
		p.at(p.n)
	}
	return len(b), nil
}

func (p *progress) sum() [sha256.Size]byte {
	var s [sha256.Size]byte
	copy(s[:], p.h.Sum(nil))
	return s
}

// resumeMiB is the size of each direction of the resume tests.
const resumeMiB = 64

// wantSum is the SHA-256 of stream(seed, n).
func wantSum(t *testing.T, seed byte, n int64) [sha256.Size]byte {
	t.Helper()
	return sum(t, stream(seed, n))
}

// 64 MiB each way through forward, a relay killed and restarted three
// times mid-transfer, and serve, to an echo: the stream completes intact
// (SHA-256), ends cleanly, and forward -v says the tunnel resumed.
func TestProcessForwardResumes(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	_, api, ca := serveProcess(t, bin, "-v")
	rl := startRelay(t, strings.TrimPrefix(api, "https://"))
	port := echoService(t)

	fwd := startProcess(t, []string{envToken + "=" + testToken},
		bin, "forward", "-v", "--api", "https://"+rl.addr, "--tls-ca", ca, "box", "0:"+strconv.Itoa(port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 30*time.Second)
	c, err := net.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Minute))

	const n = resumeMiB << 20
	kills := 0
	got := newProgress(n/4, func(int64) {
		if kills < 3 {
			kills++
			rl.kill(true)
		}
	})
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, stream(1, n))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	_, rerr := io.Copy(got, c)
	if werr := <-errc; werr != nil {
		t.Errorf("write: %v", werr)
	}
	if rerr != nil {
		t.Fatalf("read after %d bytes, %d kills: %v; forward's stderr:\n%s", got.n, kills, rerr, fwd.stderr.String())
	}
	if got.n != n || got.sum() != wantSum(t, 1, n) {
		t.Fatalf("%d bytes back for %d, or different ones (%d kills); forward's stderr:\n%s", got.n, n, kills, fwd.stderr.String())
	}
	if kills != 3 {
		t.Errorf("the relay was killed %d times, want 3", kills)
	}
	fwd.stderr.waitFor(t, regexp.MustCompile(`msg="tunnel resumed".* resumed=3`), 30*time.Second)
	if code := fwd.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("forward exit %d; stderr:\n%s", code, fwd.stderr.String())
	}
}

// The same through "spriteproxy connect": stdin to the echo and back on
// stdout, 64 MiB, the relay killed three times; exit 0 and the bytes
// intact.
func TestProcessConnectResumes(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	_, api, ca := serveProcess(t, bin)
	rl := startRelay(t, strings.TrimPrefix(api, "https://"))
	port := echoService(t)

	const n = resumeMiB << 20
	kills := 0
	got := newProgress(n/4, func(int64) {
		if kills < 3 {
			kills++
			rl.kill(true)
		}
	})
	cmd := exec.Command(bin, "connect", "--tls-ca", ca, "box", "localhost:"+strconv.Itoa(port))
	cmd.Env = append(connectEnv(), envToken+"="+testToken, envAPI+"=https://"+rl.addr)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stream(1, n), got, &stderr
	cmd.WaitDelay = 10 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("connect: %v after %d bytes, %d kills; stderr: %s", err, got.n, kills, stderr.String())
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("connect still running after 3 minutes, %d bytes back", got.n)
	}
	if got.n != n || got.sum() != wantSum(t, 1, n) {
		t.Fatalf("%d bytes back for %d, or different ones (%d kills)", got.n, n, kills)
	}
	if kills != 3 {
		t.Errorf("the relay was killed %d times, want 3", kills)
	}
}

// The relay killed and not restarted, serve with --resume-grace 1s: the
// local connection is reset (never a clean end), forward -v names the
// reason, and serve's log says it ended the tunnel at the grace.
func TestProcessForwardResumeGrace(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	srv, api, ca := serveProcess(t, bin, "-v", "--resume-grace", "1s")
	rl := startRelay(t, strings.TrimPrefix(api, "https://"))
	port := echoService(t)

	fwd := startProcess(t, []string{envToken + "=" + testToken},
		bin, "forward", "-v", "--api", "https://"+rl.addr, "--tls-ca", ca, "box", "0:"+strconv.Itoa(port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 30*time.Second)
	c, err := net.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	rl.kill(false)
	_, err = io.Copy(io.Discard, c)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("local connection: %v, want a reset; forward's stderr:\n%s", err, fwd.stderr.String())
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("local connection: %v, want ECONNRESET", err)
	}
	fwd.stderr.waitFor(t, regexp.MustCompile(`msg="stream closed".* err=".*resume failed`), 30*time.Second)
	srv.stderr.waitFor(t, regexp.MustCompile(`msg="tunnel closed".*grace expired`), 30*time.Second)
	if code := fwd.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("forward exit %d; stderr:\n%s", code, fwd.stderr.String())
	}
}

// --resume-grace 0 and --no-resume turn resume off: the tunnel a client
// dials is a plain *websocket.Conn; by default it is resumable. A negative
// grace is a usage error.
func TestServeResumeFlags(t *testing.T) {
	t.Parallel()
	port := echoService(t)
	for _, tt := range []struct {
		args      []string
		resumable bool
	}{
		{nil, true},
		{[]string{"--resume-grace", "5s"}, true},
		{[]string{"--resume-grace", "0"}, false},
		{[]string{"--no-resume"}, false},
	} {
		_, addr := startServe(t, env(envToken, testToken), tt.args...)
		d := &websocket.Dialer{BaseURL: "http://" + addr, Token: testToken}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := d.DialSprite(ctx, "box", "tcp", "localhost:"+strconv.Itoa(port))
		cancel()
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if _, ok := conn.(*websocket.ResumableConn); ok != tt.resumable {
			t.Errorf("serve %v: the tunnel is a %T, resumable %v, want %v", tt.args, conn, ok, tt.resumable)
		}
		conn.Close()
	}
	code, _, stderr := runCLI(t, env(envToken, testToken), "serve", "--listen", "127.0.0.1:0", "--resume-grace", "-1s")
	if code != exitUsage {
		t.Errorf("--resume-grace -1s: exit %d, want %d", code, exitUsage)
	}
	oneLine(t, stderr, "--resume-grace")
}

// The status line counts resumes once there are any.
func TestStatusLineResumed(t *testing.T) {
	t.Parallel()
	if s := statusLine(nil, 0); strings.Contains(s, "resumed") {
		t.Errorf("no resumes: %q", s)
	}
	if s := statusLine(nil, 3); !strings.HasSuffix(s, " · resumed 3") {
		t.Errorf("3 resumes: %q", s)
	}
}
