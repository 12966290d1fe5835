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
	"io"
	"net"
	"sync"
	"sync/atomic"

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

// errEnded is the abort reason of a normal end brought forward by
// ErrClosedByPeer.
var errEnded = errors.New("pump: ended by the peer")

// Run copies between a and b in both directions until both have ended, one
// has failed, or ctx is done; then it closes both and returns. It returns
// nil when both directions reached end of stream, ctx's error if ctx ended
// the copy, or the first I/O error otherwise. c may be nil.
//
// Run starts one goroutine for the a→b direction and waits for it: nothing
// it started outlives it.
func Run(ctx context.Context, a, b net.Conn, c *Counters) error {
	if c == nil {
		c = new(Counters)
	}
	p := &pair{a: a, b: b}
	stop := context.AfterFunc(ctx, func() {
		p.abort(ctx.Err())
	})

	done := make(chan error, 1)
	go p.forward(done, &c.AToB)
	errBack := p.copy(a, b, &c.BToA)
	errFwd := <-done

	if !stop() {
		// The abort has started: run it here if its goroutine has not got
		// to it yet, or wait for it, so that nothing it does happens after
		// Run returns. (An empty Do here would use up the Once before the
		// abort ran, and neither it nor the abort(nil) below would close
		// the conns.)
		p.abort(ctx.Err())
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
	abortOnce sync.Once
	mu        sync.Mutex
	reason    error // why the pair was aborted early, if it was
}

// forward is the a→b direction, run in its own goroutine so that stacks
// name it.
func (p *pair) forward(done chan<- error, count *atomic.Int64) {
	done <- p.copy(p.b, p.a, count)
}

// copy moves src to dst until src ends, then half-closes dst. On an error it
// aborts the pair, so that the other direction stops too.
func (p *pair) copy(dst, src net.Conn, count *atomic.Int64) error {
	_, err := Copy(dst, src, count)
	if errors.Is(err, ErrClosedByPeer) {
		p.abort(errEnded)
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
		err = hc.CloseWrite()
	}
	if err != nil {
		if p.aborted() {
			return nil // the failure is the abort's doing, reported by cause
		}
		p.abort(err)
	}
	return err
}

// abort closes both conns once; reason (nil for a normal end) is kept for
// cause. When the context forces the stop, conns that can close at once
// (CloseNow) do, so that a peer that does not read cannot hold it up;
// otherwise they close gracefully, so that a tunnel's peer still reads the
// close frame that says why (a protocol error, or the other side's reset).
func (p *pair) abort(reason error) {
	p.abortOnce.Do(func() {
		p.mu.Lock()
		p.reason = reason
		p.mu.Unlock()
		if errors.Is(reason, context.Canceled) || errors.Is(reason, context.DeadlineExceeded) {
			closeNow(p.a)
			closeNow(p.b)
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

// closeNow closes c without waiting for its peer, where c can.
func closeNow(c net.Conn) {
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

// cause is the context error that aborted the pair, if one did.
func (p *pair) cause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if errors.Is(p.reason, context.Canceled) || errors.Is(p.reason, context.DeadlineExceeded) {
		return p.reason
	}
	return nil
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
