package websocket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// recordingTarget is an echo target that keeps every byte it received.
type recordingTarget struct {
	*target
	mu  sync.Mutex
	got bytes.Buffer
}

func startRecordingTarget(t *testing.T) *recordingTarget {
	rt := &recordingTarget{}
	rt.target = startTarget(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			rt.mu.Lock()
			rt.got.Write(buf[:n])
			rt.mu.Unlock()
			if n > 0 {
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				c.(*net.TCPConn).CloseWrite()
				return
			}
		}
	})
	return rt
}

func (rt *recordingTarget) received() []byte {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return bytes.Clone(rt.got.Bytes())
}

// TestOptimisticRefusedTarget: optimistic data sent to a refused target is
// dropped with the connection, the refusal reaches the application as the
// typed error of its next Read and Write, and no byte reaches another
// target; on a reused connection whose server announced the extension, and
// on a fresh one after an upgrade response that announced it.
func TestOptimisticRefusedTarget(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		for _, fresh := range []bool{false, true} {
			name := m.name + "/reused"
			if fresh {
				name = m.name + "/fresh"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ts := startServerMode(t, newServer(), false, m.direct)
				tg := startRecordingTarget(t)
				d := ts.dialer()
				d.Optimistic = true
				defer d.CloseIdleConnections()
				ctx := testCtx(t)

				// The first tunnel learns that the server takes it (its
				// upgrade response says so) and leaves its connection idle.
				c, err := d.DialSprite(ctx, "s", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				if c.(*Conn).hs != nil {
					t.Fatal("the first tunnel went optimistic before the server said it takes it")
				}
				roundTrip(t, c, []byte("first"))
				c.Close()
				if fresh {
					d.CloseIdleConnections()
				} else if d.IdleConnections() != 1 {
					t.Fatalf("%d idle connections, want 1", d.IdleConnections())
				}

				refused := closedPort(t)
				c, err = d.DialSprite(ctx, "s", "tcp", net.JoinHostPort("127.0.0.1", itoa(refused)))
				if err != nil {
					t.Fatalf("optimistic dial: %v (the refusal belongs to the first Read or Write)", err)
				}
				if c.(*Conn).hs == nil {
					t.Fatal("the tunnel waited for the reply")
				}
				// This Write may return before the reply or with it.
				if _, err := c.Write([]byte("secret")); err != nil {
					mustIs(t, err, dialer.ErrTargetRefused)
				}
				_, err = c.Read(make([]byte, 8))
				mustIs(t, err, dialer.ErrTargetRefused)
				_, err = c.Write([]byte("more"))
				mustIs(t, err, dialer.ErrTargetRefused)
				var op *net.OpError
				if !errors.As(err, &op) || op.Op != "dial" {
					t.Errorf("error %v is not the dial's *net.OpError", err)
				}
				c.Close()

				// The next tunnel (a new connection: the refused one is
				// not kept) reaches the target with its own bytes only.
				c, err = d.DialSprite(ctx, "s", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				roundTrip(t, c, []byte("third"))
				c.Close()
				if got := tg.received(); bytes.Contains(got, []byte("secret")) || bytes.Contains(got, []byte("more")) {
					t.Errorf("the target got bytes meant for the refused one: %q", got)
				}
			})
		}
	}
}

