package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// The names the SOCKS tests' sprite knows: one service by name, and one
// name the policy allows but the sprite cannot resolve.
const (
	socksServiceName = "svc.internal"
	socksNowhere     = "nowhere.internal"
)

// socksSprite is the sprite network of the SOCKS tests: a spriteNet whose
// socksNowhere does not resolve, as a sprite's resolver would answer.
type socksSprite struct{ *spriteNet }

func (n socksSprite) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if host, _, _ := net.SplitHostPort(address); host == socksNowhere {
		n.mu.Lock()
		n.dialed = append(n.dialed, address)
		n.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
	}
	return n.spriteNet.DialContext(ctx, network, address)
}

// socksFixture is a SOCKS5 server on loopback whose tunnels go through an
// in-process WebSocket server into testSprite, which runs an echo service
// on port 7.
type socksFixture struct {
	addr   string // the SOCKS5 listener
	net    *spriteNet
	socks  *proxy.SOCKS5
	served chan error // Serve's result
}

func newSOCKSFixture(t *testing.T) *socksFixture {
	t.Helper()
	n := newSpriteNet()
	var rules []websocket.Rule
	for _, r := range []string{"fdf::/16", socksServiceName, socksNowhere} {
		rule, err := websocket.ParseRule(r)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, rule)
	}
	ws := &websocket.Server{
		Auth: websocket.StaticToken(testToken),
		Sprites: websocket.ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
			if name != testSprite {
				return nil, fmt.Errorf("%w: %q", dialer.ErrUnknownSprite, name)
			}
			return socksSprite{n}, nil
		}),
		Policy: &websocket.Policy{Allow: rules},
	}
	hs := httptest.NewUnstartedServer(ws)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.Start()
	svc := startService(echo)
	n.claim(7, svc.Addr())

	client := proxy.New(testToken, proxy.WithBaseURL(hs.URL), proxy.WithProxy(websocket.NoProxy))
	s := client.Sprite(testSprite).SOCKS5()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &socksFixture{addr: ln.Addr().String(), net: n, socks: s, served: make(chan error, 1)}
	go func() { f.served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-f.served; !errors.Is(err, proxy.ErrSOCKS5Closed) {
			t.Errorf("Serve returned %v, want ErrSOCKS5Closed", err)
		}
		client.CloseIdleConnections()
		ws.Close()
		hs.Close()
		svc.Close()
	})
	return f
}

// dial connects to addr inside the sprite through the fixture's SOCKS5
// server with golang.org/x/net/proxy's client.
func (f *socksFixture) dial(t *testing.T, addr string) (net.Conn, error) {
	t.Helper()
	c, _, err := f.dialTCP(t, addr)
	return c, err
}

// dialTCP is dial that also returns the TCP conn under the SOCKS client's
// conn, which x/net does not expose, for CloseWrite.
func (f *socksFixture) dialTCP(t *testing.T, addr string) (net.Conn, *net.TCPConn, error) {
	t.Helper()
	var tcp *net.TCPConn
	direct := dialFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err == nil {
			tcp = c.(*net.TCPConn)
		}
		return c, err
	})
	d, err := xproxy.SOCKS5("tcp", f.addr, nil, direct)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.(xproxy.ContextDialer).DialContext(ctx, "tcp", addr)
	return c, tcp, err
}

// dialFunc is a dial function as an x/net/proxy forward dialer.
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

func (f dialFunc) Dial(network, address string) (net.Conn, error) {
	return f(context.Background(), network, address)
}

func (f dialFunc) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return f(ctx, network, address)
}

// TestSOCKS5Connect: a CONNECT by name, IPv4 or IPv6 reaches that address
// inside the sprite as the client gave it (a name is never resolved on the
// client's side), and bytes and end of stream pass both ways.
func TestSOCKS5Connect(t *testing.T) {
	t.Parallel()
	f := newSOCKSFixture(t)
	for _, addr := range []string{socksServiceName + ":7", "127.0.0.1:7", "[fdf::1]:7"} {
		conn, tcp, err := f.dialTCP(t, addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if got := f.net.lastDialed(); got != addr {
			t.Errorf("the sprite was asked for %q, want %q as given", got, addr)
		}
		msg := bytes.Repeat([]byte("socks "+addr), 4096)
		go func() {
			conn.Write(msg)
			tcp.CloseWrite()
		}()
		got, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: echo read %d bytes of %d, %v", addr, len(got), len(msg), err)
		}
	}
	st := f.socks.Stats()
	if st.Accepted != 3 || st.Failed != 0 {
		t.Errorf("stats %+v, want 3 accepted, 0 failed", st)
	}
}

