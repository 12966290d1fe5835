package proxytest

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// Issue 16: a tunnel whose connection drops is carried on over a new one
// (the resume extension), as the application sees it through ProxySocket
// and ProxyPort. streamSize (norace_test.go, race_test.go) is what each
// direction carries.

// streamResult is what one direction of a bulk stream came to.
type streamResult struct {
	sum [sha256.Size]byte
	n   int64
	err error
}

// seededStream writes n pseudo-random bytes from seed on w in writes of
// random sizes, calling progress after each, and returns their hash.
func seededStream(w io.Writer, seed uint64, n int64, progress func(int)) ([sha256.Size]byte, error) {
	rng := rand.New(rand.NewPCG(seed, ^seed))
	h := sha256.New()
	buf := make([]byte, 128<<10)
	for n > 0 {
		m := min(n, 1+rng.Int64N(int64(len(buf))))
		for i := range buf[:m] {
			buf[i] = byte(rng.Uint32())
		}
		h.Write(buf[:m])
		if _, err := w.Write(buf[:m]); err != nil {
			return [sha256.Size]byte{}, err
		}
		n -= m
		if progress != nil {
			progress(int(m))
		}
	}
	return [sha256.Size]byte(h.Sum(nil)), nil
}

// hashAll reads r to its end, calling progress after each read.
func hashAll(r io.Reader, progress func(int)) streamResult {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var res streamResult
	for {
		k, err := r.Read(buf)
		h.Write(buf[:k])
		res.n += int64(k)
		if progress != nil && k > 0 {
			progress(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
	}
	res.sum = [sha256.Size]byte(h.Sum(nil))
	return res
}

// bulkSprite starts a service on 127.0.0.1:9 of sprite "bulk" that, on
// each conn, writes streamSize bytes from seedDown (then half-closes)
// while it reads what comes until the end; what it read goes on the
// returned channel once both are done.
func bulkSprite(t *testing.T, srv *Server, seedDown uint64) <-chan streamResult {
	ln, err := srv.Sprite("bulk").Listen("tcp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan streamResult, 4)
	testnet.Serve(t, ln, func(c net.Conn) {
		werr := make(chan error, 1)
		go func() {
			_, err := seededStream(c, seedDown, streamSize, nil)
			if err == nil {
				err = c.(interface{ CloseWrite() error }).CloseWrite()
			}
			werr <- err
		}()
		res := hashAll(c, nil)
		if err := <-werr; err != nil && res.err == nil {
			res.err = err
		}
		got <- res
	})
	return got
}

// faultPlan fires a fault at random points of a transfer of total bytes:
// add counts bytes moved, and each point passed sends on fire once.
type faultPlan struct {
	points []int64
	next   atomic.Int64
	moved  atomic.Int64
	fire   chan struct{}
}

func newFaultPlan(rng *rand.Rand, k int, total int64) *faultPlan {
	p := &faultPlan{fire: make(chan struct{}, k)}
	for range k {
		// Not in the last tenth: a fault there may land after the end.
		p.points = append(p.points, rng.Int64N(total*9/10))
	}
	slices.Sort(p.points)
	return p
}

func (p *faultPlan) add(n int) {
	moved := p.moved.Add(int64(n))
	for {
		i := p.next.Load()
		if i >= int64(len(p.points)) || p.points[i] > moved {
			return
		}
		if p.next.CompareAndSwap(i, i+1) {
			p.fire <- struct{}{} // buffered for every point
		}
	}
}

// run does fault at each point fired until all are done or stop is
// closed; it returns how many it did.
func (p *faultPlan) run(stop <-chan struct{}, fault func()) int {
	for i := range len(p.points) {
		select {
		case <-p.fire:
			fault()
		case <-stop:
			return i
		}
	}
	return len(p.points)
}

// bulkCase describes one run of the bulk transfer under faults.
type bulkCase struct {
	faults int              // how many points of the transfer get the fault
	fault  func(*Server)    // what happens at each
	tune   websocket.Tuning // both sides' tuning
}

// runBulk moves streamSize bytes each way between the application and
// the bulk sprite, through conn (a ProxySocket conn or a ProxyPort local
// conn), doing the case's fault at random points of the transfer; it
// fails the test unless all of it arrived intact with no error and a
// clean end of stream both ways.
func runBulk(t *testing.T, srv *Server, conn net.Conn, target <-chan streamResult, seedUp, seedDown uint64, plan *faultPlan, bc bulkCase) {
	t.Helper()
	stop := make(chan struct{})
	faulted := make(chan int, 1)
	go func() { faulted <- plan.run(stop, func() { bc.fault(srv) }) }()

	var sentSum [sha256.Size]byte
	var werr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sentSum, werr = seededStream(conn, seedUp, streamSize, plan.add)
		if werr == nil {
			werr = conn.(interface{ CloseWrite() error }).CloseWrite()
		}
	}()
	down := hashAll(conn, plan.add)
	wg.Wait()
	close(stop)
	n := <-faulted

	var up streamResult
	select {
	case up = <-target:
	case <-time.After(30 * time.Second):
		t.Fatal("the target did not finish")
	}
	if werr != nil {
		t.Errorf("the application's write: %v (after %d of %d faults)", werr, n, bc.faults)
	}
	if down.err != nil || down.n != streamSize {
		t.Errorf("the application read %d of %d bytes: %v (after %d of %d faults)", down.n, streamSize, down.err, n, bc.faults)
	} else if want, _ := seededStream(io.Discard, seedDown, streamSize, nil); down.sum != want {
		t.Errorf("the %d bytes the application read differ from those the target sent", down.n)
	}
	if up.err != nil || up.n != streamSize {
		t.Errorf("the target read %d of %d bytes: %v", up.n, streamSize, up.err)
	} else if werr == nil && up.sum != sentSum {
		t.Errorf("the %d bytes the target read differ from those the application sent", up.n)
	}
	if n != bc.faults {
		t.Errorf("%d of %d faults done: the transfer ended first", n, bc.faults)
	}
}

// bulkThroughBoth runs bc through ProxySocket and through ProxyPort, each
// with a server of its own; check, if set, looks at the tunnel after.
func bulkThroughBoth(t *testing.T, bc bulkCase, opts []Option, check func(t *testing.T, srv *Server, conn net.Conn, ps *proxy.ProxySession)) {
	for _, via := range []string{"ProxySocket", "ProxyPort"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 16))
			seedUp, seedDown := rng.Uint64(), rng.Uint64()
			srv := NewServer(t, append([]Option{WithServer(func(s *websocket.Server) { s.Tuning = bc.tune })}, opts...)...)
			target := bulkSprite(t, srv, seedDown)
			d := srv.Dialer()
			d.Tuning = bc.tune
			client := srv.Client(proxy.WithDialer(d)).Sprite("bulk")
			ctx := ctxFor(t)
			plan := newFaultPlan(rng, bc.faults, 2*streamSize)
			var conn net.Conn
			var ps *proxy.ProxySession
			var err error
			if via == "ProxySocket" {
				conn, err = client.ProxySocket(ctx, "tcp", "localhost:9")
			} else {
				if ps, err = client.ProxyPort(ctx, 0, 9); err == nil {
					defer ps.Close()
					conn, err = srv.DialLocal(ctx, ps.LocalPort)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			runBulk(t, srv, conn, target, seedUp, seedDown, plan, bc)
			if check != nil {
				check(t, srv, conn, ps)
			}
		})
	}
}

