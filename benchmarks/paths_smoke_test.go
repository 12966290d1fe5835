package benchmarks

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// TestPaths runs each path the way the benchmarks do, briefly: a stream
// with its checked prefix and 1 MiB after it, then a 1-byte echo.
func TestPaths(t *testing.T) {
	for _, p := range append(allPaths, pathSocketWSHTTP) {
		t.Run(p.name, func(t *testing.T) {
			fx := p.setup(t, nil)
			defer fx.Close()
			s, err := openStream(fx, 32<<10)
			fx.check(t, err)
			buf := rig.Payload()[:32<<10]
			for range 32 {
				if _, err := s.w.Write(buf); err != nil {
					s.abort()
					fx.check(t, err)
				}
			}
			fx.check(t, s.finish(32*32<<10))
		})
		t.Run(p.name+"/echo", func(t *testing.T) {
			fx := p.setup(t, rig.Echo)
			defer fx.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := fx.open(ctx)
			fx.check(t, err)
			defer c.Close()
			checkResume(t, p.name, c)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			got := make([]byte, 3)
			if _, err := c.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "abc" {
				t.Fatalf("echo: %q, %v", got, err)
			}
		})
	}
}

// checkResume fails t if a ProxySocket path's tunnel c is not what its
// name says: resumable on a -resume path, not resumable on the others
// (their server does not grant the extension, which the client offers by
// default). A ProxyPort's tunnels are behind its local port, out of
// reach here; they come from the same server and client.
func checkResume(t *testing.T, name string, c net.Conn) {
	t.Helper()
	if !strings.HasPrefix(name, "socket-") && name != "netstack" {
		return
	}
	_, resumable := c.(*websocket.ResumableConn)
	if want := strings.HasSuffix(name, "-resume"); resumable != want {
		t.Errorf("%s: the tunnel is a %T, resumable %v, want %v", name, c, resumable, want)
	}
}

// TestFinishDetectsLoss checks that a stream whose bytes go missing fails
// its check: the count is verified, not assumed.
func TestFinishDetectsLoss(t *testing.T) {
	fx := pathTCP.setup(t, nil)
	defer fx.Close()
	s, err := openStream(fx, 32<<10)
	fx.check(t, err)
	if _, err := s.w.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := s.finish(101); err == nil {
		t.Fatal("finish accepted 100 bytes for 101")
	}
}

// TestIdleHelpers runs BenchmarkIdleTunnel's helper processes on a few
// tunnels of each kind.
func TestIdleHelpers(t *testing.T) {
	for _, kind := range idleKinds {
		t.Run(kind, func(t *testing.T) {
			m := measureIdle(t, kind, 4)
			units := []string{"client-heap-B/tunnel", "server-rss-B/used-tunnel", "server-goroutines/tunnel"}
			if strings.HasPrefix(kind, "cli-") {
				units = []string{"client-rss-B/tunnel", "total-rss-B/tunnel", "server-rss-B/used-tunnel"}
			}
			for _, unit := range units {
				if _, ok := m[unit]; !ok {
					t.Errorf("no %s in %v", unit, m)
				}
			}
			if kind == "reference" && m["client-heap-B/tunnel"] < 1<<20 {
				t.Errorf("a reference tunnel's client holds %.0f heap bytes; its 1 MiB buffers went missing", m["client-heap-B/tunnel"])
			}
		})
	}
}
