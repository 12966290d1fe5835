// Package pump is the one place where spriteproxy copies bytes: between an
// accepted local connection and its tunnel on the client, and between a
// tunnel and its target on the server.
//
// A pump copies both ways at once. When one side reaches end of stream, the
// pump passes it on with CloseWrite (a TCP FIN, or the tunnel's "eof"
// message) and keeps copying the other way, exactly as two ends of one TCP
// connection would behave. When both ways have ended, or either failed, or
// the context is done, both conns are closed and Run returns.
package pump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/spriteproxy/spriteproxy/internal/pool"
)

// Counters count the bytes a pump moved, updated as data moves so that they
// can be read while it runs: per chunk copied, and at least every MiB when
// two TCP sockets splice.
type Counters struct {
	AToB atomic.Int64 // bytes read from a and written to b
	BToA atomic.Int64 // bytes read from b and written to a
}

// CopierFrom is implemented by conns that can fill themselves from a reader
// with less copying than a plain Read/Write loop (the WebSocket tunnel reads
// straight into a frame buffer). It returns nil at r's end of stream, and
// adds each chunk to count (which may be nil) as it is written.
type CopierFrom interface {
	CopyFrom(r io.Reader, count *atomic.Int64) (int64, error)
}

// CopierTo is implemented by conns that can drain themselves into a writer
// with less copying than a plain Read/Write loop. It returns nil at its own
// end of stream, and adds each chunk to count (which may be nil) as it is
// written.
type CopierTo interface {
	CopyTo(w io.Writer, count *atomic.Int64) (int64, error)
}

// ErrClosedByPeer is returned by a CopierTo whose peer has closed the
// stream both ways (not just ended its writing): the pump then ends the
// pair at once, gracefully, instead of waiting for the other direction,
// and Run reports a normal end.
var ErrClosedByPeer = errors.New("pump: peer closed both ways")

// EndAwaiter is implemented by conns that keep learning about their peer
// after their reads reached its end of stream (a tunnel whose peer still
// has to close it, or may vanish). Once the pump has passed a's end of
// stream on, it calls a.AwaitEnd, which returns nil when the peer ended
// the conn cleanly (the pair is then over) and an error when the peer was
// lost first (the pair is then cut, and the other conn reset).
type EndAwaiter interface {
	AwaitEnd() error
}

// ErrNoWatch is what AwaitEnd returns when the conn has nothing to watch
// (a stream with no framing, whose end of stream was its last word): the
// direction is then simply over, as for a conn with no AwaitEnd.
var ErrNoWatch = errors.New("pump: nothing to watch after end of stream")

// Ender is implemented by conns that can learn of their own end while no
// Read or Write of theirs is under way (a tunnel's keep-alive finding its
// peer gone): f is called once, in a goroutine of its own, with the reason;
// stop undoes the arrangement and reports whether it did so before f was
// started. The pump then cuts the pair at once instead of waiting on the
// other conn, which may be silent for ever.
type Ender interface {
	AfterEnd(f func(error)) (stop func() bool)
}

// ErrorCloser is implemented by conns that can tell their peer why they
// close (a tunnel's close code): the pump calls CloseWithError instead of
// Close when the other conn failed, so that the cut reaches the peer as a
// cut, never as a clean end of stream.
type ErrorCloser interface {
	CloseWithError(err error) error
}

// errPeerReset is a TCP conn's end of stream that was its peer's reset,
// reported to another call (see wasReset); it is ECONNRESET to errors.Is,
// as the read's own error would have been.
var errPeerReset = fmt.Errorf("pump: end of stream after the peer's reset: %w", syscall.ECONNRESET)

// errEnded is the abort reason of a normal end: both directions reached
// end of stream, or a peer closed both ways.
var errEnded = errors.New("pump: ended")