// TestOptimisticDeliversHeldData: the bytes sent before the reply reach
// the target in order, with what follows, both ways of serving.
func TestOptimisticDeliversHeldData(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ts := startServerMode(t, newServer(), true, m.direct)
			tg := startTarget(t, echo)
			d := ts.dialer()
			d.Optimistic = true
			defer d.CloseIdleConnections()
			ctx := testCtx(t)
			for i := range 4 { // fresh, reused, fresh (wss), reused
				if i == 2 {
					d.CloseIdleConnections()
				}
				c, err := d.DialSprite(ctx, "s", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				if opt := c.(*Conn).hs != nil; opt != (i > 0) {
					t.Errorf("tunnel %d optimistic: %v", i, opt)
				}
				roundTrip(t, c, bytes.Repeat([]byte{byte('a' + i)}, 3000))
				if err := c.(*Conn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("after CloseWrite: %d, %v; want the echo's EOF", n, err)
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestOptimisticPlainServer: a server that does not announce the extension
// (an older spriteproxy, here one without half_close; or the hosted API)
// never gets optimistic data: the client waits for connected as today, and
// a refused target is DialSprite's error.
func TestOptimisticPlainServer(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.DisableHalfClose = true
	ts := startServer(t, srv, false)
	tg := startTarget(t, echo)
	d := ts.dialer()
	d.Optimistic = true
	ctx := testCtx(t)
	for range 2 {
		c, err := d.DialSprite(ctx, "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		if c.(*Conn).hs != nil {
			t.Fatal("optimistic towards a server that did not announce it")
		}
		roundTrip(t, c, []byte("x"))
		c.Close()
	}
	if !d.earlyData.Load() || d.optimistic.Load() {
		t.Fatalf("the upgrade response announced early_data %v, optimistic %v", d.earlyData.Load(), d.optimistic.Load())
	}
	_, err := d.DialSprite(ctx, "s", "tcp", net.JoinHostPort("127.0.0.1", itoa(closedPort(t))))
	mustIs(t, err, dialer.ErrTargetRefused)
}

// wireCounter counts the bytes written through it, and records how many
// had been when a Read first returned data after arm.
type wireCounter struct {
	net.Conn
	written atomic.Int64
	armed   atomic.Bool
	atRead  atomic.Int64
	onWrite func(total int64) // set before the writes it is to see
}

func (c *wireCounter) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	total := c.written.Add(int64(n))
	if c.onWrite != nil {
		c.onWrite(total)
	}
	return n, err
}

func (c *wireCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.armed.CompareAndSwap(true, false) {
		c.atRead.Store(c.written.Load())
	}
	return n, err
}

// TestOptimisticBounded: while the server dials, the client sends at most
// optimisticLimit bytes of data; the rest waits for the reply (the Write
// blocks: backpressure), and all of it arrives.
func TestOptimisticBounded(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	var dials atomic.Int32
	reached := make(chan struct{})
	srv := newServer()
	var nd net.Dialer
	srv.Sprites = ResolverFunc(func(context.Context, string) (dialer.ContextDialer, error) {
		return dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) == 2 {
				// The second tunnel's dial waits until the client has sent
				// all it may before the reply.
				select {
				case <-reached:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return nd.DialContext(ctx, network, addr)
		}), nil
	})
	ts := startServer(t, srv, false)
	var cc *wireCounter
	d := ts.dialer()
	d.Optimistic = true
	d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc = &wireCounter{Conn: nc}
		return cc, nil
	}
	defer d.CloseIdleConnections()
	ctx := testCtx(t)
	c, err := d.DialSprite(ctx, "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, []byte("warm"))
	c.Close()

	base := cc.written.Load()
	var once sync.Once
	cc.onWrite = func(total int64) {
		if total-base >= optimisticLimit {
			once.Do(func() { close(reached) })
		}
	}
	cc.armed.Store(true)
	c, err = d.DialSprite(ctx, "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		wrote <- err
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("the echo differs from what was sent")
	}
	// The request, then the bound's data in 16 frames at most (each with a
	// client header of at most 14 bytes).
	sent := cc.atRead.Load() - base
	if max := int64(optimisticLimit + 512 + 16*14); sent > max {
		t.Errorf("%d bytes went out before the reply, bound %d", sent, max)
	}
	c.Close()
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// TestOptimisticServerWire holds the server to §8 on the wire: data right
// behind an optimistic first message reaches the target once it is dialed,
// and is dropped with a refused one, whose error reply does not keep the
// connection (no reuse listed) and is followed by the close frame.
func TestOptimisticServerWire(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			first := func(port int) []byte {
				return []byte(`{"host":"127.0.0.1","port":` + itoa(port) + `,"features":["half_close","reuse","optimistic"]}`)
			}

			r := &rawReuseClient{t: t, conn: sdkDial(t, ts.URL, "s")}
			if err := wsutil.WriteClientText(r.conn, first(tg.port)); err != nil {
				t.Fatal(err)
			}
			if err := wsutil.WriteClientBinary(r.conn, []byte("held")); err != nil {
				t.Fatal(err)
			}
			msg, op := r.next()
			var rep wire.Reply
			if op != ws.OpText || json.Unmarshal(msg, &rep) != nil || rep.Status != wire.StatusConnected || !wire.Has(rep.Features, featureOptimistic) || wire.Has(rep.Features, wire.FeatureRawStream) {
				t.Fatalf("reply %q, want connected with optimistic", msg)
			}
			if msg, op := r.next(); op != ws.OpBinary || string(msg) != "held" {
				t.Fatalf("got %v %q, want the held bytes echoed", op, msg)
			}

			r = &rawReuseClient{t: t, conn: sdkDial(t, ts.URL, "s")}
			if err := wsutil.WriteClientText(r.conn, first(closedPort(t))); err != nil {
				t.Fatal(err)
			}
			if err := wsutil.WriteClientBinary(r.conn, []byte("dropped")); err != nil {
				t.Fatal(err)
			}
			msg, op = r.next()
			rep = wire.Reply{}
			if op != ws.OpText || json.Unmarshal(msg, &rep) != nil || rep.Status != wire.StatusError || rep.Error != dialer.CodeConnectionRefused || len(rep.Features) != 0 {
				t.Fatalf("reply %q, want connection_refused without features", msg)
			}
			// Then the close frame: the connection is not kept, and the
			// dropped bytes went nowhere.
			r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err := wsutil.ReadServerData(r.conn)
			var closed wsutil.ClosedError
			if !errors.As(err, &closed) || closed.Code != ws.StatusNormalClosure {
				t.Fatalf("after the refusal: %v, want the server's close 1000", err)
			}
		})
	}
}

// TestOptimisticUpgradeRefused: on a fresh connection the optimistic data
// goes out before the 101; an upgrade refused then (here the token, since
// revoked) is the typed error of the next Read and Write, and Close
// returns with the tunnel's goroutine ended.
func TestOptimisticUpgradeRefused(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			var revoked atomic.Bool
			srv := newServer()
			srv.Auth = AuthFunc(func(_ context.Context, token, _ string) error {
				if revoked.Load() {
					return dialer.ErrUnauthorized
				}
				return StaticToken(testToken).Authenticate(context.Background(), token, "")
			})
			ts := startServerMode(t, srv, false, m.direct)
			tg := startTarget(t, echo)
			d := ts.dialer()
			d.Optimistic = true
			d.DisableReuse = true
			ctx := testCtx(t)
			c, err := d.DialSprite(ctx, "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c, []byte("ok"))
			c.Close()

			revoked.Store(true)
			c, err = d.DialSprite(ctx, "s", "tcp", tg.addr())
			if err != nil {
				t.Fatalf("optimistic dial: %v", err)
			}
			if c.(*Conn).hs == nil {
				t.Fatal("the fresh tunnel waited for the upgrade response")
			}
			if _, err := c.Write([]byte("x")); err != nil {
				mustIs(t, err, dialer.ErrUnauthorized)
			}
			_, err = c.Read(make([]byte, 1))
			mustIs(t, err, dialer.ErrUnauthorized)
			_, err = c.Write([]byte("y"))
			mustIs(t, err, dialer.ErrUnauthorized)
			c.Close()
		})
	}
}
