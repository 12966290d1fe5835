// Package mux carries several byte streams on one connection, each with
// its own flow control, for the benchmarks' study of a multiplexed mode
// (issue 17): how one stream's latency fares while another stream's bulk
// shares the connection. It is the benchmarks' model of such a mode, not
// the library's: spriteproxy itself has no multiplexed tunnels.
//
// # Wire
//
// Every frame is a 9-byte header, then its payload:
//
//	type (1 byte) | stream id (4 bytes, big endian) | payload length (4 bytes)
//
//	SYN     the client opens stream id (odd, increasing); payload: the
//	        address the server should connect the stream to (≤ 255 bytes)
//	DATA    bytes of the stream (≤ 16 KiB a frame)
//	WINDOW  payload: 4 bytes, more send credit for the stream
//	FIN     the sender will send no more DATA on the stream
//	RST     the stream is abandoned (a refused dial, say), both ways
//
// Each side of a stream starts with InitialWindow bytes of send credit; a
// receiver with a larger Window grants the rest at once (the client right
// after SYN, the server on accepting), and grants back what the
// application has read each time it reaches half the window. A sender
// that overruns the credit it was given is a protocol error, which ends
// the session: so a slow reader holds back only its own stream, and the
// memory a stream can take is its window.
//
// Only the client opens streams. Either side may send DATA right after
// SYN: a stream costs no round trip of its own.
package mux

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

const (
	frameSyn    byte = 1
	frameData   byte = 2
	frameWindow byte = 3
	frameFin    byte = 4
	frameRst    byte = 5

	headerSize = 9
	// MaxFrame is the largest DATA payload a frame carries.
	MaxFrame = 16 << 10
	// InitialWindow is the send credit each side of a new stream starts
	// with (hashicorp/yamux's default window).
	InitialWindow = 256 << 10
	maxAddr       = 255
	acceptBacklog = 256
)

var (
	// ErrSessionClosed is the error of every operation on a session (and
	// its streams) after the session has ended, whether by Close or by
	// the connection's loss; the cause, if any, is wrapped beside it.
	ErrSessionClosed = errors.New("mux: session closed")
	// ErrReset is a stream's error after the peer reset it.
	ErrReset = errors.New("mux: stream reset by peer")
	// ErrClosed is a stream's error for a Write after its CloseWrite or
	// Close, or for a Read after its Close.
	ErrClosed = errors.New("mux: stream closed")
	// ErrProtocol is the cause of a session ended by a malformed frame or
	// an overrun window.
	ErrProtocol = errors.New("mux: protocol error")
)

// Session is one connection carrying streams.
type Session struct {
	conn   net.Conn
	window int
	client bool

	wmu sync.Mutex // serialises frame writes; Close does not take it

	mu      sync.Mutex
	streams map[uint32]*Stream
	nextID  uint32
	err     error // set once, when the session ends

	accept    chan *Stream
	ended     chan struct{} // closed when the session has ended
	readDone  chan struct{} // closed when the read loop has returned
	closeOnce sync.Once
	bufs      sync.Pool
}

// Client starts the opening side of a session on c, whose streams take a
// receive window of window bytes each (InitialWindow if smaller). The
// session owns c from now on.
func Client(c net.Conn, window int) *Session { return newSession(c, window, true) }

// Server starts the accepting side of a session on c.
func Server(c net.Conn, window int) *Session { return newSession(c, window, false) }

func newSession(c net.Conn, window int, client bool) *Session {
	s := &Session{
		conn: c, window: max(window, InitialWindow), client: client,
		streams: make(map[uint32]*Stream), nextID: 1,
		accept: make(chan *Stream, acceptBacklog), ended: make(chan struct{}), readDone: make(chan struct{}),
	}
	s.bufs.New = func() any { b := make([]byte, headerSize+MaxFrame); return &b }
	go s.readLoop()
	return s
}

// Close ends the session: its connection is closed, every stream fails
// with ErrSessionClosed, and Close returns once the read loop has exited.
// It may be called more than once, from any goroutine.
func (s *Session) Close() error {
	s.end(nil)
	<-s.readDone
	return nil
}

