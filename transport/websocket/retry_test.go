package websocket

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// faultNet is the network under a Dialer in the retry tests: each of its
// dials takes the next fault from a script, and once the script is done
// it hands the connection to a real Server. The test holds the server's
// end of every connection, to cut it when it likes.
type faultNet struct {
	t      *testing.T
	ln     *chanListener
	wg     sync.WaitGroup // fault goroutines
	mu     sync.Mutex
	script []fault
	dials  int
	ends   []net.Conn // the server's end of each connection
}

// fault is what one dial meets: refused (no connection at all), or a
// connection whose server end run handles.
type fault struct {
	refuse bool
	run    func(net.Conn)
}

var refused = fault{refuse: true}

// newFaultNet serves srv behind a faultNet with the faults of script, then
// the real server.
func newFaultNet(t *testing.T, srv *Server, script ...fault) *faultNet {
	f := &faultNet{t: t, ln: newChanListener(), script: script}
	serveOn(t, srv, f.ln, true)
	t.Cleanup(f.wg.Wait)
	return f
}

func (f *faultNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	f.dials++
	var next fault
	if len(f.script) > 0 {
		next, f.script = f.script[0], f.script[1:]
	}
	f.mu.Unlock()
	if next.refuse {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	a, b := testnet.TCPPair(f.t)
	f.mu.Lock()
	f.ends = append(f.ends, b)
	f.mu.Unlock()
	if next.run == nil {
		f.ln.push(b)
		return a, nil
	}
	b.SetDeadline(time.Now().Add(10 * time.Second))
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer b.Close()
		next.run(b)
	}()
	return a, nil
}

func (f *faultNet) dialCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dials
}

// dialer is a Dialer on the faultNet, whose waits sleep records (and
// passes) instead of sleeping.
func (f *faultNet) dialer(sleep func(context.Context, time.Duration) error) *Dialer {
	d := &Dialer{BaseURL: "http://sprites.test", Token: testToken, NetDial: f.dial, DisableResume: true}
	d.Retry.sleep = sleep
	return d
}

// noWait is a fake clock for retries: the waits pass at once.
func noWait(context.Context, time.Duration) error { return nil }

// recordWaits returns a fake clock that keeps the waits asked of it.
func recordWaits() (func(context.Context, time.Duration) error, func() []time.Duration) {
	var mu sync.Mutex
	var waits []time.Duration
	return func(_ context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			waits = append(waits, d)
			return nil
		}, func() []time.Duration {
			mu.Lock()
			defer mu.Unlock()
			return append([]time.Duration(nil), waits...)
		}
}

// chanListener is a net.Listener whose connections are pushed to it.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// The faults a server end can show.

// refuseHTTP answers the upgrade request with status, a Retry-After of
// retryAfter if not empty, and a JSON body.
func refuseHTTP(status int, retryAfter string) fault {
	return fault{run: func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		h := ""
		if retryAfter != "" {
			h = "Retry-After: " + retryAfter + "\r\n"
		}
		body := `{"error":"unavailable","message":"not now"}`
		io.WriteString(c, "HTTP/1.1 "+itoa(status)+" "+http.StatusText(status)+"\r\n"+h+
			"Content-Type: application/json\r\nContent-Length: "+itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	}}
}

// resetDuringUpgrade reads the upgrade request and resets the connection.
var resetDuringUpgrade = fault{run: func(c net.Conn) {
	http.ReadRequest(bufio.NewReader(c))
	c.(*net.TCPConn).SetLinger(0)
}}

// closedAtOnce closes the connection at once: the client's upgrade sees
// the end of the stream.
var closedAtOnce = fault{run: func(net.Conn) {}}

// upgradeThenClose upgrades, then ends the connection before any reply:
// with a close frame of code (0 for none) without reading the first
// message, as a server shutting down does.
func upgradeThenClose(code ws.StatusCode) fault {
	return fault{run: func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		if code != 0 {
			ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(code, "")))
		}
	}}
}

// replyThenReset upgrades, reads the first message, replies "connected"
// and resets the connection once cut is closed: a failure after the reply.
func replyThenReset(cut <-chan struct{}) fault {
	return fault{run: func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		if skipFrame(c) != nil {
			return
		}
		ws.WriteFrame(c, ws.NewTextFrame([]byte(`{"status":"connected","target":"127.0.0.1:9"}`)))
		<-cut
		c.(*net.TCPConn).SetLinger(0)
	}}
}

// skipFrame reads a frame from the client and drops its payload.
func skipFrame(c net.Conn) error {
	h, err := ws.ReadHeader(c)
	if err == nil {
		_, err = io.CopyN(io.Discard, c, h.Length)
	}
	return err
}

