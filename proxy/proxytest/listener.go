package proxytest

import (
	"fmt"
	"net"
	"sync"
)

// frontListener keeps the server's listener open for the server's whole
// life, Restarts included, and hands its connections to the tunnel server
// serving now. The address is never given up, so that no other listener
// (another test's on port 0, with WithLoopbackTCP) can take it while a
// Restart is under way, and a client dialing then waits in the backlog
// for the new server instead of being refused.
//
// Its one goroutine accepts; close ends it.
type frontListener struct {
	ln    net.Listener
	conns chan net.Conn // unbuffered: a conn is handed to one generation
	quit  chan struct{} // closed by close
	done  chan struct{} // closed when the goroutine has exited
	err   error         // why ln's Accept failed; read after done
}

func newFrontListener(ln net.Listener) *frontListener {
	f := &frontListener{ln: ln, conns: make(chan net.Conn), quit: make(chan struct{}), done: make(chan struct{})}
	go f.accept()
	return f
}

func (f *frontListener) accept() {
	defer close(f.done)
	for {
		c, err := f.ln.Accept()
		if err != nil {
			f.err = err
			return
		}
		select {
		case f.conns <- c:
		case <-f.quit:
			c.Close()
			return
		}
	}
}

// broken reports why the listener no longer accepts, or nil.
func (f *frontListener) broken() error {
	select {
	case <-f.done:
		return fmt.Errorf("proxytest: the server's listener failed: %w", f.err)
	default:
		return nil
	}
}

// close closes the listener and waits for the goroutine.
func (f *frontListener) close() {
	close(f.quit)
	f.ln.Close()
	<-f.done
}

// generation is the listener one tunnel server serves on: closing it
// leaves the front listener open for the next.
type generation struct {
	f      *frontListener
	once   sync.Once
	closed chan struct{}
}

func (f *frontListener) generation() *generation {
	return &generation{f: f, closed: make(chan struct{})}
}

// Accept implements net.Listener.
func (g *generation) Accept() (net.Conn, error) {
	select {
	case <-g.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-g.f.conns:
		return c, nil
	case <-g.closed:
		return nil, net.ErrClosed
	case <-g.f.done:
		return nil, g.f.broken()
	}
}

// Close implements net.Listener; the front listener stays open.
func (g *generation) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

// Addr implements net.Listener.
func (g *generation) Addr() net.Addr { return g.f.ln.Addr() }