// TestSOCKS5ReplyCodes: each typed error of a tunnel's dial reaches the
// SOCKS client as its RFC 1928 reply code (x/net's client names the code).
func TestSOCKS5ReplyCodes(t *testing.T) {
	t.Parallel()
	f := newSOCKSFixture(t)
	for _, tc := range []struct {
		addr, want string
	}{
		{"localhost:9", "connection refused"},                  // 0x05: nothing listens
		{"10.1.2.3:80", "connection not allowed by ruleset"},   // 0x02: the server's policy
		{socksNowhere + ":80", "host unreachable"},             // 0x04: the sprite cannot resolve it
		{"bad!host:80", "address type not supported"},          // 0x08: no host holds '!'
		{"a.internal:80", "connection not allowed by ruleset"}, // an unnamed name is refused unresolved
	} {
		conn, err := f.dial(t, tc.addr)
		if err == nil {
			conn.Close()
			t.Errorf("%s: connected, want %q", tc.addr, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.addr, err, tc.want)
		}
	}
	if st := f.socks.Stats(); st.Failed != 5 {
		t.Errorf("stats %+v, want 5 failed", st)
	}
}

// TestSOCKS5GeneralFailure: a failure that is not the target's (here an
// unknown sprite) is 0x01.
func TestSOCKS5GeneralFailure(t *testing.T) {
	t.Parallel()
	f := newSOCKSFixture(t)
	client := proxy.New(testToken, proxy.WithDialer(dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		return nil, dialer.OpError(network, sprite, address, dialer.ErrUnknownSprite)
	})))
	s := client.Sprite("other").SOCKS5()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	defer func() {
		s.Close()
		<-done
	}()
	f.addr = ln.Addr().String()
	_, err = f.dial(t, "localhost:7")
	if err == nil || !strings.Contains(err.Error(), "general SOCKS server failure") {
		t.Fatalf("dial: %v, want general SOCKS server failure", err)
	}
}

// TestSOCKS5BadRequests: what the server does not serve gets the RFC's
// answer, byte for byte, and the connection is closed.
func TestSOCKS5BadRequests(t *testing.T) {
	t.Parallel()
	f := newSOCKSFixture(t)
	for _, tc := range []struct {
		name      string
		send      []byte
		wantReply []byte
	}{
		{"version 4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil},
		{"no acceptable method", []byte{5, 1, 2}, []byte{5, 0xff}},
		{"BIND", []byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 7}, []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"UDP ASSOCIATE", []byte{5, 1, 0, 5, 3, 0, 1, 127, 0, 0, 1, 0, 7}, []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"address type 5", []byte{5, 1, 0, 5, 1, 0, 5, 127, 0, 0, 1, 0, 7}, []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"request version 4", []byte{5, 1, 0, 4, 1, 0, 1, 127, 0, 0, 1, 0, 7}, []byte{5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"port 0", append([]byte{5, 1, 0, 5, 1, 0, 3, 9}, "localhost\x00\x00"...), []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"cut short", []byte{5, 1, 0, 5, 1, 0, 3, 20, 'a'}, []byte{5, 0}},
	} {
		conn, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(tc.send); err != nil {
			t.Fatal(err)
		}
		if tc.name == "cut short" {
			conn.(*net.TCPConn).CloseWrite()
		}
		got, err := io.ReadAll(conn)
		conn.Close()
		if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Errorf("%s: read: %v", tc.name, err)
		}
		if !bytes.Equal(got, tc.wantReply) {
			t.Errorf("%s: got % x, want % x then the end", tc.name, got, tc.wantReply)
		}
	}
	if n := f.net.lastDialed(); n != "" {
		t.Errorf("a bad request dialed %q", n)
	}
}

// isReset reports a connection reset by the peer, which a close with
// unread bytes may cause.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

// TestSOCKS5CloseCutsTunnels: Close ends a tunnel in use (the client reads
// no clean end of stream... but an end) and waits for its goroutines; Serve
// then returns ErrSOCKS5Closed, and a second Serve refuses at once.
func TestSOCKS5CloseCutsTunnels(t *testing.T) {
	t.Parallel()
	f := newSOCKSFixture(t)
	conn, err := f.dial(t, "localhost:7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	f.socks.Close()
	if err := <-f.served; !errors.Is(err, proxy.ErrSOCKS5Closed) {
		t.Fatalf("Serve: %v", err)
	}
	f.served <- proxy.ErrSOCKS5Closed // for the cleanup
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("read %d bytes after Close", n)
	}
	if st := f.socks.Stats(); st.Active != 0 {
		t.Errorf("%d active after Close", st.Active)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.socks.Serve(ln); !errors.Is(err, proxy.ErrSOCKS5Closed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}
