package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

func TestForward(t *testing.T) {
	t.Parallel()
	s := start(t, forward(t, startEcho(t)))
	c := dial(t, s.Addr())
	if got := roundTrip(t, c, "hello through the tunnel"); got != "hello through the tunnel" {
		t.Fatalf("echo = %q", got)
	}
}

// TestHalfClose: a client writes, shuts its write side, and still reads the
// whole reply and then EOF, as over a plain TCP connection.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	// The service answers only once it has read everything.
	addr := startService(t, "tcp4", func(c net.Conn) {
		data, err := io.ReadAll(c)
		if err != nil {
			return
		}
		c.Write(bytes.ToUpper(data))
		c.(*net.TCPConn).CloseWrite()
	})
	s := start(t, forward(t, addr))
	c := dial(t, s.Addr())

	payload := bytes.Repeat([]byte("half-close "), 100_000) // ~1 MiB: more than one buffer
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c) // nil error: the reply ended in EOF
	if err != nil {
		t.Fatalf("read after CloseWrite: %v", err)
	}
	if !bytes.Equal(got, bytes.ToUpper(payload)) {
		t.Fatalf("reply is %d bytes, want %d", len(got), len(payload))
	}
}

func TestPortZero(t *testing.T) {
	t.Parallel()
	s := start(t, forward(t, startEcho(t)))
	if s.Port() == 0 {
		t.Fatal("Port() = 0 after listening on port 0")
	}
	ta, ok := s.Addr().(*net.TCPAddr)
	if !ok || ta.Port != s.Port() || !ta.IP.IsLoopback() {
		t.Fatalf("Addr() = %v, Port() = %d", s.Addr(), s.Port())
	}
	for _, a := range s.Addrs() {
		if a.(*net.TCPAddr).Port != s.Port() {
			t.Errorf("listener %v is not on port %d", a, s.Port())
		}
	}
}

func TestFixedLocalPort(t *testing.T) {
	t.Parallel()
	// Learn a free port, then ask for it.
	probe := start(t, forward(t, startEcho(t)))
	port := probe.Port()
	probe.Close()

	cfg := forward(t, startEcho(t))
	cfg.LocalPort = port
	s, err := Start(t.Context(), cfg)
	if err != nil {
		t.Skipf("port %d was taken again meanwhile: %v", port, err)
	}
	defer s.Close()
	if s.Port() != port {
		t.Fatalf("Port() = %d, want %d", s.Port(), port)
	}
	roundTrip(t, dial(t, s.Addr()), "x")
}

func TestLocalPortInUse(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cfg := forward(t, startEcho(t))
	cfg.LocalPort = busy.Addr().(*net.TCPAddr).Port
	s, err := Start(t.Context(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("Start on a port in use succeeded")
	}
	if !addrInUse(err) {
		t.Fatalf("error %v is not EADDRINUSE", err)
	}
}

// TestContextCancel: cancelling Start's context closes the session, its
// listeners and the connections it forwards.
func TestContextCancel(t *testing.T) {
	t.Parallel()
	var lr listenRecorder
	ctx, cancel := context.WithCancel(t.Context())
	cfg := forward(t, startEcho(t))
	cfg.Listen = lr.listen
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.Addr())
	roundTrip(t, c, "before")

	cancel()
	s.Wait()

	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("forwarded conn still open after the context ended")
	}
	_, ls := lr.snapshot()
	for _, l := range ls {
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("listener %v: Accept = %v, want net.ErrClosed", l.Addr(), err)
		}
	}
	if !errors.Is(s.Err(), context.Canceled) {
		t.Fatalf("Err() = %v, want context.Canceled", s.Err())
	}
	if st := s.Stats(); st.Active != 0 {
		t.Fatalf("Active = %d after Wait", st.Active)
	}
}

// TestCloseConcurrent: Close from many goroutines at once; each returns nil
// only after the forwarded connections are closed on both sides.
func TestCloseConcurrent(t *testing.T) {
	t.Parallel()
	serviceDone := make(chan struct{}, 4)
	addr := startService(t, "tcp4", func(c net.Conn) {
		echo(c)
		serviceDone <- struct{}{}
	})
	s := start(t, forward(t, addr))
	var conns []net.Conn
	for range 4 {
		c := dial(t, s.Addr())
		roundTrip(t, c, "up")
		conns = append(conns, c)
	}
	if st := s.Stats(); st.Active != 4 {
		t.Fatalf("Active = %d, want 4", st.Active)
	}

	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()

	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Close returned")
	}
	if st := s.Stats(); st.Active != 0 {
		t.Fatalf("Active = %d after Close", st.Active)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("Err() = %v after Close, want nil", err)
	}
	for _, c := range conns {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("client conn still open after Close")
		}
	}
	for range 4 {
		<-serviceDone // the service saw each of its conns end
	}
	s.Close() // once more, after the fact
}

