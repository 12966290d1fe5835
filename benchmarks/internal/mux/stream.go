package mux

import (
	"fmt"
	"io"
	"sync"
)

// A stream's two directions each have a state; a reset or the session's
// end fails both at once (err). The transitions are the methods below:
//
//	receive: open → fin (peer's FIN) → closed (local Close)
//	send:    open → fin (CloseWrite or Close)
//	either:  → failed (RST, or the session ended), final
type recvState uint8

const (
	recvOpen   recvState = iota
	recvFin              // the peer sent FIN: Read returns io.EOF once drained
	recvClosed           // closed here, after the peer's FIN
)

type sendState uint8

const (
	sendOpen sendState = iota
	sendFin            // FIN sent: no more DATA
)

// Stream is one stream of a session. One goroutine may Read while another
// Writes; two concurrent Writes interleave their bytes.
type Stream struct {
	s    *Session
	id   uint32
	addr string

	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte // received and not yet read: buf[off:]
	off    int
	unread int // bytes read since the last WINDOW granted
	credit int // bytes this side may still send
	recv   recvState
	send   sendState
	err    error // set once: reset, or the session's end
}

func newStream(s *Session, id uint32, addr string) *Stream {
	st := &Stream{s: s, id: id, addr: addr, credit: InitialWindow}
	st.cond.L = &st.mu
	return st
}

// Addr is the address the stream was opened to.
func (st *Stream) Addr() string { return st.addr }

// grantExtra gives the peer the part of the window above InitialWindow.
func (st *Stream) grantExtra() error {
	if extra := st.s.window - InitialWindow; extra > 0 {
		return st.grant(extra)
	}
	return nil
}

func (st *Stream) grant(n int) error {
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return st.s.writeFrame(frameWindow, st.id, b[:])
}

// Read reads what the peer sent; io.EOF only after the peer's FIN. A
// stream cut short (reset, or the session lost) reads as that error.
func (st *Stream) Read(p []byte) (int, error) {
	st.mu.Lock()
	for st.off == len(st.buf) && st.recv == recvOpen && st.err == nil {
		st.cond.Wait()
	}
	if st.off < len(st.buf) && st.recv != recvClosed {
		n := copy(p, st.buf[st.off:])
		st.off += n
		if st.off == len(st.buf) {
			st.buf, st.off = st.buf[:0], 0
		}
		st.unread += n
		var give int
		if st.unread >= st.s.window/2 && st.recv == recvOpen && st.err == nil {
			give, st.unread = st.unread, 0
		}
		st.mu.Unlock()
		if give > 0 {
			if err := st.grant(give); err != nil {
				return n, err
			}
		}
		return n, nil
	}
	defer st.mu.Unlock()
	switch {
	case st.err != nil:
		return 0, st.err
	case st.recv == recvClosed:
		return 0, ErrClosed
	default:
		return 0, io.EOF
	}
}

// Write sends p, waiting for credit as the peer's reader grants it.
func (st *Stream) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		st.mu.Lock()
		for st.credit == 0 && st.send == sendOpen && st.err == nil {
			st.cond.Wait()
		}
		if err := st.writeErr(); err != nil {
			st.mu.Unlock()
			return done, err
		}
		n := min(st.credit, MaxFrame, len(p))
		st.credit -= n
		st.mu.Unlock()
		if err := st.s.writeFrame(frameData, st.id, p[:n]); err != nil {
			return done, err
		}
		done += n
		p = p[n:]
	}
	return done, nil
}

func (st *Stream) writeErr() error {
	switch {
	case st.err != nil:
		return st.err
	case st.send != sendOpen:
		return ErrClosed
	}
	return nil
}

// CloseWrite sends FIN: the peer reads io.EOF after what was written.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	if err := st.writeErr(); err != nil {
		st.mu.Unlock()
		if err == ErrClosed {
			return nil
		}
		return err
	}
	st.send = sendFin
	done := st.recv != recvOpen
	st.cond.Broadcast()
	st.mu.Unlock()
	err := st.s.writeFrame(frameFin, st.id, nil)
	if done {
		st.s.forget(st.id)
	}
	return err
}

// Close ends the stream. After the peer's FIN it sends FIN (if not sent
// yet): a clean end. Before it, the stream is reset, as a TCP socket
// closed with unread data is: the peer's Read gets ErrReset once it has
// read what came before. It may be called more than once.
func (st *Stream) Close() error {
	st.mu.Lock()
	switch {
	case st.err != nil:
		st.mu.Unlock()
		return nil
	case st.recv == recvOpen:
		st.mu.Unlock()
		return st.Reset()
	}
	st.recv = recvClosed
	st.buf, st.off = nil, 0
	st.cond.Broadcast()
	st.mu.Unlock()
	return st.CloseWrite()
}

// received queues a DATA frame's bytes, from the read loop.
func (st *Stream) received(p []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.err != nil:
		return nil
	case st.recv == recvFin:
		return fmt.Errorf("%w: DATA after FIN on stream %d", ErrProtocol, st.id)
	case st.recv == recvClosed:
		return nil // closed here after the peer's FIN: nothing may follow it
	}
	if len(st.buf)-st.off+st.unread+len(p) > st.s.window {
		return fmt.Errorf("%w: stream %d overran its %d-byte window", ErrProtocol, st.id, st.s.window)
	}
	st.buf = append(st.buf, p...)
	st.cond.Broadcast()
	return nil
}

func (st *Stream) credited(n int) {
	st.mu.Lock()
	st.credit += n
	st.cond.Broadcast()
	st.mu.Unlock()
}

func (st *Stream) finReceived() {
	st.mu.Lock()
	if st.recv == recvOpen {
		st.recv = recvFin
	}
	done := st.send != sendOpen
	st.cond.Broadcast()
	st.mu.Unlock()
	if done {
		st.s.forget(st.id)
	}
}

// fail ends both directions with err (a reset, or the session's end).
func (st *Stream) fail(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.cond.Broadcast()
	st.mu.Unlock()
}

// Reset abandons the stream both ways and tells the peer.
func (st *Stream) Reset() error {
	st.fail(ErrClosed)
	st.s.forget(st.id)
	return st.s.writeFrame(frameRst, st.id, nil)
}
