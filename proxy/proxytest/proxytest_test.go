package proxytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"github.com/spriteproxy/spriteproxy/proxy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// upper answers each request (read until EOF) in upper case, then ends its
// write side: a service that needs half-close.
func upper(c net.Conn) {
	req, _ := io.ReadAll(c)
	c.Write(bytes.ToUpper(req))
	c.(interface{ CloseWrite() error }).CloseWrite()
	io.Copy(io.Discard, c)
}

// sockets counts the process's OS sockets.
func sockets(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestNoOSSockets proves the in-process chain binds no OS port: a full
// ProxySocket and ProxyPort round trip opens no socket at all. It does not
// run in parallel, so no other test's sockets are counted.
func TestNoOSSockets(t *testing.T) {
	before := sockets(t)
	func() {
		srv := NewServer(t)
		ln, err := srv.Sprite("db").Listen("tcp", "127.0.0.1:5432")
		if err != nil {
			t.Fatal(err)
		}
		testnet.Serve(t, ln, upper)
		ctx := ctxFor(t)
		sprite := srv.Client().Sprite("db")

		conn, err := sprite.ProxySocket(ctx, "tcp", "localhost:5432")
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("socket"))
		conn.(interface{ CloseWrite() error }).CloseWrite()
		if got, err := io.ReadAll(conn); err != nil || string(got) != "SOCKET" {
			t.Fatalf("ProxySocket: %q, %v", got, err)
		}
		conn.Close()

		ps, err := sprite.ProxyPort(ctx, 0, 5432)
		if err != nil {
			t.Fatal(err)
		}
		defer ps.Close()
		local, err := srv.DialLocal(ctx, ps.LocalPort)
		if err != nil {
			t.Fatal(err)
		}
		local.Write([]byte("port"))
		local.(interface{ CloseWrite() error }).CloseWrite()
		if got, err := io.ReadAll(local); err != nil || string(got) != "PORT" {
			t.Fatalf("ProxyPort: %q, %v", got, err)
		}
		local.Close()
		if after := sockets(t); after != before {
			t.Fatalf("%d OS sockets during the round trips, %d before", after, before)
		}
	}()
}

// TestHalfCloseBothWays through the netstack chain: the client ends first
// (the service reads to EOF), and the service ends first (the client reads
// the banner to EOF, then still writes).
func TestHalfCloseBothWays(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	sprite := srv.Sprite("svc")
	ln1, _ := sprite.Listen("tcp", ":1")
	testnet.Serve(t, ln1, upper)
	got := make(chan []byte, 1)
	ln2, _ := sprite.Listen("tcp", ":2")
	testnet.Serve(t, ln2, func(c net.Conn) {
		c.Write([]byte("banner"))
		c.(interface{ CloseWrite() error }).CloseWrite()
		all, _ := io.ReadAll(c)
		got <- all
	})
	ctx := ctxFor(t)
	s := srv.Client().Sprite("svc")

	big := bytes.Repeat([]byte("abc"), 1<<20)
	c1, err := s.ProxySocket(ctx, "tcp", "localhost:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	go func() {
		c1.Write(big)
		c1.(interface{ CloseWrite() error }).CloseWrite()
	}()
	reply, err := io.ReadAll(c1)
	if err != nil || !bytes.Equal(reply, bytes.ToUpper(big)) {
		t.Fatalf("client-first: %d bytes, %v", len(reply), err)
	}

	c2, err := s.ProxySocket(ctx, "tcp", "localhost:2")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	banner, err := io.ReadAll(c2)
	if err != nil || string(banner) != "banner" {
		t.Fatalf("service-first: %q, %v", banner, err)
	}
	c2.Write(big)
	c2.(interface{ CloseWrite() error }).CloseWrite()
	if all := <-got; !bytes.Equal(all, big) {
		t.Fatalf("service read %d bytes after its FIN, want %d", len(all), len(big))
	}
}

// TestManyParallel: servers in parallel tests do not interfere.
func TestManyParallel(t *testing.T) {
	t.Parallel()
	for i := range 12 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			srv := NewServer(t)
			ln, _ := srv.Sprite("app").Listen("tcp", ":8080") // the same port everywhere
			testnet.Serve(t, ln, upper)
			ps, err := srv.Client().Sprite("app").ProxyPort(ctxFor(t), 8080, 8080)
			if err != nil {
				t.Fatal(err)
			}
			defer ps.Close()
			c, err := srv.DialLocal(ctxFor(t), 8080)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := fmt.Sprintf("server %d", i)
			c.Write([]byte(msg))
			c.(interface{ CloseWrite() error }).CloseWrite()
			if got, _ := io.ReadAll(c); string(got) != strings.ToUpper(msg) {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	srv.Sprite("known")
	ctx := ctxFor(t)
	_, err := srv.Client().Sprite("unknown").ProxySocket(ctx, "tcp", "localhost:1")
	if !errors.Is(err, dialer.ErrUnknownSprite) {
		t.Errorf("unknown sprite: %v", err)
	}
	_, err = srv.Client().Sprite("known").ProxySocket(ctx, "tcp", "localhost:1")
	if !errors.Is(err, dialer.ErrTargetRefused) {
		t.Errorf("nothing listening: %v", err)
	}
	bad := proxy.New("wrong", proxy.WithBaseURL(srv.URL), proxy.WithTLSConfig(srv.ClientTLS()), proxy.WithNetDial(srv.Local().DialContext))
	_, err = bad.Sprite("known").ProxySocket(ctx, "tcp", "localhost:1")
	if !errors.Is(err, dialer.ErrUnauthorized) {
		t.Errorf("bad token: %v", err)
	}
}

// TestLoopbackTCP serves on the OS's loopback, reachable by any tool.
func TestLoopbackTCP(t *testing.T) {
	t.Parallel()
	srv := NewServer(t, WithLoopbackTCP(), WithoutTLS())
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("URL %s is not on loopback", srv.URL)
	}
	ln, _ := srv.Sprite("db").Listen("tcp", ":5432")
	testnet.Serve(t, ln, upper)
	ps, err := srv.Client().Sprite("db").ProxyPort(ctxFor(t), 0, 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	c, err := net.Dial("tcp", ps.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("os"))
	c.(*net.TCPConn).CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "OS" {
		t.Fatalf("got %q", got)
	}
}

// TestReuse: through the proxy API, a ProxySocket closed cleanly leaves its
// connection for the next one to the same sprite (the reuse extension), and
// Client.CloseIdleConnections lets it go.
func TestReuse(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	ln, _ := srv.Sprite("svc").Listen("tcp", ":1")
	testnet.Serve(t, ln, upper)
	ctx := ctxFor(t)
	client := srv.Client()
	s := client.Sprite("svc")

	under := func(msg string) net.Conn {
		t.Helper()
		c, err := s.ProxySocket(ctx, "tcp", "localhost:1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(msg))
		c.(interface{ CloseWrite() error }).CloseWrite()
		if got, err := io.ReadAll(c); err != nil || string(got) != strings.ToUpper(msg) {
			t.Fatalf("%q came back as %q, %v", msg, got, err)
		}
		return c.(interface{ NetConn() net.Conn }).NetConn()
	}
	first := under("one")
	if second := under("two"); second != first {
		t.Fatal("the second tunnel did not reuse the first one's connection")
	}
	client.CloseIdleConnections()
	if third := under("three"); third == first {
		t.Fatal("CloseIdleConnections left the connection for the third tunnel")
	}
	client.CloseIdleConnections()
}
