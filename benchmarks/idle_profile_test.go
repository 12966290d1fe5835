package benchmarks

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
	"github.com/spriteproxy/spriteproxy/proxy"
)

// idleProfileEnv names a directory: with it set, TestIdleProfile writes a
// heap profile per kind there and logs what an idle tunnel costs.
const idleProfileEnv = "SPRITEPROXY_IDLE_PROFILE"

// oneByteEcho echoes one byte and then waits for the end of stream with a
// 1-byte buffer: a target that holds next to nothing, so that the heap an
// idle tunnel adds is the tunnel's (rig.Echo holds a 32 KiB buffer).
func oneByteEcho(c net.Conn) {
	defer c.Close()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	c.Write(b[:])
	for {
		if _, err := c.Read(b[:]); err != nil {
			return
		}
	}
}

// TestIdleProfile weighs idle ProxyPort tunnels, as `spriteproxy forward`
// and `serve` make them, with client, server and target in this one
// process: each tunnel carries a 1-byte echo and stays open. It logs the
// live heap and the goroutine stacks per tunnel, both sides together,
// after 8 GCs, and writes a heap profile (every allocation sampled) per
// kind to $SPRITEPROXY_IDLE_PROFILE: ws, wss (TLS 1.3, Go's default key
// exchange X25519MLKEM768), and wss-x25519 (the client offering X25519
// only), for
//
//	go tool pprof -sample_index=inuse_space -diff_base ws.prof wss.prof
//
// It is skipped unless the variable is set (it measures; it checks
// nothing), and is not a benchmark because a profile of the whole process
// is its point.
func TestIdleProfile(t *testing.T) {
	dir := os.Getenv(idleProfileEnv)
	if dir == "" {
		t.Skip("set " + idleProfileEnv + " to a directory for the profiles")
	}
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = rate }()
	for _, kind := range []string{"ws", "wss", "wss-x25519"} {
		heap, stack := idleProfile(t, kind, filepath.Join(dir, kind+".prof"), 500)
		t.Logf("%s: heap %.1f KiB, stacks %.1f KiB per idle tunnel (client, server and target)", kind, heap/1024, stack/1024)
	}
}

// idleProfile opens n idle tunnels of kind and returns the heap and stack
// bytes per tunnel they added, after writing the heap profile to path.
func idleProfile(t *testing.T, kind, path string, n int) (heap, stack float64) {
	target, err := rig.ListenLoopback(oneByteEcho)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	srv, err := rig.StartOurs(kind != "ws", false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ct := srv.ClientTLS
	if kind == "wss-x25519" {
		ct = ct.Clone()
		ct.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	sp := proxy.New(rig.Token, proxy.WithBaseURL(srv.URL), proxy.WithTLSConfig(ct)).Sprite(rig.Sprite)
	sess, err := sp.ProxyPort(context.Background(), 0, target.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sess.LocalPort}
	open := func() net.Conn {
		c, err := net.DialTCP("tcp", nil, local)
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// One tunnel first: the session's and the pool's first allocations,
	// a TLS session ticket, are not the idle tunnels'.
	open().Close()
	before := memNow()
	cs := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range n {
		cs = append(cs, open())
	}
	after := memNow()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n), float64(after.StackInuse-before.StackInuse) / float64(n)
}

// memNow is the runtime's memory statistics after 8 GCs: enough for the
// stacks to shrink as far as they will (at most one halving per GC).
func memNow() runtime.MemStats {
	for range 8 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