// resumedBetween returns a check that the tunnel was resumed lo to hi
// times: the ProxySocket conn's Resumes, the ProxyPort session's
// Stats().Resumes.
func resumedBetween(lo, hi int) func(*testing.T, *Server, net.Conn, *proxy.ProxySession) {
	return func(t *testing.T, _ *Server, conn net.Conn, ps *proxy.ProxySession) {
		t.Helper()
		var n int
		if ps != nil {
			n = int(ps.Stats().Resumes)
		} else if rc, ok := conn.(*websocket.ResumableConn); ok {
			n = rc.Resumes()
		} else {
			t.Fatalf("ProxySocket returned a %T, want a *websocket.ResumableConn", conn)
		}
		t.Logf("%d resumes", n)
		if n < lo || n > hi {
			t.Errorf("resumed %d times, want %d to %d", n, lo, hi)
		}
	}
}

// TestResumeCuts: streamSize each way while every connection between the
// client and the server is reset (Cut) 20 times at random points of the
// transfer: the application sees all of it, intact, with no error.
func TestResumeCuts(t *testing.T) {
	t.Parallel()
	bulkThroughBoth(t, bulkCase{
		faults: 20,
		fault: func(s *Server) {
			if _, err := s.Cut(); err != nil {
				panic(err)
			}
		},
	}, nil, resumedBetween(1, 20))
}

