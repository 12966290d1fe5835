package reference

import (
	"context"
	"io"
	"net"
	"sync"
)

// Forwarder is the SDK's ProxyPort: it accepts on a local listener and, for
// each connection, opens a fresh tunnel and copies both ways with io.Copy,
// one goroutine per direction, closing the other side when a copy ends.
type Forwarder struct {
	ln   net.Listener
	dial func(ctx context.Context) (net.Conn, error)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Forward starts forwarding ln's connections to the tunnels that dial
// opens. Close stops it.
func Forward(ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) *Forwarder {
	f := &Forwarder{ln: ln, dial: dial, conns: make(map[net.Conn]struct{})}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.wg.Add(1)
	go f.accept()
	return f
}

// Addr is the local address to connect to.
func (f *Forwarder) Addr() net.Addr { return f.ln.Addr() }

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go f.handle(c)
	}
}

func (f *Forwarder) handle(local net.Conn) {
	defer f.wg.Done()
	defer local.Close()
	if !f.track(local, true) {
		return
	}
	defer f.track(local, false)
	remote, err := f.dial(f.ctx)
	if err != nil {
		return
	}
	defer remote.Close()
	if !f.track(remote, true) {
		return
	}
	defer f.track(remote, false)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer remote.Close()
		io.Copy(remote, local)
	}()
	go func() {
		defer wg.Done()
		defer local.Close()
		io.Copy(local, remote)
	}()
	wg.Wait()
}

// track adds c to (or removes it from) the conns Close closes; adding
// fails once Close has begun.
func (f *Forwarder) track(c net.Conn, live bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !live {
		delete(f.conns, c)
		return true
	}
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

// Close closes the listener and every forwarded connection, and waits for
// the forwarder's goroutines.
func (f *Forwarder) Close() error {
	f.cancel()
	err := f.ln.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}

var _ io.Closer = (*Forwarder)(nil)