// Run copies between a and b in both directions until both have ended, one
// has failed, or ctx is done; then it closes both and returns. It returns
// nil when both directions reached end of stream, context.Cause(ctx) if ctx
// ended the copy, or the first I/O error otherwise. c may be nil.
//
// A pair that ends with an error is cut: a conn that can say why
// (ErrorCloser) is closed with the error, and a TCP conn, or one that
// wraps a TCP conn (NetConn, as TLS does), is reset (its peer reads
// ECONNRESET, not a clean end of stream).
//
// Run starts one goroutine for the a→b direction and waits for it, and
// for a cut that an Ender started: nothing it started outlives it.
func Run(ctx context.Context, a, b net.Conn, c *Counters) error {
	if c == nil {
		c = new(Counters)
	}
	p := &pair{a: a, b: b}
	stop := context.AfterFunc(ctx, func() {
		p.abort(context.Cause(ctx))
	})
	var stops []func() bool
	for _, x := range []net.Conn{a, b} {
		if e, ok := x.(Ender); ok {
			stops = append(stops, e.AfterEnd(func(err error) { p.abort(err) }))
		}
	}

	done := make(chan error, 1)
	go p.forward(done, &c.AToB)
	errBack := p.copy(a, b, false, &c.BToA)
	errFwd := <-done

	if !stop() {
		// The abort has started: run it here if its goroutine has not got
		// to it yet, or wait for it, so that nothing it does happens after
		// Run returns. (An empty Do here would use up the Once before the
		// abort ran, and neither it nor the abort(nil) below would close
		// the conns.)
		p.abort(context.Cause(ctx))
	}
	for _, s := range stops {
		if !s() {
			p.abort(nil) // waits for the Ender's abort to finish
		}
	}
	p.abort(nil)

	if err := p.cause(); err != nil {
		return err
	}
	if errFwd != nil {
		return errFwd
	}
	return errBack
}

type pair struct {
	a, b      net.Conn
	shutA     atomic.Bool // CloseWrite on a has been called (or is under way)
	shutB     atomic.Bool
	ended     atomic.Int32 // directions that reached end of stream and passed it on
	abortOnce sync.Once
	mu        sync.Mutex
	reason    error // why the pair was aborted early, if it was
}

// forward is the a→b direction, run in its own goroutine so that stacks
// name it.
func (p *pair) forward(done chan<- error, count *atomic.Int64) {
	done <- p.copy(p.b, p.a, true, count)
}

// copy moves src to dst until src ends, then half-closes dst; fwd says
// that src is a. On an error it aborts the pair, so that the other
// direction stops too. Once both directions have ended, the pair is over;
// while the other one still runs, a src that can (EndAwaiter) goes on
// watching its peer, so that a peer lost meanwhile cuts the pair instead
// of leaving it to a silent other side for ever.
func (p *pair) copy(dst, src net.Conn, fwd bool, count *atomic.Int64) error {
	_, err := Copy(dst, src, count)
	srcShut, dstShut := &p.shutA, &p.shutB
	if !fwd {
		srcShut, dstShut = &p.shutB, &p.shutA
	}
	if err == nil && !srcShut.Load() && wasReset(src) {
		// The reset went to the other direction's write: this end of
		// stream is a cut, and passing it on would end dst cleanly.
		err = errPeerReset
	}
	if errors.Is(err, ErrClosedByPeer) {
		p.abort(errEnded)
		return nil
	}
	if err == nil && p.aborted() {
		// The pair is being cut (or closed): this end of stream is the
		// abort's doing, src's peer answering the close it was sent, and
		// passing it on would end dst cleanly before the cut reaches it.
		return nil
	}
	if err == nil {
		hc, ok := dst.(interface{ CloseWrite() error })
		if !ok {
			// dst cannot carry an end of stream alone: closing it ends the
			// pair, which is a normal end, not the other way's failure.
			p.abort(errEnded)
			return nil
		}
		dstShut.Store(true)
		err = hc.CloseWrite()
	}
	if err == nil {
		if p.ended.Add(1) == 2 {
			p.abort(errEnded)
			return nil
		}
		if w, ok := src.(EndAwaiter); ok {
			err = w.AwaitEnd()
			if errors.Is(err, ErrNoWatch) {
				return nil
			}
			if err == nil {
				p.abort(errEnded)
				return nil
			}
		}
	}
	if err != nil {
		if p.aborted() {
			return nil // the failure is the abort's doing, reported by cause
		}
		p.abort(err)
	}
	return err
}

