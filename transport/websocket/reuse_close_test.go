package websocket

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Regression tests from a review of the reuse extension: how a tunnel's end
// meets a context that ends, a Read running in another goroutine, and a
// slow target.

// cancelOnReply cancels its context as the server's error reply is read,
// as if ctx ended at that moment.
type cancelOnReply struct {
	net.Conn
	cancel context.CancelFunc
}

func (c *cancelOnReply) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if bytes.Contains(p[:n], []byte(`"status":"error"`)) {
		c.cancel()
	}
	return n, err
}

// TestReuseCtxEndsAtErrorReply: a target error reply lists reuse, but ctx
// ends as it arrives. The connection is then not kept (its ctx deadline may
// still be on its way to it): the pool never holds a closed or doomed
// connection, and the next dial works.
func TestReuseCtxEndsAtErrorReply(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	refused := "127.0.0.1:" + itoa(closedPort(t))
	ts := startServer(t, newServer(), false)
	d := reuseDialer(t, ts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fresh atomic.Int32
	d.NetDial = func(dctx context.Context, network, addr string) (net.Conn, error) {
		fresh.Add(1)
		nc, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		if err != nil || fresh.Load() > 1 {
			return nc, err
		}
		return &cancelOnReply{Conn: nc, cancel: cancel}, nil
	}
	_, err := d.DialSprite(ctx, "s", "tcp", refused)
	mustIs(t, err, context.Canceled)
	if n := d.IdleConnections(); n != 0 {
		t.Fatalf("%d idle connections kept from a dial whose ctx ended", n)
	}
	c := dialTo(t, d, "s", tg.addr())
	roundTrip(t, c, payload(1, 100))
	closeReused(t, d, c, 1)
}

// TestReuseDeadlineNotRetried: ctx's deadline passing while the server
// dials a slow target on a reused connection is that dial's timeout, not a
// connection found closed: the error is ctx's, no new connection is
// dialed, and the other idle connections stay.
func TestReuseDeadlineNotRetried(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	var dialing atomic.Value // *expiring: the ctx of the round's slow dial
	srv := newServer()
	srv.DialTimeout = time.Second
	srv.Sprites = ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
		return dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != tg.addr() {
				if e, ok := dialing.Load().(*expiring); ok {
					e.expire() // the deadline passes while the server dials
				}
				<-ctx.Done() // a target that never answers
				return nil, ctx.Err()
			}
			var nd net.Dialer
			return nd.DialContext(ctx, network, addr)
		}), nil
	})
	ts := startServer(t, srv, false)
	d := reuseDialer(t, ts)
	var fresh atomic.Int32
	d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		fresh.Add(1)
		var nd net.Dialer
		return nd.DialContext(ctx, network, addr)
	}
	for round := range 10 {
		// Three tunnels open at once leave three idle connections.
		var open []*Conn
		for range 3 {
			open = append(open, dialTo(t, d, "s", tg.addr()))
		}
		for i, c := range open {
			closeReused(t, d, c, i+1)
		}
		before := fresh.Load()
		// The deadline passes once the server is dialing the slow target
		// (a fixed 2 ms could pass before the pool was even looked at).
		ctx := newExpiring()
		dialing.Store(ctx)
		_, err := d.DialSprite(ctx, "s", "tcp", "127.0.0.2:9")
		mustIs(t, err, context.DeadlineExceeded)
		if n := fresh.Load() - before; n != 0 {
			t.Fatalf("round %d: %d new connections dialed after a ctx deadline", round, n)
		}
		if n := d.IdleConnections(); n != 2 {
			t.Fatalf("round %d: %d idle connections left, want the other 2", round, n)
		}
	}
}

// TestReuseCloseAfterReaderEOF: a goroutine reads the stream to its end
// (the echo's eof) while another writes, half-closes and closes. A reader
// that returns at the eof leaves the server's end unread; Close then reads
// it itself: it returns at once, and the connection is kept.
func TestReuseCloseAfterReaderEOF(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			for i := range 5 {
				c := dialTo(t, d, "s", tg.addr())
				got := make(chan []byte, 1)
				go func() {
					b, _ := io.ReadAll(c)
					got <- b
				}()
				waitBlockedRead(t, c)
				p := payload(i, 1000)
				c.Write(p)
				c.CloseWrite()
				start := time.Now()
				closeReused(t, d, c, 1)
				if el := time.Since(start); el > time.Second {
					t.Fatalf("round %d: Close took %v: it waited for a Read that had returned", i, el)
				}
				// What the reader had not read when Close began is dropped,
				// as on any conn closed under a reader; the rest is whole.
				if b := recv(t, got, "the reader to return"); !bytes.HasPrefix(p, b) {
					t.Fatalf("round %d: the reader got %d bytes that are not the echo's start", i, len(b))
				}
			}
		})
	}
}

// TestReuseCopyThenClose: io.Copy from the tunnel in one goroutine (CopyTo,
// ending at the echo's eof) and Close in another: under -race, the state
// Close's drain writes is not read by the copy without the read lock.
func TestReuseCopyThenClose(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	d := reuseDialer(t, ts)
	for range 5 {
		c := dialTo(t, d, "s", tg.addr())
		copied := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(io.Discard, c)
			copied <- n
		}()
		c.Write([]byte("hello"))
		c.CloseWrite()
		c.Close()
		if n := <-copied; n > 5 {
			t.Fatalf("copied %d bytes of a 5-byte echo", n)
		}
	}
}

// expiring is a context whose deadline passes when expire is called: its
// Err is then context.DeadlineExceeded, as a timer's would be.
type expiring struct {
	context.Context
	once sync.Once
	done chan struct{}
	dl   time.Time
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{}), dl: time.Now().Add(time.Hour)}
}

func (e *expiring) expire() { e.once.Do(func() { close(e.done) }) }

func (e *expiring) Done() <-chan struct{} { return e.done }

func (e *expiring) Deadline() (time.Time, bool) { return e.dl, true }

func (e *expiring) Err() error {
	select {
	case <-e.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}
