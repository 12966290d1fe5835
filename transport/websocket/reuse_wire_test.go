package websocket

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

type rawReuseClient struct {
	t    *testing.T
	conn net.Conn
}

// handshake sends a first message for port with half_close and reuse, and
// checks that the reply is connected with both.
func (r *rawReuseClient) handshake(port int) {
	r.t.Helper()
	req := fmt.Sprintf(`{"host":"127.0.0.1","port":%d,"features":["half_close","reuse"]}`, port)
	if err := wsutil.WriteClientText(r.conn, []byte(req)); err != nil {
		r.t.Fatal(err)
	}
	msg, op := r.next()
	var rep wire.Reply
	if op != ws.OpText || json.Unmarshal(msg, &rep) != nil || rep.Status != wire.StatusConnected {
		r.t.Fatalf("reply %q (opcode %v), want connected", msg, op)
	}
	if !wire.Has(rep.Features, wire.FeatureHalfClose) || !wire.Has(rep.Features, wire.FeatureReuse) {
		r.t.Fatalf("reply %s, want half_close and reuse", msg)
	}
}

// next reads the next data message, answering control frames.
func (r *rawReuseClient) next() ([]byte, ws.OpCode) {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, op, err := wsutil.ReadServerData(r.conn)
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return msg, op
}

// echo sends p and reads it back.
func (r *rawReuseClient) echo(p []byte) {
	r.t.Helper()
	if err := wsutil.WriteClientBinary(r.conn, p); err != nil {
		r.t.Fatal(err)
	}
	var got []byte
	for len(got) < len(p) {
		msg, op := r.next()
		if op != ws.OpBinary {
			r.t.Fatalf("got a %v message %q in the echo", op, msg)
		}
		got = append(got, msg...)
	}
	if !bytes.Equal(got, p) {
		r.t.Fatalf("echo %q, want %q", got, p)
	}
}

// end sends end and reads the server's.
func (r *rawReuseClient) end() {
	r.t.Helper()
	if err := wsutil.WriteClientText(r.conn, wire.EndMessage); err != nil {
		r.t.Fatal(err)
	}
	msg, op := r.next()
	ctl, err := wire.ParseControl(msg)
	if op != ws.OpText || err != nil || ctl.Type != wire.ControlEnd {
		r.t.Fatalf("after end: %v message %q, want the server's end", op, msg)
	}
}

// TestReuseRawProtocol drives the server by hand: two streams on one
// connection, each handshake, data, end; then a binary frame where the
// next handshake is due, which the server refuses without hanging.
func TestReuseRawProtocol(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)

			t.Run("two streams", func(t *testing.T) {
				r := &rawReuseClient{t: t, conn: sdkDial(t, ts.URL, "s")}
				r.handshake(tg.port)
				r.echo([]byte("first stream"))
				r.end()
				r.handshake(tg.port) // at once: no wait after the end
				r.echo([]byte("second stream"))
				r.end()
				r.handshake(tg.port)
				// A close frame ends the connection as ever.
				if err := wsutil.WriteClientMessage(r.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "")); err != nil {
					t.Fatal(err)
				}
				r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, err := wsutil.ReadServerData(r.conn)
				var closed wsutil.ClosedError
				if !errors.As(err, &closed) || closed.Code != ws.StatusNormalClosure {
					t.Fatalf("after close: %v, want the server's close 1000", err)
				}
			})
			t.Run("binary instead of handshake", func(t *testing.T) {
				r := &rawReuseClient{t: t, conn: sdkDial(t, ts.URL, "s")}
				r.handshake(tg.port)
				r.echo([]byte("data"))
				r.end()
				if err := wsutil.WriteClientBinary(r.conn, []byte("not a handshake")); err != nil {
					t.Fatal(err)
				}
				r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				msg, op, err := wsutil.ReadServerData(r.conn)
				if err == nil {
					var rep wire.Reply
					if op != ws.OpText || json.Unmarshal(msg, &rep) != nil || rep.Status != wire.StatusError || rep.Error != dialer.CodeBadRequest {
						t.Fatalf("got %v message %q, want a bad_request reply or the connection closed", op, msg)
					}
					_, _, err = wsutil.ReadServerData(r.conn)
				}
				var ne net.Error
				if err == nil || errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("after the refusal: %v, want the connection closed", err)
				}
			})
		})
	}
}

