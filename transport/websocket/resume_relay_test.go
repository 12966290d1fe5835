package websocket

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// cutRelay sits between a client and a server on loopback: it forwards each
// connection it accepts to the server, and the test can cut every
// connection through it (reset both sides) or refuse new ones.
type cutRelay struct {
	ln      net.Listener
	backend string

	mu      sync.Mutex
	pairs   map[*cutPair]struct{}
	refuse  bool
	accepts int
	wg      sync.WaitGroup
}

type cutPair struct {
	a, b   *net.TCPConn
	frozen atomic.Bool   // forwards nothing more, closes nothing: a silent drop
	dead   chan struct{} // closed by reset
	once   sync.Once
}

func startCutRelay(t testing.TB, backend string) *cutRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &cutRelay{ln: ln, backend: backend, pairs: make(map[*cutPair]struct{})}
	r.wg.Add(1)
	go r.loop()
	t.Cleanup(func() {
		ln.Close()
		r.cut()
		r.wg.Wait()
	})
	return r
}

func (r *cutRelay) url() string { return "http://" + r.ln.Addr().String() }

func (r *cutRelay) loop() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			return
		}
		a := nc.(*net.TCPConn)
		r.mu.Lock()
		r.accepts++
		refuse := r.refuse
		r.mu.Unlock()
		if refuse {
			a.SetLinger(0)
			a.Close()
			continue
		}
		bc, err := net.Dial("tcp", r.backend)
		if err != nil {
			a.Close()
			continue
		}
		p := &cutPair{a: a, b: bc.(*net.TCPConn), dead: make(chan struct{})}
		r.mu.Lock()
		r.pairs[p] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.copy(p, p.b, p.a)
		go r.copy(p, p.a, p.b)
	}
}

func (r *cutRelay) copy(p *cutPair, dst, src *net.TCPConn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.frozen.Load() {
			<-p.dead // silent until the test (or cleanup) resets it
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				r.reset(p)
				return
			}
		}
		if err == io.EOF {
			dst.CloseWrite()
			return
		}
		if err != nil {
			r.reset(p)
			return
		}
	}
}

// freeze makes every connection through the relay now go silent both
// ways, as a NAT that forgot its mapping: nothing is forwarded, nothing
// closed.
func (r *cutRelay) freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.pairs {
		p.frozen.Store(true)
	}
}

func (r *cutRelay) reset(p *cutPair) {
	r.mu.Lock()
	delete(r.pairs, p)
	r.mu.Unlock()
	p.once.Do(func() { close(p.dead) })
	p.a.SetLinger(0)
	p.b.SetLinger(0)
	p.a.Close()
	p.b.Close()
}

// cut resets every connection through the relay now.
func (r *cutRelay) cut() {
	r.mu.Lock()
	ps := make([]*cutPair, 0, len(r.pairs))
	for p := range r.pairs {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		r.reset(p)
	}
}

// setRefuse makes the relay reset the connections it accepts from now on
// (or forward them again).
func (r *cutRelay) setRefuse(v bool) {
	r.mu.Lock()
	r.refuse = v
	r.mu.Unlock()
}
