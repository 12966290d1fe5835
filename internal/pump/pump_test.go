package pump

import (
	"bytes"
	"context"
	"errors"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noSplice hides a TCPConn's type, forcing the buffered copy path.
type noSplice struct{ net.Conn }

func (n noSplice) CloseWrite() error { return n.Conn.(*net.TCPConn).CloseWrite() }

// TestRunHalfClose: the left end writes a request and shuts down its write
// side; the right end reads it all, answers and shuts down; both see the
// whole stream then EOF, through the pump, on both copy paths.
func TestRunHalfClose(t *testing.T) {
	t.Parallel()
	for _, splice := range []bool{true, false} {
		t.Run(map[bool]string{true: "splice", false: "buffered"}[splice], func(t *testing.T) {
			t.Parallel()
			left, a := testnet.TCPPair(t)
			b, right := testnet.TCPPair(t)
			var pa, pb net.Conn = a, b
			if !splice {
				pa, pb = noSplice{a}, noSplice{b}
			}
			var cnt Counters
			done := make(chan error, 1)
			go func() { done <- Run(context.Background(), pa, pb, &cnt) }()

			req := bytes.Repeat([]byte("q"), 3<<20)
			reply := bytes.Repeat([]byte("r"), 5<<20)
			go func() {
				left.Write(req)
				left.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(right)
			if err != nil || !bytes.Equal(got, req) {
				t.Fatalf("right read %d bytes, %v", len(got), err)
			}
			right.Write(reply)
			right.(*net.TCPConn).CloseWrite()
			back, err := io.ReadAll(left)
			if err != nil || !bytes.Equal(back, reply) {
				t.Fatalf("left read %d bytes, %v", len(back), err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			if cnt.AToB.Load() != int64(len(req)) || cnt.BToA.Load() != int64(len(reply)) {
				t.Fatalf("counters %d/%d, want %d/%d", cnt.AToB.Load(), cnt.BToA.Load(), len(req), len(reply))
			}
		})
	}
}

// TestRunContextCancel: cancelling ctx ends the copy and closes both ends.
func TestRunContextCancel(t *testing.T) {
	t.Parallel()
	left, a := testnet.TCPPair(t)
	b, right := testnet.TCPPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, a, b, nil) }()
	left.Write([]byte("x"))
	io.ReadFull(right, make([]byte, 1))
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	// Both far ends see their connection end.
	for _, c := range []net.Conn{left, right} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, errDeadline) {
			t.Fatalf("far end still open after cancel: %v", err)
		}
	}
}

var errDeadline = os.ErrDeadlineExceeded

// TestRunError: a reset on one side ends both directions with that error.
func TestRunError(t *testing.T) {
	t.Parallel()
	left, a := testnet.TCPPair(t)
	b, right := testnet.TCPPair(t)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), a, b, nil) }()
	left.(*net.TCPConn).SetLinger(0)
	left.Close() // a reset
	if err := <-done; err == nil {
		t.Fatal("Run = nil after a reset")
	}
	right.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(right); errors.Is(err, errDeadline) {
		t.Fatal("the other side was left open")
	}
}

// TestCopyCountsLive: the buffered path adds to the counter per chunk.
func TestCopyCountsLive(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	src := bytes.NewReader(make([]byte, 300<<10))
	var dst bytes.Buffer
	total, err := Copy(&dst, src, &n)
	if err != nil || total != 300<<10 || n.Load() != total || dst.Len() != int(total) {
		t.Fatalf("Copy = %d, %v; counter %d", total, err, n.Load())
	}
}

// closedByPeer is a conn whose copy out ends with ErrClosedByPeer once its
// peer is done, as a tunnel closed both ways does.
type closedByPeer struct {
	net.Conn
	gone chan struct{}
}

func (c closedByPeer) CopyTo(w io.Writer, _ *atomic.Int64) (int64, error) {
	<-c.gone
	return 0, ErrClosedByPeer
}

// TestRunClosedByPeer: a peer that closed both ways ends the pair at once,
// as a normal end, though the other direction still has nothing to say.
func TestRunClosedByPeer(t *testing.T) {
	t.Parallel()
	_, a := testnet.TCPPair(t)
	b, right := testnet.TCPPair(t)
	gone := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), closedByPeer{a, gone}, b, nil) }()
	close(gone)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want a normal end", err)
	}
	right.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(right); errors.Is(err, errDeadline) {
		t.Fatal("the other side was left open")
	}
}

// noHalfClose is a conn without CloseWrite.
type noHalfClose struct{ net.Conn }

// TestRunNoHalfClose: when the side that ended writes to a conn that cannot
// half-close, the pair ends, and that is a normal end.
func TestRunNoHalfClose(t *testing.T) {
	t.Parallel()
	left, a := testnet.TCPPair(t)
	b, right := testnet.TCPPair(t)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), a, noHalfClose{b}, nil) }()
	left.Write([]byte("bye"))
	left.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(right)
	if string(got) != "bye" {
		t.Fatalf("right read %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want a normal end", err)
	}
}

// answerer is a tunnel as the pump sees it: its Read ends cleanly once
// the pump's cut has closed it with an error (CloseWithError), as a
// tunnel's does when its peer answers the close frame it was sent. The cut
// waits until the pump has acted on that end (passed it on, or not), at
// most a little while: what must not happen cannot be waited for.
type answerer struct {
	net.Conn
	answered chan struct{}
	passedOn <-chan struct{}
}

func (a *answerer) Read([]byte) (int, error) {
	<-a.answered
	return 0, io.EOF
}

func (a *answerer) CloseWithError(error) error {
	close(a.answered)
	select {
	case <-a.passedOn:
	case <-time.After(100 * time.Millisecond):
	}
	return a.Conn.Close()
}

// finSpy is a TCP conn that reports its CloseWrite.
type finSpy struct {
	*net.TCPConn
	fin chan struct{}
}

func (f finSpy) CloseWrite() error {
	close(f.fin)
	return f.TCPConn.CloseWrite()
}

// TestCutNotPassedOnAsEnd: a pair being cut does not pass on the end of
// stream that its own cut brought about (a tunnel's peer answering the
// close it was sent): the other side is reset, not ended cleanly. Before
// the fix the copy passed that end on with CloseWrite, and the target
// read a FIN, a complete stream, before the cut's reset.
func TestCutNotPassedOnAsEnd(t *testing.T) {
	t.Parallel()
	_, tunnel := testnet.TCPPair(t)
	b, target := testnet.TCPPair(t)
	spy := finSpy{b.(*net.TCPConn), make(chan struct{})}
	a := &answerer{Conn: tunnel, answered: make(chan struct{}), passedOn: spy.fin}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, a, spy, nil) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	target.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := target.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the target read %v, want a reset", err)
	}
}
