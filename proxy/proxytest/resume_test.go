package proxytest

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
			if check != nil && !t.Failed() {
				check(t, srv, conn, ps)
			}
		})
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
	}, nil, nil)
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
	}, nil, nil)
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