// Err is why the session ended (nil while it runs).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// end records why the session ends, closes the connection (which unblocks
// any frame write in progress) and fails every stream.
func (s *Session) end(cause error) {
	s.closeOnce.Do(func() {
		err := ErrSessionClosed
		if cause != nil {
			err = fmt.Errorf("%w: %w", ErrSessionClosed, cause)
		}
		s.mu.Lock()
		s.err = err
		streams := s.streams
		s.streams = map[uint32]*Stream{}
		s.mu.Unlock()
		close(s.ended)
		s.conn.Close()
		for _, st := range streams {
			st.fail(err)
		}
	})
}

// Open opens a stream to addr (for the server to connect it to). It costs
// no round trip: the SYN goes out, and data may follow at once; a refusal
// arrives as ErrReset on a later Read or Write.
func (s *Session) Open(addr string) (*Stream, error) {
	if !s.client {
		return nil, errors.New("mux: only the client opens streams")
	}
	if len(addr) > maxAddr {
		return nil, fmt.Errorf("mux: address of %d bytes, at most %d", len(addr), maxAddr)
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	id := s.nextID
	s.nextID += 2
	st := newStream(s, id, addr)
	s.streams[id] = st
	s.mu.Unlock()
	if err := s.writeFrame(frameSyn, id, []byte(addr)); err != nil {
		return nil, err
	}
	if err := st.grantExtra(); err != nil {
		return nil, err
	}
	return st, nil
}

// Accept returns the next stream the client opened.
func (s *Session) Accept() (*Stream, error) {
	select {
	case st := <-s.accept:
		if err := st.grantExtra(); err != nil {
			return nil, err
		}
		return st, nil
	case <-s.ended:
		return nil, s.Err()
	}
}

// writeFrame sends one frame. The lock only orders frames: Close never
// takes it, and closing the connection ends a write in progress.
func (s *Session) writeFrame(typ byte, id uint32, payload []byte) error {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	b := (*bp)[:headerSize+len(payload)]
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:5], id)
	binary.BigEndian.PutUint32(b[5:9], uint32(len(payload)))
	copy(b[headerSize:], payload)
	s.wmu.Lock()
	_, err := s.conn.Write(b)
	s.wmu.Unlock()
	if err != nil {
		s.end(err)
		return s.Err()
	}
	return nil
}

func (s *Session) stream(id uint32) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

func (s *Session) forget(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

// readLoop is the session's one goroutine: it reads frames until the
// connection fails or a frame is malformed, then ends the session.
func (s *Session) readLoop() {
	defer close(s.readDone)
	r := bufio.NewReaderSize(s.conn, 64<<10)
	var hdr [headerSize]byte
	payload := make([]byte, MaxFrame)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			s.end(err)
			return
		}
		typ, id, n := hdr[0], binary.BigEndian.Uint32(hdr[1:5]), binary.BigEndian.Uint32(hdr[5:9])
		if err := s.handle(r, typ, id, n, payload); err != nil {
			s.end(err)
			return
		}
	}
}

func (s *Session) handle(r io.Reader, typ byte, id, n uint32, payload []byte) error {
	limit := uint32(0)
	switch typ {
	case frameSyn:
		limit = maxAddr
	case frameData:
		limit = MaxFrame
	case frameWindow:
		limit = 4
	case frameFin, frameRst:
	default:
		return fmt.Errorf("%w: frame type %d", ErrProtocol, typ)
	}
	if n > limit || (typ == frameWindow && n != 4) {
		return fmt.Errorf("%w: frame type %d with %d bytes", ErrProtocol, typ, n)
	}
	p := payload[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		return err
	}
	if typ == frameSyn {
		if s.client || id%2 != 1 || s.stream(id) != nil {
			return fmt.Errorf("%w: SYN for stream %d", ErrProtocol, id)
		}
		st := newStream(s, id, string(p))
		s.mu.Lock()
		s.streams[id] = st
		s.mu.Unlock()
		select {
		case s.accept <- st:
		default:
			// Backlog full: refuse the stream. This is the only frame a
			// read loop writes, and only the server's: the client's read
			// loop never writes, so it always drains what this waits on.
			s.forget(id)
			return s.writeFrame(frameRst, id, nil)
		}
		return nil
	}
	st := s.stream(id)
	if st == nil {
		return nil // a stream already forgotten (reset, or closed both ways)
	}
	switch typ {
	case frameData:
		return st.received(p)
	case frameWindow:
		st.credited(int(binary.BigEndian.Uint32(p)))
	case frameFin:
		st.finReceived()
	case frameRst:
		st.fail(ErrReset)
		s.forget(id)
	}
	return nil
}
