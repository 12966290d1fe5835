package netstack_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/netstack"
)

// pair is a connected pair of conns plus what to close after.
type pair struct {
	client, server net.Conn
	close          func()
}

// netstackPair connects two hosts of a fresh Network.
func netstackPair(tb testing.TB) pair {
	tb.Helper()
	n := netstack.NewNetwork(nil)
	a, err := n.NewHost("a")
	if err != nil {
		tb.Fatal(err)
	}
	b, err := n.NewHost("b")
	if err != nil {
		tb.Fatal(err)
	}
	return connect(tb, func() (net.Listener, error) { return b.Listen("tcp", ":0") },
		func(port int) (net.Conn, error) {
			return a.DialContext(context.Background(), "tcp", fmt.Sprintf("b:%d", port))
		}, func() { n.Close() })
}

// tcpPair connects two OS loopback TCP sockets: the baseline.
func tcpPair(tb testing.TB) pair {
	tb.Helper()
	return connect(tb, func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") },
		func(port int) (net.Conn, error) { return net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)) },
		func() {})
}

func connect(tb testing.TB, listen func() (net.Listener, error), dial func(port int) (net.Conn, error), after func()) pair {
	tb.Helper()
	l, err := listen()
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			tb.Error(err)
		}
		accepted <- c
	}()
	c, err := dial(l.Addr().(*net.TCPAddr).Port)
	if err != nil {
		tb.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		tb.FailNow()
	}
	return pair{client: c, server: s, close: func() { c.Close(); s.Close(); after() }}
}

// BenchmarkBulk copies bytes one way over a connection, in chunks of each
// size, between two hosts of a Network and, as the baseline, over the OS's
// loopback TCP.
func BenchmarkBulk(b *testing.B) {
	for _, tr := range []struct {
		name string
		pair func(testing.TB) pair
	}{{"netstack", netstackPair}, {"tcp", tcpPair}} {
		for _, size := range []int{4 << 10, 32 << 10, 256 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", tr.name, size>>10), func(b *testing.B) {
				p := tr.pair(b)
				defer p.close()
				done := make(chan error, 1)
				go func() {
					_, err := io.CopyBuffer(io.Discard, p.server, make([]byte, size))
					done <- err
				}()
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := p.client.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				p.client.(interface{ CloseWrite() error }).CloseWrite()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkDial opens and closes one connection per iteration, with a byte
// each way so that both ends have seen the handshake, between two hosts of
// a Network and, as the baseline, over the OS's loopback TCP.
func BenchmarkDial(b *testing.B) {
	for _, tr := range []struct {
		name   string
		listen func(testing.TB) (net.Listener, func(context.Context, string) (net.Conn, error), string)
	}{
		{"netstack", func(tb testing.TB) (net.Listener, func(context.Context, string) (net.Conn, error), string) {
			n := newNetwork(tb)
			a, srv := newHost(tb, n, "a"), newHost(tb, n, "b")
			l := listen(tb, srv, "tcp", ":0")
			return l, func(ctx context.Context, addr string) (net.Conn, error) { return a.DialContext(ctx, "tcp", addr) }, fmt.Sprintf("b:%d", port(l))
		}},
		{"tcp", func(tb testing.TB) (net.Listener, func(context.Context, string) (net.Conn, error), string) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			var d net.Dialer
			return l, func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, l.Addr().String()
		}},
	} {
		b.Run(tr.name, func(b *testing.B) {
			l, dial, addr := tr.listen(b)
			serve(b, l, func(c net.Conn) {
				var one [1]byte
				if _, err := io.ReadFull(c, one[:]); err == nil {
					c.Write(one[:])
				}
			})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				c, err := dial(ctx, addr)
				if err != nil {
					b.Fatal(err)
				}
				var one [1]byte
				c.Write(one[:])
				if _, err := io.ReadFull(c, one[:]); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "conns/s")
		})
	}
}