// abort closes both conns once; reason (nil or errEnded for a normal end)
// is kept for cause.
//
// A normal end closes both gracefully, so that a tunnel's peer reads the
// close frame. Any other reason cuts the pair: conns close at once where
// they can (CloseNow), so that a peer that does not read cannot hold the
// close up, a conn that can say why (ErrorCloser) does, and a TCP conn is
// reset, so that neither peer reads the cut as a clean end of stream.
func (p *pair) abort(reason error) {
	p.abortOnce.Do(func() {
		p.mu.Lock()
		p.reason = reason
		p.mu.Unlock()
		if reason != nil && reason != errEnded {
			cut(p.a, reason)
			cut(p.b, reason)
			return
		}
		// A tunnel closes gracefully once its copy loops let go of it; one
		// may be blocked writing to the other conn, so that one (a plain
		// conn) closes first.
		first, second := p.a, p.b
		if _, ok := p.a.(CopierTo); ok {
			if _, ok := p.b.(CopierTo); !ok {
				first, second = p.b, p.a
			}
		}
		first.Close()
		second.Close()
	})
}

// cut closes c after the pair failed for reason: with the reason where c
// can carry it, else with a reset where c is a TCP conn, or wraps one
// (NetConn, as a *tls.Conn does), else at once.
func cut(c net.Conn, reason error) {
	if ec, ok := c.(ErrorCloser); ok {
		ec.CloseWithError(reason)
		return
	}
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	} else if w, ok := c.(interface{ NetConn() net.Conn }); ok {
		// A wrapper's own Close ends its stream cleanly (TLS sends
		// close_notify, which its peer reads as io.EOF): the conn under
		// it is cut first, so that the peer sees the reset and the
		// wrapper's Close can no longer send anything.
		if inner := w.NetConn(); inner != nil && inner != c {
			cut(inner, reason)
		}
	}
	if cn, ok := c.(interface{ CloseNow() error }); ok {
		cn.CloseNow()
		return
	}
	c.Close()
}

func (p *pair) aborted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason != nil
}

// cause is why the pair was cut, if something other than its own copies
// cut it (the context, or an Ender).
func (p *pair) cause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reason == errEnded {
		return nil
	}
	return p.reason
}

// Copy copies src to dst until src's end of stream (nil error) or an error,
// adding each chunk to count (which may be nil) as it is written. It takes
// the fastest path the two conns allow: the tunnel's own frame copy, splice
// between two TCP sockets, or a loop through a pooled buffer.
func Copy(dst io.Writer, src io.Reader, count *atomic.Int64) (int64, error) {
	if s, ok := src.(CopierTo); ok {
		return s.CopyTo(dst, count)
	}
	if d, ok := dst.(CopierFrom); ok {
		return d.CopyFrom(src, count)
	}
	if d, ok := dst.(*net.TCPConn); ok {
		if _, ok := src.(*net.TCPConn); ok {
			return spliceCopy(d, src, count)
		}
	}
	return bufferCopy(dst, src, count)
}

// spliceChunk is how much one splice step moves before the count is
// updated.
const spliceChunk = 1 << 20

// spliceCopy moves TCP to TCP through the kernel (Go splices a
// LimitedReader over a TCPConn), a chunk at a time so that count stays live.
func spliceCopy(dst *net.TCPConn, src io.Reader, count *atomic.Int64) (int64, error) {
	var total int64
	lr := &io.LimitedReader{R: src}
	for {
		lr.N = spliceChunk
		n, err := dst.ReadFrom(lr)
		total += n
		if count != nil {
			count.Add(n)
		}
		if err != nil {
			return total, err
		}
		if n == 0 || lr.N > 0 {
			// ReadFrom stops early only at src's end of stream.
			return total, nil
		}
	}
}

// bufferCopy is io.Copy through a pooled buffer that is held only while
// data moves (pool.Read borrows it once src has data).
func bufferCopy(dst io.Writer, src io.Reader, count *atomic.Int64) (int64, error) {
	var total int64
	for {
		bp, nr, rerr := pool.Read(src)
		if nr > 0 {
			nw, werr := dst.Write((*bp)[pool.Headroom : pool.Headroom+nr])
			total += int64(nw)
			if count != nil {
				count.Add(int64(nw))
			}
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				pool.Put(bp)
				return total, werr
			}
		}
		if bp != nil {
			pool.Put(bp)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
