package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// SIGTERM drains serve as a load balancer can follow, step by step:
// /healthz turns 503 at once; the listener still serves for --drain-delay,
// and a client whose idle (reused) connection the drain closed opens its
// next tunnel on a new connection with no error; then the listener closes
// while an open tunnel carries on, and serve exits 0 once it has ended.
func TestProcessDrainOnSIGTERM(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	const delay = 4 * time.Second
	srv, api, ca := serveProcess(t, bin, "--drain-delay", delay.String(), "--drain-timeout", "30s")
	port := echoService(t)
	tlsConf, err := loadCA("--tls-ca", ca)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	health := func() (int, string) {
		t.Helper()
		resp, err := hc.Get(api + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := health(); code != http.StatusOK {
		t.Fatalf("/healthz while serving: %d %s", code, body)
	}

	var dials atomic.Int32
	client := proxy.New(testToken, proxy.WithBaseURL(api), proxy.WithTLSConfig(tlsConf),
		proxy.WithNetDial(func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}))
	defer client.CloseIdleConnections()
	sprite := client.Sprite("box")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	target := "localhost:" + strconv.Itoa(port)
	echoOnce := func(c net.Conn, msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q: %q, %v", msg, got, err)
		}
	}
	open, err := sprite.ProxySocket(ctx, "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	echoOnce(open, "open")
	// Two tunnels one after the other on one connection, which then waits
	// idle in the client's pool.
	for i := range 2 {
		c, err := sprite.ProxySocket(ctx, "tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(c, "short")
		c.Close()
		if n := dials.Load(); n != 2 {
			t.Fatalf("tunnel %d: %d connections dialed, want 2 (the second short tunnel reuses the first's)", i, n)
		}
	}

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// (tunnels counts the open one, and the second short one if the
	// server has not yet seen its end.)
	srv.stderr.waitFor(t, regexp.MustCompile(`msg=draining tunnels=[12] drain_delay=4s`), 10*time.Second)
	if code, body := health(); code != http.StatusServiceUnavailable || !strings.Contains(body, `"error":"draining"`) {
		t.Fatalf("/healthz once draining: %d %s", code, body)
	}
	// Within the delay (the test fails, rather than mislead, if it is out
	// before the tunnel is open): the pooled connection was closed, and the
	// tunnel goes on a new one with no error.
	c, err := sprite.ProxySocket(ctx, "tcp", target)
	if err != nil {
		t.Fatalf("tunnel during the drain delay: %v", err)
	}
	if strings.Contains(srv.stderr.String(), "shutting down") {
		t.Fatal("the drain delay ended before the tunnel opened: the machine is too slow for this test's delay")
	}
	if n := dials.Load(); n != 3 {
		t.Fatalf("%d connections dialed, want 3: the tunnel after the drain goes on a new one", n)
	}
	echoOnce(c, "during the delay")
	c.Close()

	// Past the delay the listener is closed; the open tunnel still works.
	// (The line is logged as Shutdown begins, just before it closes the
	// listener: the dials are given a moment to meet the closed port.)
	srv.stderr.waitFor(t, regexp.MustCompile(`msg="shutting down" tunnels=1`), 30*time.Second)
	for deadline := time.Now().Add(5 * time.Second); ; {
		nc, err := net.DialTimeout("tcp", strings.TrimPrefix(api, "https://"), 5*time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts after the drain delay")
		}
		time.Sleep(10 * time.Millisecond)
	}
	echoOnce(open, "after the delay")
	open.Close()
	if code := srv.wait(t, 30*time.Second); code != 0 {
		t.Errorf("serve exit %d; stderr:\n%s", code, srv.stderr.String())
	}
	if s := srv.stderr.String(); !strings.Contains(s, "msg=stopped") || strings.Contains(s, "drain timed out") {
		t.Errorf("serve stderr:\n%s", s)
	}
}

// Only SIGTERM brings the drain delay: not Ctrl-C, nor a caller's cancel.
func TestStoppedByTerm(t *testing.T) {
	t.Parallel()
	cancelled := func(cause error) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
	noSignal := make(chan os.Signal, 1)
	term := make(chan os.Signal, 1)
	term <- syscall.SIGTERM
	for _, tt := range []struct {
		name string
		ctx  context.Context
		term chan os.Signal
		want bool
	}{
		{"cancel", cancelled(nil), noSignal, false},
		{"SIGINT", cancelled(errors.New(os.Interrupt.String() + " signal received")), noSignal, false},
		{"SIGTERM noticed", cancelled(nil), term, true},
		{"SIGTERM as the cause", cancelled(errors.New(syscall.SIGTERM.String() + " signal received")), noSignal, true},
	} {
		if got := stoppedByTerm(tt.ctx, tt.term); got != tt.want {
			t.Errorf("%s: stoppedByTerm = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// SIGTERM with resumable tunnels: one detached (its client gone, with a
// grace far longer than the test) and one open. Nothing can resume the
// detached one once the listener closes, so serve exits as soon as the
// open one has ended, past the drain delay, instead of waiting out the
// drain timeout for it; and the detached tunnel's client ends with
// "tunnel gone", not a clean end of stream.
func TestProcessDrainResumeDetached(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	const drainTimeout = 2 * time.Minute
	srv, api, ca := serveProcess(t, bin, "--drain-delay", "1s", "--drain-timeout", drainTimeout.String(), "--resume-grace", "10m")
	port := echoService(t)
	tlsConf, err := loadCA("--tls-ca", ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	target := "localhost:" + strconv.Itoa(port)
	relay := startTCPRelay(t, strings.TrimPrefix(api, "https://"))
	dial := func(base string) net.Conn {
		t.Helper()
		d := &websocket.Dialer{BaseURL: base, Token: testToken, TLSConfig: tlsConf}
		t.Cleanup(d.CloseIdleConnections)
		c, err := d.DialSprite(ctx, "box", "tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*websocket.ResumableConn); !ok {
			t.Fatalf("tunnel is a %T, want a *websocket.ResumableConn (resume granted)", c)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(time.Minute))
		return c
	}
	echo := func(c net.Conn, msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q: %q, %v", msg, got, err)
		}
	}
	detached := dial("https://" + relay.ln.Addr().String())
	echo(detached, "soon detached")
	open := dial(api)
	echo(open, "open")
	// The detached one's client finds nothing where the server was (the
	// relay's port closed) and gives up; the server keeps the tunnel.
	relay.ln.Close()
	relay.cut()
	_, err = detached.Read(make([]byte, 1))
	var re *dialer.ResumeError
	if !errors.As(err, &re) || re.Reason != dialer.ResumeGone {
		t.Fatalf("detached tunnel's read = %v, want a *dialer.ResumeError (tunnel gone)", err)
	}

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	srv.stderr.waitFor(t, regexp.MustCompile(`msg="shutting down"`), 30*time.Second)
	echo(open, "during the drain")
	open.Close()
	// Well before the drain timeout: the detached tunnel did not hold it.
	if code := srv.wait(t, drainTimeout/4); code != 0 {
		t.Errorf("serve exit %d; stderr:\n%s", code, srv.stderr.String())
	}
	if s := srv.stderr.String(); !strings.Contains(s, "msg=stopped") || strings.Contains(s, "drain timed out") {
		t.Errorf("serve stderr:\n%s", s)
	}
}
