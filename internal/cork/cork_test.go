package cork

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// writeCounter is a net.Conn that counts the writes that reach it.
type writeCounter struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	w.mu.Unlock()
	return w.Conn.Write(p)
}

func (w *writeCounter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes
}

// pipeCork is a Conn on one end of a net.Pipe (which has no buffer: a
// write waits for the reader) and the other end.
func pipeCork(t *testing.T) (*Conn, *writeCounter, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	wc := &writeCounter{Conn: a}
	return New(wc), wc, b
}

// readN reads from c until it has n bytes or fails.
func readN(c net.Conn, n int) chan []byte {
	out := make(chan []byte, 1)
	go func() {
		buf := make([]byte, n)
		m, _ := io.ReadFull(c, buf)
		out <- buf[:m]
	}()
	return out
}

func TestCorkGathersWrites(t *testing.T) {
	t.Parallel()
	cc, wc, peer := pipeCork(t)
	got := readN(peer, 3000+5)
	if err := cc.Begin(); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := range 3 {
		p := bytes.Repeat([]byte{byte('a' + i)}, 1000)
		if n, err := cc.Write(p); n != len(p) || err != nil {
			t.Fatalf("corked Write = %d, %v", n, err)
		}
		want = append(want, p...)
	}
	if n := wc.count(); n != 0 {
		t.Fatalf("%d writes reached the connection while corked, want 0", n)
	}
	if err := cc.End(); err != nil {
		t.Fatal(err)
	}
	if n := wc.count(); n != 1 {
		t.Fatalf("end made %d writes, want 1", n)
	}
	// Uncorked, a write goes straight through.
	if _, err := cc.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "after"...)
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer read %q..., want the corked bytes then the plain write", b[:min(len(b), 16)])
	}
	if n := wc.count(); n != 2 {
		t.Fatalf("%d writes in all, want 2", n)
	}
	if cc.bp != nil {
		t.Error("the buffer is still borrowed after a complete flush")
	}
}

// TestCorkTimeoutKeepsRest: a flush cut by the write deadline keeps the
// rest, a write while the deadline is past sends and gathers nothing, and
// once the deadline is lifted the next write sends the rest first.
func TestCorkTimeoutKeepsRest(t *testing.T) {
	t.Parallel()
	cc, _, peer := pipeCork(t)
	first := make([]byte, 4000)
	for i := range first {
		first[i] = byte(i)
	}
	// The peer takes 10 bytes at most, then reads no more until the
	// deadline has cut the flush (if it read nothing by then, its first
	// read takes the start of the next flush).
	total := len(first) + len("end")
	got := make(chan []byte, 1)
	resume := make(chan struct{})
	go func() {
		buf := make([]byte, total)
		n, _ := peer.Read(buf[:10])
		<-resume
		m, _ := io.ReadFull(peer, buf[n:])
		got <- buf[:n+m]
	}()
	cc.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if err := cc.Begin(); err != nil {
		t.Fatal(err)
	}
	cc.Write(first)
	err := cc.End()
	close(resume)
	if !isTimeout(err) {
		t.Fatalf("end = %v, want a timeout", err)
	}
	if !cc.Held() {
		t.Fatal("a flush was cut, and Held reports nothing held")
	}
	// The deadline has passed: nothing is sent or gathered.
	if err := cc.Begin(); !isTimeout(err) {
		t.Fatalf("begin after the deadline = %v, want a timeout", err)
	}
	var ne net.Error
	if err := cc.Begin(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("begin error %v is not a net.Error timeout", err)
	}

	cc.SetWriteDeadline(time.Time{})
	if err := cc.Begin(); err != nil {
		t.Fatal(err)
	}
	cc.Write([]byte("end"))
	if err := cc.End(); err != nil {
		t.Fatal(err)
	}
	if b, want := <-got, append(append([]byte(nil), first...), "end"...); !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, want the %d sent, in order", len(b), len(want))
	}
}

// TestCorkFlushHeld: FlushHeld sends what a cut write kept, with one
// write, and with nothing held it writes nothing.
func TestCorkFlushHeld(t *testing.T) {
	t.Parallel()
	cc, wc, peer := pipeCork(t)
	if err := cc.FlushHeld(); err != nil || wc.count() != 0 {
		t.Fatalf("FlushHeld with nothing held = %v, %d writes; want nil, none", err, wc.count())
	}
	want := bytes.Repeat([]byte("held"), 1000)
	// Nobody reads: the write deadline cuts the whole flush.
	cc.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := cc.Write(want); err != nil {
		t.Fatalf("a write cut by the deadline = %v, want it held and no error", err)
	}
	if !cc.Held() {
		t.Fatal("nothing held after a write cut by the deadline")
	}
	cc.SetWriteDeadline(time.Time{})
	got := readN(peer, len(want))
	before := wc.count()
	if err := cc.FlushHeld(); err != nil {
		t.Fatal(err)
	}
	if cc.Held() || wc.count() != before+1 {
		t.Fatalf("after FlushHeld: held %v, %d writes; want nothing held, one write", cc.Held(), wc.count()-before)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, want the %d held", len(b), len(want))
	}
}