// TestFailedStream: a stream whose dial fails closes its own connection
// only; the next connection through the same session works.
func TestFailedStream(t *testing.T) {
	t.Parallel()
	echoAddr := startEcho(t)
	var calls atomic.Int32
	cfg := forward(t, echoAddr)
	cfg.Dialer = dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		if calls.Add(1) == 1 {
			return nil, dialer.OpError(network, sprite, address, dialer.ErrTargetRefused)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	})
	s := start(t, cfg)

	assertFails(t, s.Addr())

	ok := dial(t, s.Addr())
	if got := roundTrip(t, ok, "still here"); got != "still here" {
		t.Fatalf("echo = %q", got)
	}
	st := s.Stats()
	if st.Accepted != 2 || st.Failed != 1 {
		t.Fatalf("Stats = %+v, want 2 accepted, 1 failed", st)
	}
	select {
	case <-s.Done():
		t.Fatal("session ended after a failed stream")
	default:
	}
}

// TestDialTimeout: a dial that hangs fails the stream after the timeout;
// the session keeps serving.
func TestDialTimeout(t *testing.T) {
	t.Parallel()
	echoAddr := startEcho(t)
	var calls atomic.Int32
	cfg := forward(t, echoAddr)
	cfg.DialTimeout = 20 * time.Millisecond
	cfg.Dialer = dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		if calls.Add(1) == 1 {
			<-ctx.Done() // a tunnel that never answers
			return nil, ctx.Err()
		}
		// The timeout is short so the test is quick; a loaded machine can
		// take longer than that to dial loopback, so the second dial does
		// not inherit it: what is checked is that one stuck dial fails
		// its stream only.
		var d net.Dialer
		return d.DialContext(context.WithoutCancel(ctx), network, address)
	})
	s := start(t, cfg)
	assertFails(t, s.Addr())
	roundTrip(t, dial(t, s.Addr()), "next")
	if st := s.Stats(); st.Failed != 1 {
		t.Fatalf("Stats = %+v, want 1 failed", st)
	}
}

// TestStats: counters move while the stream is open, and the totals are
// exact once it is closed.
func TestStats(t *testing.T) {
	t.Parallel()
	s := start(t, forward(t, startEcho(t)))
	c := dial(t, s.Addr())
	for _, msg := range []string{"12345", "67890", "abcde"} {
		roundTrip(t, c, msg)
	}

	// A chunk is counted just after it is written, so the last one may not
	// be yet; each earlier one is, since the copier counted it before it
	// read the next.
	st := s.Stats()
	if st.Accepted != 1 || st.Active != 1 || st.Sent < 10 || st.Received < 10 || st.Sent > 15 || st.Received > 15 {
		t.Fatalf("live Stats = %+v, want 1 accepted, 1 active, 10 to 15 bytes each way", st)
	}

	c.CloseWrite()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	s.Close()
	st = s.Stats()
	if st.Accepted != 1 || st.Active != 0 || st.Sent != 15 || st.Received != 15 || st.Failed != 0 {
		t.Fatalf("final Stats = %+v, want 1 accepted, 0 active, 15 bytes each way", st)
	}
}

// TestRemoteHosts: what the Dialer is asked for, for each form of host.
func TestRemoteHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ host, want string }{
		{"", "localhost:5432"},
		{"localhost", "localhost:5432"},
		{"10.0.0.1", "10.0.0.1:5432"},
		{"fdf::1", "[fdf::1]:5432"},
		{"[::1]", "[::1]:5432"},
		{"db.internal", "db.internal:5432"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			got := make(chan string, 1)
			s := start(t, Config{
				Dialer:     redirectDialer(startEcho(t), got),
				RemoteHost: tc.host,
				RemotePort: 5432,
			})
			if s.Target() != tc.want {
				t.Errorf("Target() = %q, want %q", s.Target(), tc.want)
			}
			roundTrip(t, dial(t, s.Addr()), "ping")
			if addr := <-got; addr != tc.want {
				t.Errorf("Dialer asked for %q, want %q", addr, tc.want)
			}
		})
	}
}