// TestResumePartition: streamSize each way across a 2 s partition, longer
// than both sides' dead-peer timeout (so the connection is given up
// during it): the application sees all of it, intact, with no error.
func TestResumePartition(t *testing.T) {
	t.Parallel()
	bulkThroughBoth(t, bulkCase{
		faults: 1,
		fault: func(s *Server) {
			if err := s.Partition(2 * time.Second); err != nil {
				panic(err)
			}
		},
		tune: websocket.Tuning{KeepAlive: 100 * time.Millisecond, DeadPeerTimeout: 500 * time.Millisecond},
	}, nil, resumedBetween(1, 2))
}

// TestResumeWriteAfterPeerEOF: the target ends its side at once and reads
// everything; the application reads that end, then writes more than the
// send buffer holds (so the Write waits for acks with no Read under way),
// with no fault at all: all of it arrives.
func TestResumeWriteAfterPeerEOF(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	ln, err := srv.Sprite("bulk").Listen("tcp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan streamResult, 1)
	testnet.Serve(t, ln, func(c net.Conn) {
		c.(interface{ CloseWrite() error }).CloseWrite()
		got <- hashAll(c, nil)
	})
	conn, err := srv.Client().Sprite("bulk").ProxySocket(ctxFor(t), "tcp", "localhost:9")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if res := hashAll(conn, nil); res.err != nil || res.n != 0 {
		t.Fatalf("read the target's end: %d bytes, %v", res.n, res.err)
	}
	const n = 2*websocket.DefaultResumeBuffer + 1
	sent, err := seededStream(conn, 1, n, nil)
	if err == nil {
		err = conn.(interface{ CloseWrite() error }).CloseWrite()
	}
	if err != nil {
		t.Fatal(err)
	}
	select {
	case up := <-got:
		if up.err != nil || up.n != n || up.sum != sent {
			t.Fatalf("the target read %d of %d bytes (intact: %v): %v", up.n, n, up.sum == sent, up.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the target did not finish")
	}
}

// recordsTo is a slog handler that sends every record on ch, never
// blocking (ch must have room for what the test waits for).
type recordsTo chan slog.Record

func (h recordsTo) Enabled(context.Context, slog.Level) bool { return true }
func (h recordsTo) Handle(_ context.Context, r slog.Record) error {
	select {
	case h <- r:
	default:
	}
	return nil
}
func (h recordsTo) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordsTo) WithGroup(string) slog.Handler      { return h }

// attr returns the value of r's attribute key.
func attr(r slog.Record, key string) (v slog.Value) {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// metricValue is the value of the metric name with label result (if not
// empty) in m.
func metricValue(t *testing.T, m *websocket.Metrics, name, result string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			ok := result == ""
			for _, l := range mt.GetLabel() {
				ok = ok || l.GetName() == "result" && l.GetValue() == result
			}
			if !ok {
				continue
			}
			if g := mt.GetGauge(); g != nil {
				return g.GetValue()
			}
			return mt.GetCounter().GetValue()
		}
	}
	return 0
}

// TestResumeGraceExpires: a partition longer than the server's grace ends
// the tunnel for good on both sides, with the typed error, within a
// second of the grace: the application's conn fails with a
// *dialer.ResumeError (ProxySocket; ProxyPort's local conn is reset and
// the stream's log line has it), never a clean end of stream; the server
// ends the target, counts the expiry and has no tunnel left.
func TestResumeGraceExpires(t *testing.T) {
	t.Parallel()
	const grace = time.Second
	tune := websocket.Tuning{KeepAlive: 50 * time.Millisecond, DeadPeerTimeout: 300 * time.Millisecond}
	for _, via := range []string{"ProxySocket", "ProxyPort"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			metrics := websocket.NewMetrics()
			serverLog := make(recordsTo, 64)
			srv := NewServer(t, WithServer(func(s *websocket.Server) {
				s.Tuning, s.ResumeGrace, s.Metrics, s.Logger = tune, grace, metrics, slog.New(serverLog)
			}))
			targets := echoSprite(t, srv)
			d := srv.Dialer()
			d.Tuning = tune
			clientLog := make(recordsTo, 64)
			client := srv.Client(proxy.WithDialer(d), proxy.WithLogger(slog.New(clientLog))).Sprite("echo")
			ctx := ctxFor(t)
			var conn net.Conn
			var ps *proxy.ProxySession
			var err error
			if via == "ProxySocket" {
				conn, err = client.ProxySocket(ctx, "tcp", "localhost:7")
			} else {
				if ps, err = client.ProxyPort(ctx, 0, 7); err == nil {
					defer ps.Close()
					conn, err = srv.DialLocal(ctx, ps.LocalPort)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			echoOnce(t, conn)

			start := time.Now()
			// Both sides notice the drop within DeadPeerTimeout, then wait
			// the grace; a second more is the bound.
			limit := start.Add(tune.DeadPeerTimeout + grace + time.Second)
			if err := srv.Partition(time.Hour); err != nil {
				t.Fatal(err)
			}
			defer srv.Partition(0)
			conn.SetReadDeadline(limit)
			_, err = io.ReadAll(conn)
			t.Logf("the application's read ended after %v: %v", time.Since(start), err)
			var re *dialer.ResumeError
			final := errors.As(err, &re)
			switch {
			case err == nil:
				t.Fatal("the application's read ended with a clean EOF, want the tunnel's error")
			case !final && errors.Is(err, os.ErrDeadlineExceeded):
				t.Fatalf("the application's read still blocked %v after the partition began (grace %v)", time.Since(start), grace)
			}
			if via == "ProxySocket" {
				if !final || re.Reason != dialer.ResumeGraceExpired || !errors.Is(err, dialer.ErrTunnelClosed) {
					t.Errorf("ProxySocket's read: %v, want a *dialer.ResumeError (%q) matching dialer.ErrTunnelClosed", err, dialer.ResumeGraceExpired)
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("ProxySocket's read: %v matches os.ErrDeadlineExceeded: an application that reads again after its own deadline would read this end forever", err)
				}
			}

			// The server ends the target once the grace is over.
			select {
			case <-targets:
			case <-time.After(time.Until(limit) + time.Second):
				t.Fatalf("the target still open %v after the partition began", time.Since(start))
			}
			closed := false
			for !closed {
				var r slog.Record
				select {
				case r = <-serverLog:
				case <-time.After(10 * time.Second):
					t.Fatal("no tunnel closed line from the server")
				}
				if r.Message != "tunnel closed" {
					continue
				}
				closed = true
				e, _ := attr(r, "err").Any().(error)
				var re *dialer.ResumeError
				if !errors.As(e, &re) || re.Reason != dialer.ResumeGraceExpired {
					t.Errorf("the server's tunnel closed with %v, want a *dialer.ResumeError (%q)", e, dialer.ResumeGraceExpired)
				}
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := srv.Tunnels.Shutdown(sctx); err != nil {
				t.Errorf("Shutdown: %v: a tunnel still live after its grace", err)
			}
			if n := srv.Tunnels.Live(); n != 0 {
				t.Errorf("Live() = %d after the grace, want 0", n)
			}
			if n := metricValue(t, metrics, "spriteproxy_resumes_total", "expired"); n != 1 {
				t.Errorf("spriteproxy_resumes_total{result=\"expired\"} = %v, want 1", n)
			}
			if n := metricValue(t, metrics, "spriteproxy_tunnels_detached", ""); n != 0 {
				t.Errorf("spriteproxy_tunnels_detached = %v, want 0", n)
			}
			if n := metricValue(t, metrics, "spriteproxy_tunnels_open", ""); n != 0 {
				t.Errorf("spriteproxy_tunnels_open = %v, want 0", n)
			}

			if ps != nil {
				conn.Close()
				ps.Close() // waits for the stream's goroutines: its line is logged
				found := false
				for len(clientLog) > 0 {
					r := <-clientLog
					if r.Message != "stream closed" {
						continue
					}
					found = true
					e, _ := attr(r, "err").Any().(error)
					var re *dialer.ResumeError
					if !errors.As(e, &re) {
						t.Errorf("the stream closed with %v, want a *dialer.ResumeError", e)
					}
				}
				if !found {
					t.Error("no stream closed line")
				}
			}
		})
	}
}
