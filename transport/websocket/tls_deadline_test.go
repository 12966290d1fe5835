package websocket

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/pool"
)

// stalledTarget is a target that reads nothing until release is closed,
// then hashes everything up to the end of stream.
type stalledTarget struct {
	*target
	release chan struct{}
	got     chan []byte // the SHA-256 of the stream
	n       chan int64  // its length
}

func startStalledTarget(t *testing.T) *stalledTarget {
	st := &stalledTarget{release: make(chan struct{}), got: make(chan []byte, 1), n: make(chan int64, 1)}
	st.target = startTarget(t, func(c net.Conn) {
		defer c.Close()
		<-st.release
		h := sha256.New()
		n, _ := io.Copy(h, c)
		st.n <- n
		st.got <- h.Sum(nil)
	})
	t.Cleanup(func() {
		select {
		case <-st.release:
		default:
			close(st.release)
		}
	})
	return st
}

// pattern fills b with bytes that depend on where they are in the stream.
func pattern(b []byte, off int64) {
	for i := range b {
		b[i] = byte((off + int64(i)) * 31 >> 3)
	}
}

// patternReader yields the pattern from offset 0 on.
type patternReader struct{ off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	pattern(p, r.off)
	r.off += int64(len(p))
	return len(p), nil
}

// hashPattern adds the pattern's first n bytes to h.
func hashPattern(h io.Writer, n int64) {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), n-off)]
		pattern(b, off)
		h.Write(b)
	}
}

// TestWSSWriteTimeout: over wss, a write deadline that cuts frames of every
// size, the largest included (their records fill more than the pooled
// frame buffer), leaves the tunnel usable: once the deadline is lifted,
// writes go on (or CloseWrite sends what was kept, then the end of
// stream) and the target gets every byte the writes counted, in order.
// crypto/tls alone would fail every write after the first timeout.
func TestWSSWriteTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		size   int
		raw    bool
		noMore bool // CloseWrite right after the deadline is lifted
	}{
		{"200KiB", 200 << 10, false, false},
		{"256KiB", 256 << 10, false, false},
		{"1MiB", 1 << 20, false, false},
		{"256KiB then CloseWrite", 256 << 10, false, true},
		{"raw 256KiB", 256 << 10, true, false},
		{"raw ReadFrom", 0, true, false},
		{"raw 256KiB then CloseWrite", 256 << 10, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := startStalledTarget(t)
			srv := newServer()
			srv.RawStreams = tc.raw
			ts := startServerMode(t, srv, true, true)
			nc, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			c := nc.(*Conn)
			defer c.Close()
			if c.Raw() != tc.raw {
				t.Fatalf("Raw() = %v, want %v", c.Raw(), tc.raw)
			}
			h := sha256.New()
			var total int64
			// Write until the deadline cuts a write (the target reads
			// nothing, so the buffers fill); bounded at 256 MiB.
			timedOut := false
			if tc.size == 0 {
				c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := c.ReadFrom(io.LimitReader(&patternReader{}, 256<<20))
				hashPattern(h, n)
				total, timedOut = n, isTimeout(err)
			} else {
				buf := make([]byte, tc.size)
				for i := 0; total < 256<<20 && !timedOut; i++ {
					pattern(buf, total)
					c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
					n, err := c.Write(buf)
					h.Write(buf[:n])
					total += int64(n)
					if err != nil && !isTimeout(err) {
						t.Fatalf("write %d: %v", i, err)
					}
					timedOut = err != nil
				}
			}
			if !timedOut {
				t.Fatal("no write timed out")
			}
			c.SetWriteDeadline(time.Time{})
			close(tg.release)
			buf := make([]byte, 100<<10)
			for i := 0; i < 4 && !tc.noMore; i++ {
				pattern(buf, total)
				n, err := c.Write(buf)
				h.Write(buf[:n])
				total += int64(n)
				if err != nil {
					t.Fatalf("Write after the deadline was lifted: %d, %v", n, err)
				}
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if n := <-tg.n; n != total {
				t.Fatalf("target got %d bytes, the writes counted %d", n, total)
			}
			if !bytes.Equal(<-tg.got, h.Sum(nil)) {
				t.Fatal("target got other bytes than were written")
			}
		})
	}
}

// TestWSSCloseWithBytesHeld: after a write deadline cut a wss write, the
// cork.Conn holds the rest of its records; Close must not first send TLS's
// close_notify behind them (crypto/tls would wait up to 5 s for that
// alert), but close at once, as over plain TCP.
func TestWSSCloseWithBytesHeld(t *testing.T) {
	t.Parallel()
	for _, raw := range []bool{false, true} {
		t.Run(map[bool]string{false: "framed", true: "raw"}[raw], func(t *testing.T) {
			t.Parallel()
			tg := startStalledTarget(t)
			srv := newServer()
			srv.RawStreams = raw
			ts := startServerMode(t, srv, true, true)
			d := ts.dialer()
			d.Tuning.CloseTimeout = 300 * time.Millisecond
			nc, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			c := nc.(*Conn)
			buf := make([]byte, 256<<10)
			for i, misses := 0, 0; ; i++ {
				if i == 1024 {
					t.Fatal("no write timed out")
				}
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Write(buf); err != nil {
					if !isTimeout(err) {
						t.Fatal(err)
					}
					if c.cork.Held() {
						break
					}
					// The deadline passed before the write began (the
					// test stalled under load): it cut nothing.
					if misses++; misses == 10 {
						t.Fatal("10 writes timed out, and the cork held nothing")
					}
				}
			}
			start := time.Now()
			c.Close()
			t.Logf("Close took %v", time.Since(start))
			// Close may wait out CloseTimeout for the peer to read its end
			// or close frame. The bound is the alert's 5 s deadline, not a
			// speed goal: over it, Close waited for close_notify.
			if d := time.Since(start); d > 4*time.Second {
				t.Fatalf("Close took %v with bytes held", d)
			}
		})
	}
}

// TestWSSIdleHoldsNoPooledBuffer: an idle wss tunnel whose stream is being
// copied on both ends (the server's CopyTo, the client's io.Copy) holds no
// 256 KiB pooled buffer while it waits: crypto/tls reads only into the
// caller's buffer, so CopyTo waits in the Conn's own small one. Holding
// one cost 574–593 KB per tunnel (both ends), against 31–53 KB now.
//
// Not parallel: it weighs the heap, which other tests would move.
func TestWSSIdleHoldsNoPooledBuffer(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	ts := startServerMode(t, newServer(), true, true)
	d := ts.dialer()
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	before := heap()
	const n = 50
	for range n {
		c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x")) // the server's CopyTo has moved data once
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, c); close(done) }()
		t.Cleanup(func() { c.Close(); <-done })
	}
	per := (heap() - before) / n
	t.Logf("heap per idle wss tunnel, both ends: %d B", per)
	if per > 128<<10 {
		t.Fatalf("an idle wss tunnel holds %d B of heap: a pooled buffer (%d B) is held while waiting", per, pool.Size)
	}
}
