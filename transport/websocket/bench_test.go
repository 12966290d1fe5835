package websocket

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testcert"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// sink reads and drops everything from c until EOF.
func sink(c net.Conn, done chan<- int64) {
	n, _ := io.Copy(io.Discard, struct{ io.Reader }{c})
	done <- n
}

// BenchmarkWrite32K is the raw cost of the tunnel's frames: client Conn
// writes 32 KiB messages to a server Conn on loopback, next to plain TCP.
func BenchmarkWrite32K(b *testing.B) {
	buf := make([]byte, 32<<10)
	b.Run("tcp", func(b *testing.B) {
		a, c := testnet.TCPPair(b)
		done := make(chan int64, 1)
		go sink(c, done)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			a.Write(buf)
		}
		a.Close()
		<-done
		c.Close()
	})
	for _, dir := range []string{"client-to-server", "server-to-client"} {
		b.Run(dir, func(b *testing.B) {
			cfg, _ := Tuning{}.config()
			x, y := testnet.TCPPair(b)
			cl, sv := newConn(x, true, cfg, nil), newConn(y, false, cfg, nil)
			w, r := cl, sv
			if dir == "server-to-client" {
				w, r = sv, cl
			}
			done := make(chan int64, 1)
			go sink(r, done)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				w.Write(buf)
			}
			w.CloseWrite()
			<-done
			closeBoth(cl, sv)
		})
	}
}

// TestSteadyStateAllocs: writing and reading 32 KiB messages allocates
// nothing once the pools are warm.
func TestSteadyStateAllocs(t *testing.T) {
	skipUnderRace(t)
	cl, sv := connPair(t, true, Tuning{KeepAlive: -1})
	buf := make([]byte, 32<<10)
	rbuf := make([]byte, 64<<10)
	for _, pair := range []struct {
		name string
		w, r *Conn
	}{{"client writes", cl, sv}, {"server writes", sv, cl}} {
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := pair.w.Write(buf); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(pair.r, rbuf[:len(buf)]); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per 32 KiB message, want 0", pair.name, allocs)
		}
	}
}

// BenchmarkCopyTo32K is the server's pump path: the client writes 32 KiB
// messages, the server's Conn copies them to a TCP target that drops them;
// next to a plain TCP relay of the same bytes.
func BenchmarkCopyTo32K(b *testing.B) {
	buf := make([]byte, 32<<10)
	run := func(b *testing.B, w net.Conn, relay func()) {
		done := make(chan struct{})
		go func() { relay(); close(done) }()
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			w.Write(buf)
		}
		w.(interface{ CloseWrite() error }).CloseWrite()
		<-done
	}
	b.Run("tcp-relay", func(b *testing.B) {
		in1, in2 := testnet.TCPPair(b)
		out1, out2 := testnet.TCPPair(b)
		sunk := make(chan int64, 1)
		go sink(out2, sunk)
		run(b, in1, func() { io.Copy(out1, in2); out1.(*net.TCPConn).CloseWrite(); <-sunk })
		in1.Close()
		in2.Close()
		out1.Close()
		out2.Close()
	})
	b.Run("tunnel", func(b *testing.B) {
		cfg, _ := Tuning{}.config()
		x, y := testnet.TCPPair(b)
		cl, sv := newConn(x, true, cfg, nil), newConn(y, false, cfg, nil)
		out1, out2 := testnet.TCPPair(b)
		sunk := make(chan int64, 1)
		go sink(out2, sunk)
		run(b, cl, func() { sv.CopyTo(out1, nil); out1.(*net.TCPConn).CloseWrite(); <-sunk })
		closeBoth(cl, sv)
		out1.Close()
		out2.Close()
	})
}

// BenchmarkSetup is a tunnel's whole life for one byte: dial, echo one
// byte, close; next to the same over plain TCP.
func BenchmarkSetup(b *testing.B) {
	tg := startTarget(b, echo)
	one := []byte{1}
	b.Run("tcp", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := net.Dial("tcp", tg.addr())
			if err != nil {
				b.Fatal(err)
			}
			c.Write(one)
			io.ReadFull(c, one)
			c.Close()
		}
	})
	for _, m := range append(modes, struct {
		name   string
		direct bool
	}{"serve-metrics", true}) {
		b.Run("tunnel-"+m.name, func(b *testing.B) {
			srv := newServer()
			if m.name == "serve-metrics" { // the cost of Server.Metrics per tunnel
				srv.Metrics = NewMetrics()
			}
			ts := startServerMode(b, srv, false, m.direct)
			d := ts.dialer()
			ctx := testCtx(b)
			b.ReportAllocs()
			for b.Loop() {
				c, err := d.DialSprite(ctx, "s", "tcp", tg.addr())
				if err != nil {
					b.Fatal(err)
				}
				c.Write(one)
				io.ReadFull(c, one)
				c.Close()
			}
		})
	}
}

// TestCopyToAllocs: the pump's path allocates nothing per chunk once warm.
func TestCopyToAllocs(t *testing.T) {
	skipUnderRace(t)
	cl, sv := connPair(t, true, Tuning{KeepAlive: -1})
	if allocs := copyToAllocs(t, cl, sv); allocs != 0 {
		t.Errorf("%.2f allocations per 32 KiB message through CopyTo, want 0", allocs)
	}
}

// copyToAllocs has cl write 32 KiB messages that sv's CopyTo moves to a
// TCP socket, and returns the allocations per message once warm. They
// count the whole process: the CopyTo goroutine's too.
func copyToAllocs(t *testing.T, cl, sv *Conn) float64 {
	t.Helper()
	out, sink := testnet.TCPPair(t)
	sink.SetReadDeadline(time.Now().Add(time.Minute)) // fail, not hang, if CopyTo dies
	buf := make([]byte, 32<<10)
	rbuf := make([]byte, 64<<10)
	done := make(chan error, 1)
	go func() {
		_, err := sv.CopyTo(out, nil)
		done <- err
	}()
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := cl.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(sink, rbuf[:len(buf)]); err != nil {
			t.Fatal(err)
		}
	})
	cl.CloseWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return allocs
}

// wssConnPair is connPair over TLS 1.3, each end's TLS on a corkConn as
// the Dialer and Server (with TLSConfig) make it.
func wssConnPair(t *testing.T, tune Tuning) (client, server *Conn) {
	t.Helper()
	cfg, err := tune.config()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	a, b := testnet.TCPPair(t)
	clientConf := pair.ClientConfig()
	clientConf.ServerName = "localhost"
	tc, ts := tls.Client(newCorkConn(a), clientConf), tls.Server(newCorkConn(b), pair.ServerConfig())
	errs := make(chan error, 1)
	go func() { errs <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	client, server = newConn(tc, true, cfg, nil), newConn(ts, false, cfg, nil)
	client.halfClose, server.halfClose = true, true
	t.Cleanup(func() { closeBoth(client, server) })
	return client, server
}

// TestWSSCopyToAllocs is TestCopyToAllocs over TLS. crypto/tls allocates
// a reader each time it reads from the connection; CopyTo adds nothing on
// top.
func TestWSSCopyToAllocs(t *testing.T) {
	skipUnderRace(t)
	cl, sv := wssConnPair(t, Tuning{KeepAlive: -1})
	allocs := copyToAllocs(t, cl, sv)
	// crypto/tls reads the socket (a reader allocated each time) about
	// twice per message: the 32 KiB frame is three records. Gathering the
	// records with a past deadline cost three more (the timeout error).
	if allocs >= 3 {
		t.Errorf("%.2f allocations per 32 KiB message through CopyTo over TLS, want crypto/tls's own (about 2)", allocs)
	}
}