func reuseRawServer(t *testing.T, silent bool, upgrades *atomic.Int32, errs chan<- string) string {
	return rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer conn.Close()
		upgrades.Add(1)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		report := func(format string, args ...any) {
			select {
			case errs <- fmt.Sprintf(format, args...):
			default:
			}
		}
		for stream := 0; ; stream++ {
			msg, err := wsutil.ReadClientText(conn)
			if err != nil {
				return // the client closed its idle connection
			}
			req, err := wire.ParseRequest(msg)
			if err != nil || !wire.Has(req.Features, wire.FeatureReuse) || !wire.Has(req.Features, wire.FeatureHalfClose) {
				report("stream %d: first message %s, %v", stream, msg, err)
				return
			}
			reply := ws.MustCompileFrame(ws.NewTextFrame(wire.Marshal(wire.Reply{
				Status: wire.StatusConnected, Target: "127.0.0.1:9",
				Features: []string{wire.FeatureHalfClose, wire.FeatureReuse},
			})))
			if stream > 0 && !silent {
				reply = append([]byte{0x00}, reply...) // the rest of the ping
			}
			if _, err := conn.Write(reply); err != nil {
				return
			}
			for {
				data, op, err := wsutil.ReadClientData(conn)
				if err != nil {
					report("stream %d: read %v before the client's end", stream, err)
					return
				}
				if op == ws.OpBinary {
					wsutil.WriteServerBinary(conn, data)
					continue
				}
				if ctl, err := wire.ParseControl(data); err == nil && ctl.Type == wire.ControlEnd {
					break
				}
			}
			if silent {
				// Never answer: the client must give up after its close
				// timeout and close the connection.
				if _, _, err := wsutil.ReadClientData(conn); err == nil {
					report("the client sent data after its end")
				}
				return
			}
			end := ws.MustCompileFrame(ws.NewTextFrame(wire.EndMessage))
			if _, err := conn.Write(append(end, 0x89)); err != nil { // end, then a ping's first byte
				return
			}
		}
	})
}

// TestReuseClientProtocol checks the client's side of the wire against a
// server written by hand: the end exchange, the next handshake on the same
// connection, bytes read past the end kept for the next stream, and a
// server that never answers end.
func TestReuseClientProtocol(t *testing.T) {
	t.Parallel()
	t.Run("streams on one connection", func(t *testing.T) {
		t.Parallel()
		var upgrades atomic.Int32
		errs := make(chan string, 1)
		d := &Dialer{BaseURL: reuseRawServer(t, false, &upgrades, errs), Token: testToken}
		t.Cleanup(d.CloseIdleConnections)
		var first net.Conn
		for i := range 4 {
			c := dialTo(t, d, "s", "localhost:9")
			if !c.Reuse() {
				t.Fatal("Reuse() = false")
			}
			if i == 0 {
				first = c.NetConn()
			} else if c.NetConn() != first {
				t.Fatalf("tunnel %d is on a new connection", i)
			}
			roundTrip(t, c, payload(i, 3000))
			closeReused(t, d, c, 1)
		}
		if n := upgrades.Load(); n != 1 {
			t.Fatalf("%d upgrades for 4 tunnels, want 1", n)
		}
		select {
		case e := <-errs:
			t.Fatal(e)
		default:
		}
	})
	t.Run("server never answers end", func(t *testing.T) {
		t.Parallel()
		var upgrades atomic.Int32
		errs := make(chan string, 1)
		const timeout = 100 * time.Millisecond
		d := &Dialer{BaseURL: reuseRawServer(t, true, &upgrades, errs), Token: testToken, Tuning: Tuning{CloseTimeout: timeout}}
		t.Cleanup(d.CloseIdleConnections)
		c := dialTo(t, d, "s", "localhost:9")
		roundTrip(t, c, payload(0, 10))
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if el := time.Since(start); el < timeout || el > 2*time.Second {
			t.Errorf("Close took %v, want the close timeout (%v)", el, timeout)
		}
		if n := d.IdleConnections(); n != 0 {
			t.Fatalf("%d idle connections after an end never answered", n)
		}
		c = dialTo(t, d, "s", "localhost:9")
		roundTrip(t, c, payload(1, 10))
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if n := d.IdleConnections(); n != 0 {
			t.Fatalf("%d idle connections after a second end never answered", n)
		}
		if n := upgrades.Load(); n != 2 {
			t.Fatalf("%d upgrades, want 2 (a fresh connection after the failed end)", n)
		}
		select {
		case e := <-errs:
			t.Fatal(e)
		default:
		}
	})
}

// TestReuseRawClientSilent: a client that never answers the server's close
// (the server cut the stream: its target reset) has its connection closed
// after the server's close timeout.
func TestReuseRawClientSilent(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			reset := startTarget(t, resetTarget)
			srv := newServer()
			srv.Tuning.CloseTimeout = 100 * time.Millisecond
			ts := startServerMode(t, srv, false, m.direct)
			r := &rawReuseClient{t: t, conn: sdkDial(t, ts.URL, "s")}
			r.handshake(reset.port)
			if err := wsutil.WriteClientBinary(r.conn, []byte("x")); err != nil {
				t.Fatal(err)
			}
			r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err := wsutil.ReadServerData(r.conn)
			var ce wsutil.ClosedError
			if !errors.As(err, &ce) || ce.Code != closeTargetReset {
				t.Fatalf("after the target's reset: %v, want close %d", err, closeTargetReset)
			}
			start := time.Now()
			buf := make([]byte, 64)
			for err == nil || !isTimeout(err) && err != io.EOF && !isReset(err) {
				_, err = r.conn.Read(buf)
			}
			if isTimeout(err) {
				t.Fatalf("after the server's close: %v, want the connection closed", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("the server took %v to give up", el)
			}
			waitFor(t, "Live() to drop to 0", func() bool { return ts.Live() == 0 })
		})
	}
}