// TestIPv6Target forwards to a real service on ::1.
func TestIPv6Target(t *testing.T) {
	t.Parallel()
	requireIPv6(t)
	addr := startService(t, "tcp6", echo)
	_, port := splitHostPort(t, addr)
	s := start(t, Config{Dialer: directDialer(), RemoteHost: "[::1]", RemotePort: port})
	if got := roundTrip(t, dial(t, s.Addr()), "v6"); got != "v6" {
		t.Fatalf("echo = %q", got)
	}
}

// TestValidate: bad settings fail before any listening or dialing.
func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     Config
		badAddr bool
	}{
		{"no dialer", Config{RemotePort: 1}, false},
		{"local port negative", Config{LocalPort: -1, RemotePort: 1}, true},
		{"local port too big", Config{LocalPort: 65536, RemotePort: 1}, true},
		{"remote port zero", Config{RemotePort: 0}, true},
		{"remote port negative", Config{RemotePort: -5}, true},
		{"remote port too big", Config{RemotePort: 70000}, true},
		{"remote host with space", Config{RemoteHost: "a b", RemotePort: 1}, true},
		{"remote host with slash", Config{RemoteHost: "a/b", RemotePort: 1}, true},
		{"remote host with bracket inside", Config{RemoteHost: "a]b", RemotePort: 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var dials, listens atomic.Int32
			cfg := tc.cfg
			if tc.name != "no dialer" {
				cfg.Dialer = dialer.Func(func(context.Context, string, string, string) (net.Conn, error) {
					dials.Add(1)
					return nil, errors.New("dialed")
				})
			}
			cfg.Listen = func(context.Context, string, string) (net.Listener, error) {
				listens.Add(1)
				return nil, errors.New("listened")
			}
			if err := cfg.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
			s, err := Start(t.Context(), cfg)
			if err == nil {
				s.Close()
				t.Fatal("Start accepted it")
			}
			if tc.badAddr && !errors.Is(err, dialer.ErrBadAddress) {
				t.Errorf("error %v does not match dialer.ErrBadAddress", err)
			}
			if dials.Load() != 0 || listens.Load() != 0 {
				t.Errorf("%d dials and %d listens before the error", dials.Load(), listens.Load())
			}
		})
	}
}

func TestStartCancelledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var lr listenRecorder
	cfg := forward(t, "127.0.0.1:1")
	cfg.Listen = lr.listen
	if _, err := Start(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	if calls, _ := lr.snapshot(); len(calls) != 0 {
		t.Fatalf("listened on %v with a done context", calls)
	}
}

// TestLogging: one debug line per stream open and close, nothing at Info or
// above for normal traffic.
func TestLogging(t *testing.T) {
	t.Parallel()
	var h logRecorder
	cfg := forward(t, startEcho(t))
	cfg.Logger = slog.New(&h)
	s := start(t, cfg)
	for i := range 3 {
		c := dial(t, s.Addr())
		roundTrip(t, c, "log "+strconv.Itoa(i))
		c.Close()
	}
	s.Close()

	counts := map[string]int{}
	for _, r := range h.Records() {
		if r.Level >= slog.LevelInfo {
			t.Errorf("logged at %v for normal traffic: %q", r.Level, r.Message)
		}
		counts[r.Message]++
	}
	if counts["stream open"] != 3 || counts["stream closed"] != 3 {
		t.Fatalf("log lines: %v, want 3 stream open and 3 stream closed", counts)
	}
}

// TestManyStreams moves random data through many streams at once, over
// tunnel-like conns and over plain TCP (which the pump splices).
func TestManyStreams(t *testing.T) {
	t.Parallel()
	t.Run("tunnel", func(t *testing.T) {
		t.Parallel()
		manyStreams(t, forward(t, startEcho(t)))
	})
	t.Run("tcp", func(t *testing.T) {
		t.Parallel()
		cfg := forward(t, startEcho(t))
		cfg.Dialer = directDialer()
		manyStreams(t, cfg)
	})
}

func manyStreams(t *testing.T, cfg Config) {
	s := start(t, cfg)
	var wg sync.WaitGroup
	const streams, size = 16, 256 << 10
	for range streams {
		wg.Go(func() {
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			data := make([]byte, size)
			rand.Read(data)
			errc := make(chan error, 1)
			go func() {
				_, err := c.Write(data)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}
				errc <- err
			}()
			got, err := io.ReadAll(c)
			if werr := <-errc; werr != nil {
				t.Error(werr)
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("echo: %d bytes, err %v", len(got), err)
			}
		})
	}
	wg.Wait()
	s.Close()
	if st := s.Stats(); st.Sent != streams*size || st.Received != streams*size {
		t.Fatalf("Stats = %+v, want %d bytes each way", st, streams*size)
	}
}
