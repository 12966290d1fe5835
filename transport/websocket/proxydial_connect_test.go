package websocket

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// TestProxyStallIsContextDeadline: a proxy that takes the CONNECT
// and never answers. The dial's ctx has a deadline; dialConnect copies it
// onto the socket, so the read usually times out (os.ErrDeadlineExceeded)
// before ctx's own timer has fired, and then stop() is true and ctx.Err()
// is still nil: the error is a *ProxyError wrapping an "i/o timeout", not
// context.DeadlineExceeded. The direct path (client.go, ctxExpired) maps
// exactly this case to context.DeadlineExceeded; the proxy path did not
// (found by review: 8–13 of 20 dials failed before the fix).
func TestProxyStallIsContextDeadline(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newServer(), false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		var b [1]byte
		c.Read(b[:]) // stall until the client gives up
	})
	const rounds = 20
	bad := 0
	var last error
	for range rounds {
		d := ts.dialer()
		d.Proxy = fixedProxy("http://" + ln.Addr().String())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err := d.DialSprite(ctx, "box", "tcp", "localhost:1")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			bad++
			last = err
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d dials through a stalled proxy did not match context.DeadlineExceeded; last: %v", bad, rounds, last)
	}
}

// startRelayProxy is an HTTP CONNECT proxy on loopback that answers every
// CONNECT with head (the status line and header fields, without the blank
// line) and then relays bytes both ways to the address asked for.
func startRelayProxy(t *testing.T, head string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		up, err := net.Dial("tcp", req.Host)
		if err != nil {
			fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			return
		}
		defer up.Close()
		if _, err := io.WriteString(c, head+"\r\n\r\n"); err != nil {
			return
		}
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			io.Copy(up, br) // br: nothing of the client's is lost
			up.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(c, up)
		c.Close() // ends the copy above, which the handler waits for
		<-sent
	})
	return ln.Addr().String()
}

// TestProxyConnect200BodyHeadersIgnored: RFC 9110 §9.3.6, "A client
// MUST ignore any Content-Length or Transfer-Encoding header fields
// received in a successful response to CONNECT" (real proxies send them:
// curl/curl#1317 is a proxy answering "200 CONNECT OK" with
// Transfer-Encoding: chunked). connectExchange handed the 200 to
// http.ReadResponse and then called resp.Body.Close(), which for such a
// response read a body out of the tunnel: the server never speaks first,
// so the dial hung until ctx ended and failed (found by review; both
// subtests fail before the fix).
func TestProxyConnect200BodyHeadersIgnored(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	for name, head := range map[string]string{
		"chunked":          "HTTP/1.1 200 Connection established\r\nTransfer-Encoding: chunked",
		"content-length-5": "HTTP/1.1 200 Connection established\r\nContent-Length: 5",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := ts.dialer()
			d.Proxy = fixedProxy("http://" + startRelayProxy(t, head))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := d.DialSprite(ctx, "box", "tcp", tg.addr())
			if err != nil {
				t.Fatalf("dial through a proxy whose 200 carries %q: %v", head, err)
			}
			c.Close()
		})
	}
}
