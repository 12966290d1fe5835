package rig

import (
	"io"
	"net"
	"sync"
)

// Service accepts connections on a listener and either runs a handler on
// each or hands them out on Accepted.
type Service struct {
	ln       net.Listener
	handle   func(net.Conn)
	accepted chan net.Conn
	done     chan struct{} // closed by Close

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// NewService serves ln. With a nil handle, accepted conns are queued for
// Accepted and become the caller's to close.
func NewService(ln net.Listener, handle func(net.Conn)) *Service {
	s := &Service{ln: ln, handle: handle, accepted: make(chan net.Conn, 1024), done: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.loop()
	return s
}

// ListenLoopback serves a new listener on 127.0.0.1:0.
func ListenLoopback(handle func(net.Conn)) (*Service, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return NewService(ln, handle), nil
}

// Addr is the listening address.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// Port is the listening port.
func (s *Service) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Accepted delivers accepted conns when the service has no handler.
func (s *Service) Accepted() <-chan net.Conn { return s.accepted }

func (s *Service) loop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if s.handle == nil {
			select {
			case s.accepted <- c:
			case <-s.done:
				c.Close()
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handle(c)
		}()
	}
}

// Live returns the number of conns whose handler runs.
func (s *Service) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes the listener and the conns being handled (and any accepted
// conn not yet taken), and waits for the handlers.
func (s *Service) Close() {
	s.ln.Close()
	close(s.done)
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	for {
		select {
		case c := <-s.accepted:
			c.Close()
		default:
			return
		}
	}
}

var echoBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// Echo writes back what it reads until the peer's end of stream, through a
// pooled buffer so that a connection costs the target no allocation.
func Echo(c net.Conn) {
	bp := echoBuffers.Get().(*[32 << 10]byte)
	defer echoBuffers.Put(bp)
	buf := bp[:]
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Relay is a one-hop plain TCP relay: it forwards each connection to
// target with io.Copy both ways (splice between two TCP sockets), passing
// end of stream on.
func Relay(target string) func(net.Conn) {
	return relay(target, func(dst, src *net.TCPConn) { io.Copy(dst, src) })
}

// RelayCopy is Relay with every byte read into a buffer and written out
// again, as by a relay that must see the bytes (to frame, unmask or
// decrypt them): four kernel copies per byte from writer to target where
// Relay's splice makes two.
func RelayCopy(target string) func(net.Conn) {
	return relay(target, func(dst, src *net.TCPConn) {
		// Hiding ReadFrom and WriteTo keeps io.CopyBuffer off splice.
		io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, relayCopyBuffer))
	})
}

// relayCopyBuffer is RelayCopy's buffer, the size of a tunnel's copy
// buffer.
const relayCopyBuffer = 256 << 10

// relay forwards each connection to target, moving each direction with
// move and passing end of stream on.
func relay(target string, move func(dst, src *net.TCPConn)) func(net.Conn) {
	return func(c net.Conn) {
		t, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer t.Close()
		cc, tc := c.(*net.TCPConn), t.(*net.TCPConn)
		done := make(chan struct{})
		go func() {
			defer close(done)
			move(cc, tc)
			cc.CloseWrite()
		}()
		move(tc, cc)
		tc.CloseWrite()
		<-done
	}
}