// Every failure before the reply is retried on a fresh connection, and
// the application gets a working tunnel.
func TestRetryBeforeReply(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	for _, tc := range []struct {
		name  string
		fault fault
	}{
		{"connection refused", refused},
		{"reset during the upgrade", resetDuringUpgrade},
		{"closed before the upgrade", closedAtOnce},
		{"503 with Retry-After", refuseHTTP(http.StatusServiceUnavailable, "1")},
		{"503 without Retry-After", refuseHTTP(http.StatusServiceUnavailable, "")},
		{"429", refuseHTTP(http.StatusTooManyRequests, "1")},
		{"502 from a balancer", refuseHTTP(http.StatusBadGateway, "")},
		{"going away before the reply", upgradeThenClose(ws.StatusGoingAway)},
		{"closed after the upgrade", upgradeThenClose(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFaultNet(t, newServer(), tc.fault, tc.fault)
			d := f.dialer(noWait)
			d.Retry.MaxBackoff = 2 * time.Second // above the Retry-After of 1 s
			c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatalf("dial after two faults: %v", err)
			}
			defer c.Close()
			echoCheck(t, c)
			if n := f.dialCount(); n != 3 {
				t.Errorf("%d connections, want 3 (two faults, then the server)", n)
			}
		})
	}
}