// TestCorkConcurrentWrites: crypto/tls writes from other goroutines too
// (a KeyUpdate answered by a Read, an alert from Close), outside the
// tunnel's lock, one whole record per Write; gathered or not, every write
// arrives whole and in its writer's order.
func TestCorkConcurrentWrites(t *testing.T) {
	t.Parallel()
	cc, _, peer := pipeCork(t)
	const perWriter = 300
	// A message: writer id, sequence number, length, payload.
	msg := func(id, seq int, payload []byte) []byte {
		m := make([]byte, 9, 9+len(payload))
		m[0] = byte(id)
		binary.BigEndian.PutUint32(m[1:], uint32(seq))
		binary.BigEndian.PutUint32(m[5:], uint32(len(payload)))
		return append(m, payload...)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // gathered: a few records per frame, as crypto/tls writes them
		defer wg.Done()
		for seq := 0; seq < perWriter; {
			if err := cc.Begin(); err != nil {
				t.Error(err)
				return
			}
			for k := 1 + rand.IntN(4); k > 0 && seq < perWriter; k-- {
				cc.Write(msg(0, seq, make([]byte, rand.IntN(16<<10))))
				seq++
			}
			if err := cc.End(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // straight through
		defer wg.Done()
		for seq := range perWriter {
			if _, err := cc.Write(msg(1, seq, make([]byte, rand.IntN(100)))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	next := [2]int{}
	hdr := make([]byte, 9)
	for next[0] < perWriter || next[1] < perWriter {
		if _, err := io.ReadFull(peer, hdr); err != nil {
			t.Fatal(err)
		}
		id, seq := int(hdr[0]), int(binary.BigEndian.Uint32(hdr[1:]))
		if id > 1 || seq != next[id] {
			t.Fatalf("read message %d of writer %d, want %d: writes were split or reordered", seq, id, next[min(id, 1)])
		}
		next[id]++
		if _, err := io.CopyN(io.Discard, peer, int64(binary.BigEndian.Uint32(hdr[5:]))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// TestCorkClose: Close ends a gathering write, gives the buffer back, and
// every later write fails as on a closed connection.
func TestCorkClose(t *testing.T) {
	t.Parallel()
	cc, _, _ := pipeCork(t)
	if err := cc.Begin(); err != nil {
		t.Fatal(err)
	}
	cc.Write(make([]byte, 1000))
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	if cc.bp != nil {
		t.Error("Close kept the buffer")
	}
	if err := cc.End(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("end after Close = %v, want net.ErrClosed", err)
	}
	if _, err := cc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	if err := cc.Begin(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("begin after Close = %v, want net.ErrClosed", err)
	}
}

// TestCorkOverflow: more than a frame's records while corked (a KeyUpdate
// gathered with a frame, say) still land whole, in one write.
func TestCorkOverflow(t *testing.T) {
	t.Parallel()
	cc, wc, peer := pipeCork(t)
	p := make([]byte, corkSize+1000)
	for i := range p {
		p[i] = byte(i * 7)
	}
	got := readN(peer, len(p))
	if err := cc.Begin(); err != nil {
		t.Fatal(err)
	}
	cc.Write(p[:corkSize-10])
	cc.Write(p[corkSize-10:])
	if err := cc.End(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, p) {
		t.Fatal("the peer got other bytes")
	}
	if n := wc.count(); n != 1 {
		t.Errorf("%d writes, want 1", n)
	}
}

// TestCorkInterrupt: while a gathered write is under way (here blocked:
// nobody reads), interrupt closes the connection at once, which ends the
// write; with nothing under way or held, it leaves the connection alone.
func TestCorkInterrupt(t *testing.T) {
	t.Parallel()
	idle, _, idlePeer := pipeCork(t)
	if idle.Interrupt() {
		t.Fatal("interrupt closed an idle connection")
	}
	// Once interrupt has begun, no gather starts (it could not be seen).
	if err := idle.Begin(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("begin after interrupt = %v, want net.ErrClosed", err)
	}
	go idlePeer.Read(make([]byte, 1))
	if _, err := idle.Write([]byte("x")); err != nil {
		t.Fatalf("a plain write (close_notify, say) after interrupt failed: %v", err)
	}

	cc, _, peer := pipeCork(t)
	if err := cc.Begin(); err != nil {
		t.Fatal(err)
	}
	cc.Write(make([]byte, 1000))
	ended := make(chan error, 1)
	go func() { ended <- cc.End() }()
	if !cc.Interrupt() {
		t.Fatal("interrupt left a connection with a gathered write under way")
	}
	if err := <-ended; err == nil {
		t.Error("the interrupted write succeeded")
	}
	if _, err := peer.Write([]byte("x")); err == nil {
		t.Error("the connection is still open")
	}
}

// TestCorkBatchedRead: while batching, one read takes all the socket
// holds, later reads are served from it in order, and the buffer goes back
// once it is read out; a socket pool.Read cannot wait on without a buffer
// (a net.Pipe here) is never batched.
func TestCorkBatchedRead(t *testing.T) {
	t.Parallel()
	nc, peer := testnet.TCPPair(t)

	// 48 KiB fit the receiving socket's first window: once the write
	// returns, loopback has queued all of it at nc.
	want := make([]byte, 48<<10)
	for i := range want {
		want[i] = byte(i * 13)
	}
	if _, err := peer.Write(want); err != nil {
		t.Fatal(err)
	}
	peer.(*net.TCPConn).CloseWrite()

	cc := New(nc)
	cc.StartBatch()
	var got []byte
	buf := make([]byte, 10<<10) // as crypto/tls asks: less than batchBelow
	first := true
	for {
		n, err := cc.Read(buf)
		got = append(got, buf[:n]...)
		if first {
			first = false
			if n != len(buf) || len(cc.rbuf) == 0 {
				t.Fatalf("first read: %d bytes, %d kept; want %d and the rest of what had arrived kept", n, len(cc.rbuf), len(buf))
			}
			// StopBatch moves the rest out of the pooled buffer.
			kept := len(cc.rbuf)
			cc.StopBatch()
			if cc.rbp != nil || len(cc.rbuf) != kept {
				t.Fatalf("StopBatch: pooled buffer still held (%v) or %d of %d bytes kept", cc.rbp != nil, len(cc.rbuf), kept)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written in order", len(got), len(want))
	}
	if cc.rbp != nil || len(cc.rbuf) > 0 {
		t.Error("the batch buffer is still held after it was read out")
	}

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if New(a).Batchable() {
		t.Error("a net.Pipe is batchable: an idle read would hold a pooled buffer")
	}
}

// TestCorkBatchNesting: the bytes a batched read left stay in the pooled
// buffer until the last StopBatch, which moves them out of it.
func TestCorkBatchNesting(t *testing.T) {
	t.Parallel()
	nc, peer := testnet.TCPPair(t)
	want := bytes.Repeat([]byte("batch"), 4<<10)
	if _, err := peer.Write(want); err != nil {
		t.Fatal(err)
	}
	peer.(*net.TCPConn).CloseWrite()
	cc := New(nc)
	cc.StartBatch()
	cc.StartBatch()
	got := make([]byte, 1000)
	// The first read may come before all of want has arrived; it takes
	// what has, and keeps what is beyond got.
	n, err := cc.Read(got)
	if err != nil || n != len(got) || cc.rbp == nil {
		t.Fatalf("batched read: %d, %v, pooled buffer held %v; want %d bytes and the rest kept", n, err, cc.rbp != nil, len(got))
	}
	cc.StopBatch()
	if cc.rbp == nil {
		t.Fatal("StopBatch with a batch still under way gave the pooled buffer back")
	}
	kept := len(cc.rbuf)
	cc.StopBatch()
	if cc.rbp != nil || len(cc.rbuf) != kept {
		t.Fatalf("last StopBatch: pooled buffer held %v, %d of %d bytes kept", cc.rbp != nil, len(cc.rbuf), kept)
	}
	rest, err := io.ReadAll(cc)
	if err != nil || !bytes.Equal(append(got, rest...), want) {
		t.Fatalf("read %d bytes in all (%v), want the %d written in order", len(got)+len(rest), err, len(want))
	}
}

func TestCorkNoWait(t *testing.T) {
	t.Parallel()
	nc, peer := testnet.TCPPair(t)
	if _, err := peer.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	cc := New(nc)
	cc.StartBatch()
	buf := make([]byte, 3)
	// What a batched read left is handed out under nowait too.
	if n, err := cc.Read(buf); n != 3 || err != nil {
		t.Fatalf("first read: %d, %v", n, err)
	}
	cc.SetNoWait(true)
	if n, err := cc.Read(buf); n != 3 || err != nil || string(buf) != "ued" {
		t.Fatalf("nowait read of what was left: %d %q, %v", n, buf[:n], err)
	}
	// Then nowait does not go to the socket, whatever it holds, and says
	// so as crypto/tls takes a timeout: temporary.
	if _, err := peer.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	n, err := cc.Read(buf)
	var ne net.Error
	//lint:ignore SA1019 the error's documented contract includes Temporary
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() || !ne.Temporary() {
		t.Fatalf("nowait read with nothing left: %d, %v; want 0 and a temporary timeout", n, err)
	}
	cc.SetNoWait(false)
	if n, err := cc.Read(buf); n != 3 || err != nil || string(buf) != "mor" {
		t.Fatalf("read after nowait: %d %q, %v", n, buf[:n], err)
	}
}
