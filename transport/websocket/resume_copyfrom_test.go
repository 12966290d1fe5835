package websocket

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/spriteproxy/spriteproxy/internal/pump"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// The pump takes ResumableConn.CopyFrom for the copy into the tunnel.
var _ pump.CopierFrom = (*ResumableConn)(nil)

// chunkReader is a reader (not a socket: CopyFrom's portable path) that
// notes whether every Read was given a chunk of the send buffer to fill.
type chunkReader struct {
	io.Reader
	other atomic.Int32 // Reads into a buffer that is no send buffer chunk
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if cap(p) != resumeChunk {
		c.other.Add(1)
	}
	return c.Reader.Read(p)
}

// dialResumable dials the target through the relay and asserts resume.
func dialResumable(t *testing.T, d *Dialer, tg *target) *ResumableConn {
	t.Helper()
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	rc, ok := nc.(*ResumableConn)
	if !ok {
		nc.Close()
		t.Fatalf("DialSprite returned %T, want *ResumableConn", nc)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

// TestResumeCopyFromCutsIntact: 16 MiB through pump.Copy into a resumable
// tunnel (its CopyFrom), from a socket and from a plain reader, to an echo
// target, while the relay resets the connection: all of it comes back
// intact, the count is exact, and CloseWrite's end of stream reaches the
// target (the echo's comes back as io.EOF). The server's copy from the
// target into its tunnel is a CopyFrom from a socket too.
func TestResumeCopyFromCutsIntact(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"socket", "reader"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			_, rl, d, tg := resumeSetup(t, newServer(), echo)
			rc := dialResumable(t, d, tg)
			const n = 16 << 20
			var src io.Reader
			var feed io.WriteCloser
			var cr *chunkReader
			if kind == "socket" {
				a, b := testnet.TCPPair(t)
				src, feed = b, a
			} else {
				pr, pw := io.Pipe()
				cr = &chunkReader{Reader: pr}
				src, feed = cr, pw
			}
			var sent [sha256.Size]byte
			var werr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				sent, werr = writeStream(feed, 3, n)
				if tc, ok := feed.(*net.TCPConn); ok {
					tc.CloseWrite()
				} else {
					feed.Close()
				}
			}()
			var count atomic.Int64
			var copied int64
			var cerr error
			go func() {
				defer wg.Done()
				copied, cerr = pump.Copy(rc, src, &count)
				if cerr == nil {
					cerr = rc.CloseWrite()
				}
			}()
			stop := cutter(rl, 4)
			got, m, rerr := readHash(rc, n)
			stop()
			wg.Wait()
			if werr != nil || cerr != nil || rerr != nil {
				t.Fatalf("feed: %v; copy: %v; read %d of %d bytes: %v", werr, cerr, m, n, rerr)
			}
			if copied != n || count.Load() != n {
				t.Fatalf("copied %d, counted %d, want %d", copied, count.Load(), n)
			}
			if got != sent {
				t.Fatal("the bytes read back differ from those sent")
			}
			if _, err := rc.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("read after the echo's end = %v, want io.EOF", err)
			}
			if cr != nil && cr.other.Load() != 0 {
				t.Fatalf("%d reads of the source were not into a send buffer chunk", cr.other.Load())
			}
			t.Logf("%d resumes", rc.Resumes())
		})
	}
}

// TestResumeCopyFromReadsIntoChunk: pump.Copy into a ResumableConn reads
// the source straight into the send buffer (the fast path), not into a
// buffer of its own.
func TestResumeCopyFromReadsIntoChunk(t *testing.T) {
	t.Parallel()
	_, _, d, tg := resumeSetup(t, newServer(), echo)
	rc := dialResumable(t, d, tg)
	pr, pw := io.Pipe()
	cr := &chunkReader{Reader: pr}
	go func() {
		pw.Write(make([]byte, 300<<10))
		pw.Close()
	}()
	if n, err := pump.Copy(rc, cr, nil); err != nil || n != 300<<10 {
		t.Fatalf("Copy = %d, %v", n, err)
	}
	if cr.other.Load() != 0 {
		t.Fatalf("%d reads of the source were not into a send buffer chunk", cr.other.Load())
	}
	rc.CloseWrite()
	if n, err := io.Copy(io.Discard, rc); err != nil || n != 300<<10 {
		t.Fatalf("read back %d, %v", n, err)
	}
}

var errSource = errors.New("the source failed")

// failingConn is a net.Conn whose Reads give some bytes, then fail.
type failingConn struct {
	net.Conn
	left int
}

func (f *failingConn) Read(p []byte) (int, error) {
	if f.left == 0 {
		return 0, errSource
	}
	n := min(len(p), f.left)
	clear(p[:n])
	f.left -= n
	return n, nil
}

func (f *failingConn) Write(p []byte) (int, error) { return len(p), nil }

// TestResumeCopyFromSourceFails: a source that fails midway (a reader's
// error, and a socket reset) cuts the tunnel: the pump reports the
// failure, and the target reads a reset, never a clean end of stream.
func TestResumeCopyFromSourceFails(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"reader", "socket"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			got := make(chan error, 1)
			_, _, d, tg := resumeSetup(t, newServer(), func(c net.Conn) {
				defer c.Close()
				_, err := io.Copy(io.Discard, c)
				got <- err
			})
			rc := dialResumable(t, d, tg)
			a, b := testnet.TCPPair(t)
			var src net.Conn = &failingConn{Conn: b, left: 200 << 10}
			if kind == "socket" {
				src = b
				go func() {
					a.Write(make([]byte, 200<<10))
					a.(*net.TCPConn).SetLinger(0)
					a.Close() // b reads a reset (once the bytes are read)
				}()
			}
			err := pump.Run(context.Background(), src, rc, nil)
			if err == nil {
				t.Fatal("pump.Run = nil, want the source's failure")
			}
			if kind == "reader" && !errors.Is(err, errSource) {
				t.Fatalf("pump.Run = %v, want %v", err, errSource)
			}
			if kind == "socket" && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("pump.Run = %v, want ECONNRESET", err)
			}
			if terr := <-got; terr == nil {
				t.Fatal("the target read a clean end of stream, want a reset")
			}
		})
	}
}