// echoCheck sends a few bytes through c to an echo and reads them back.
func echoCheck(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

// An idle connection the server (or a balancer) closed under the client
// is left for a fresh one, with no error for the application.
func TestRetryIdleConnectionClosed(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	f := newFaultNet(t, newServer())
	d := f.dialer(noWait)
	defer d.CloseIdleConnections()
	c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	echoCheck(t, c)
	c.Close()
	if d.IdleConnections() != 1 {
		t.Fatalf("%d idle connections after a clean close, want 1", d.IdleConnections())
	}
	f.mu.Lock()
	f.ends[0].Close()           // the server's end of the idle connection
	f.script = []fault{refused} // and the next connection is refused once
	f.mu.Unlock()
	c, err = d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
	if err != nil {
		t.Fatalf("dial after the idle connection was closed: %v", err)
	}
	defer c.Close()
	echoCheck(t, c)
	if n := f.dialCount(); n != 3 {
		t.Errorf("%d connections, want 3 (the first, a refused one, a fresh one)", n)
	}
}

// What is not retried: a refusal that a new connection would meet too, a
// handshake error reply (the server answered), a reply that does not
// parse, and anything after the reply.
func TestRetryNotRetried(t *testing.T) {
	t.Parallel()
	closed := closedPort(t)
	for _, tc := range []struct {
		name   string
		fault  fault
		target string
		want   error
	}{
		{"401", refuseHTTP(http.StatusUnauthorized, ""), "", dialer.ErrUnauthorized},
		{"403", refuseHTTP(http.StatusForbidden, ""), "", dialer.ErrForbidden},
		{"404", refuseHTTP(http.StatusNotFound, ""), "", dialer.ErrUnknownSprite},
		{"500", refuseHTTP(http.StatusInternalServerError, "1"), "", dialer.ErrTunnelClosed},
		{"503 with a Retry-After above MaxBackoff", refuseHTTP(http.StatusServiceUnavailable, "2"), "", dialer.ErrUnavailable},
		{"429 with a Retry-After above MaxBackoff", refuseHTTP(http.StatusTooManyRequests, "2"), "", dialer.ErrUnavailable},
		{"target refused", fault{}, "127.0.0.1:" + itoa(closed), dialer.ErrTargetRefused},
		{"bad reply", fault{run: func(c net.Conn) {
			if _, err := ws.Upgrade(c); err == nil {
				skipFrame(c)
				ws.WriteFrame(c, ws.NewTextFrame([]byte(`{"status":"maybe"}`)))
			}
		}}, "", dialer.ErrTunnelClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFaultNet(t, newServer(), tc.fault, tc.fault)
			target := tc.target
			if target == "" {
				target = "127.0.0.1:9"
			}
			d := f.dialer(func(context.Context, time.Duration) error {
				t.Error("a retry wait for a failure that is not retried")
				return nil
			})
			defer d.CloseIdleConnections()
			_, err := d.DialSprite(testCtx(t), "s", "tcp", target)
			if tc.name == "500" {
				var he *dialer.HTTPError
				if !errors.As(err, &he) || he.StatusCode != 500 {
					t.Fatalf("got %v, want the 500", err)
				}
			} else {
				mustIs(t, err, tc.want)
			}
			if n := f.dialCount(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// A tunnel that fails after its reply is the application's failure: the
// dial is not made again, the target that got bytes sees one connection,
// and the reads end with an error, never a clean EOF.
func TestRetryNotAfterReply(t *testing.T) {
	t.Parallel()
	t.Run("reply then reset", func(t *testing.T) {
		t.Parallel()
		cut := make(chan struct{})
		f := newFaultNet(t, newServer(), replyThenReset(cut))
		c, err := f.dialer(noWait).DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:9")
		close(cut)
		if err != nil {
			t.Fatalf("the reply came: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err == nil || isTimeout(err) {
			t.Fatalf("read after the reset: %v, want an error", err)
		}
		if n := f.dialCount(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("target got bytes", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		conns := 0
		got := make(chan string, 4)
		tg := startTarget(t, func(c net.Conn) {
			defer c.Close()
			mu.Lock()
			conns++
			mu.Unlock()
			buf := make([]byte, 5)
			if _, err := io.ReadFull(c, buf); err == nil {
				got <- string(buf)
			}
			io.Copy(io.Discard, c)
		})
		f := newFaultNet(t, newServer())
		d := f.dialer(noWait)
		c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("bytes")); err != nil {
			t.Fatal(err)
		}
		if s := <-got; s != "bytes" {
			t.Fatalf("target got %q", s)
		}
		f.mu.Lock()
		f.ends[0].(*net.TCPConn).SetLinger(0)
		f.ends[0].Close() // the connection is cut under the tunnel
		f.mu.Unlock()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err == nil || isTimeout(err) {
			t.Fatalf("read after the cut: %v, want an error", err)
		}
		if n := f.dialCount(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
		mu.Lock()
		defer mu.Unlock()
		if conns != 1 {
			t.Errorf("target saw %d connections, want 1", conns)
		}
	})
}

// The retries stop at MaxAttempts, at ctx's end, and before a wait that
// ctx's deadline would cut; the error is then the last attempt's, typed as
// without retries.
func TestRetryBounds(t *testing.T) {
	t.Parallel()
	many := func(f fault) []fault {
		s := make([]fault, 20)
		for i := range s {
			s[i] = f
		}
		return s
	}
	t.Run("attempts", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ max, want int }{{0, DefaultRetryAttempts}, {1, 1}, {-1, 1}, {3, 3}} {
			f := newFaultNet(t, newServer(), many(refused)...)
			d := f.dialer(noWait)
			d.Retry.MaxAttempts = tc.max
			_, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:9")
			mustIs(t, err, syscall.ECONNREFUSED)
			if n := f.dialCount(); n != tc.want {
				t.Errorf("MaxAttempts %d: %d connections, want %d", tc.max, n, tc.want)
			}
		}
	})
	t.Run("ctx cancelled during a wait", func(t *testing.T) {
		t.Parallel()
		f := newFaultNet(t, newServer(), many(refuseHTTP(http.StatusServiceUnavailable, ""))...)
		ctx, cancel := context.WithCancel(testCtx(t))
		d := f.dialer(func(ctx context.Context, _ time.Duration) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		})
		_, err := d.DialSprite(ctx, "s", "tcp", "127.0.0.1:9")
		mustIs(t, err, dialer.ErrUnavailable)
		var op *net.OpError
		if !errors.As(err, &op) {
			t.Fatalf("%v is not a *net.OpError", err)
		}
		if he, ok := op.Err.(*dialer.HTTPError); !ok || he.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("the error under the OpError is %T %v, want the *dialer.HTTPError as without retries", op.Err, op.Err)
		}
		if n := f.dialCount(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("deadline before the wait ends", func(t *testing.T) {
		t.Parallel()
		f := newFaultNet(t, newServer(), many(refuseHTTP(http.StatusServiceUnavailable, "30"))...)
		d := f.dialer(func(context.Context, time.Duration) error {
			t.Error("waited past the deadline")
			return nil
		})
		d.Retry.MaxBackoff = time.Hour // Retry-After's 30 s is the wait
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := d.DialSprite(ctx, "s", "tcp", "127.0.0.1:9")
		mustIs(t, err, dialer.ErrUnavailable)
		if n := f.dialCount(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("a real wait ends with ctx", func(t *testing.T) {
		t.Parallel()
		f := newFaultNet(t, newServer(), many(refused)...)
		waiting := make(chan struct{})
		// The real clock, told of the wait: an hour, that only ctx ends.
		d := f.dialer(func(ctx context.Context, d time.Duration) error {
			close(waiting)
			return sleepCtx(ctx, d)
		})
		d.Retry.Backoff, d.Retry.MaxBackoff = time.Hour, time.Hour
		// No deadline (one would end the dial before the wait): the
		// cancel is its only end.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := d.DialSprite(ctx, "s", "tcp", "127.0.0.1:9")
			errc <- err
		}()
		select {
		case <-waiting:
		case err := <-errc:
			t.Fatalf("the dial ended before its wait: %v", err)
		}
		cancel()
		mustIs(t, <-errc, syscall.ECONNREFUSED)
		if n := f.dialCount(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
}

// The waits: jittered between half the backoff and all of it, doubled
// each time up to MaxBackoff; the server's Retry-After when longer, capped
// by MaxBackoff.
func TestRetryWaits(t *testing.T) {
	t.Parallel()
	t.Run("backoff", func(t *testing.T) {
		t.Parallel()
		f := newFaultNet(t, newServer(), refused, refused, refused, refused, refused)
		sleep, waits := recordWaits()
		d := f.dialer(sleep)
		d.Retry = Retry{MaxAttempts: 6, Backoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, sleep: sleep}
		c, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:"+itoa(closedPort(t)))
		if err == nil {
			c.Close()
		}
		mustIs(t, err, dialer.ErrTargetRefused) // the sixth reached the server
		ms := time.Millisecond
		bounds := [][2]time.Duration{{50 * ms, 100 * ms}, {100 * ms, 200 * ms}, {150 * ms, 300 * ms}, {150 * ms, 300 * ms}, {150 * ms, 300 * ms}}
		w := waits()
		if len(w) != len(bounds) {
			t.Fatalf("waits %v, want %d", w, len(bounds))
		}
		for i, b := range bounds {
			if w[i] < b[0] || w[i] > b[1] {
				t.Errorf("wait %d is %v, want %v to %v", i, w[i], b[0], b[1])
			}
		}
	})
	t.Run("negative means the defaults", func(t *testing.T) {
		t.Parallel()
		f := newFaultNet(t, newServer(), refused)
		sleep, waits := recordWaits()
		d := f.dialer(sleep)
		d.Retry.Backoff, d.Retry.MaxBackoff = -1, -1
		c, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:"+itoa(closedPort(t)))
		if err == nil {
			c.Close()
		}
		if w := waits(); len(w) != 1 || w[0] < DefaultRetryBackoff/2 || w[0] > DefaultRetryBackoff {
			t.Errorf("waits %v, want one of %v to %v", w, DefaultRetryBackoff/2, DefaultRetryBackoff)
		}
	})
	t.Run("Retry-After", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			header string
			max    time.Duration
			want   time.Duration
		}{
			{"1", 2 * time.Second, time.Second},
			{"2", 2 * time.Second, 2 * time.Second},
			{"0", 2 * time.Second, 0}, // the backoff's jitter, below its 1 ms
			{"soon", 2 * time.Second, 0},
			{time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat), time.Hour, -1},
			// Above MaxBackoff: not retried.
			{"5", 2 * time.Second, -2},
			{"1", 0, time.Second}, // the default MaxBackoff takes spriteproxy's server's 1 s
			{"2", 0, -2},
			{time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 3 * time.Second, -2},
		} {
			f := newFaultNet(t, newServer(), refuseHTTP(http.StatusServiceUnavailable, tc.header))
			sleep, waits := recordWaits()
			d := f.dialer(sleep)
			d.Retry.Backoff, d.Retry.MaxBackoff = time.Millisecond, tc.max
			c, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:9")
			if err == nil {
				c.Close()
			}
			w := waits()
			switch {
			case tc.want == -2: // no retry
				if len(w) != 0 || f.dialCount() != 1 {
					t.Errorf("Retry-After %q, MaxBackoff %v: waits %v and %d connections, want no retry", tc.header, tc.max, w, f.dialCount())
				}
			case tc.want == -1: // a date 10 s away (within the dial's 20 s)
				if len(w) != 1 || w[0] < 8*time.Second || w[0] > 10*time.Second {
					t.Errorf("Retry-After %q: waits %v, want about 10 s", tc.header, w)
				}
			case len(w) != 1 || tc.want > 0 && w[0] != tc.want || tc.want == 0 && w[0] > time.Millisecond:
				t.Errorf("Retry-After %q, MaxBackoff %v: waits %v, want [%v]", tc.header, tc.max, w, tc.want)
			}
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"0": 0, "7": 7 * time.Second, " 2 ": 2 * time.Second,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got, ok := parseRetryAfter(in, now); !ok || got != want {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5", "soon"} {
		if _, ok := parseRetryAfter(bad, now); ok {
			t.Errorf("parseRetryAfter(%q) is accepted", bad)
		}
	}
}
