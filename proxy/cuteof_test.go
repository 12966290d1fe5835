package proxy_test

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// cutRelay is a TCP relay between the client and the tunnel server that
// kills each connection it carries once the server has sent it a chosen
// number of bytes, as a middlebox or a relay process that dies would:
// with a FIN (its sockets closed) or a reset (closed with linger 0).
type cutRelay struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu    sync.Mutex
	after int64                // bytes towards the client before the next connection is killed
	reset bool                 // kill it with a reset rather than a FIN
	kills map[*func()]struct{} // of the connections carried now
}

func newCutRelay(t *testing.T, upstream string) *cutRelay {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &cutRelay{ln: ln, upstream: upstream, after: -1, kills: make(map[*func()]struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.relay(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for k := range r.kills {
			(*k)()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// arm makes the next connection die after n bytes towards the client.
func (r *cutRelay) arm(n int64, reset bool) {
	r.mu.Lock()
	r.after, r.reset = n, reset
	r.mu.Unlock()
}

func (r *cutRelay) relay(down *net.TCPConn) {
	r.mu.Lock()
	after, reset := r.after, r.reset
	r.after = -1
	r.mu.Unlock()
	c, err := net.Dial("tcp4", r.upstream)
	if err != nil {
		down.Close()
		return
	}
	up := c.(*net.TCPConn)
	var once sync.Once
	kill := func() {
		once.Do(func() {
			if reset {
				down.SetLinger(0)
				up.SetLinger(0)
			}
			down.Close()
			up.Close()
		})
	}
	r.mu.Lock()
	r.kills[&kill] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.kills, &kill)
		r.mu.Unlock()
	}()
	defer kill()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(up, down)
		kill()
	}()
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		m := len(buf)
		if after >= 0 {
			m = int(min(int64(m), after-sent))
			if m == 0 {
				break
			}
		}
		n, err := up.Read(buf[:m])
		if n > 0 {
			if _, werr := down.Write(buf[:n]); werr != nil {
				break
			}
			sent += int64(n)
		}
		if err != nil {
			break
		}
	}
	kill()
	<-done
}

// TestCutNeverCleanEOF: with resume off, a stream from the target through
// a ProxyPort whose tunnel's connection is killed mid-transfer (a FIN or
// a reset from a relay between client and server) never reads as a clean
// end of stream on the local conn: the application reads either the
// whole stream or an error.
func TestCutNeverCleanEOF(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	const rounds = 50
	srv := newTestServer(false)
	t.Cleanup(srv.Close)
	srv.ws.DisableResume = true
	srv.Serve(9, func(c net.Conn) {
		// Write the stream and end it; read whatever comes meanwhile.
		read := make(chan struct{})
		go func() {
			defer close(read)
			io.Copy(io.Discard, c)
		}()
		defer func() { <-read }()
		buf := make([]byte, 64<<10)
		for left := size; left > 0; left -= len(buf) {
			if _, err := c.Write(buf); err != nil {
				c.Close() // ends the reader too
				return
			}
		}
		c.(*net.TCPConn).CloseWrite()
	})
	relay := newCutRelay(t, srv.hs.Listener.Addr().String())
	d := websocket.NewDialer("http://"+relay.ln.Addr().String(), testToken)
	d.DisableResume = true
	d.DisableReuse = true // every stream on a connection of its own, killed alone
	c := proxy.New(testToken, proxy.WithDialer(d))
	ps := proxyPort(t, c, 9)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range rounds {
		cut := 1 + rng.Int64N(size-1)
		reset := rng.IntN(2) == 0
		relay.arm(cut, reset)
		lc, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(ps.LocalPort))
		if err != nil {
			// A cut within the tunnel's handshake resets the local conn
			// so soon that the dial itself can see it.
			continue
		}
		lc.SetDeadline(time.Now().Add(30 * time.Second))
		wdone := make(chan error, 1)
		writer := false
		switch rng.IntN(4) {
		case 0: // the application sends nothing and keeps its side open
		case 1: // it sends a request and ends its side
			lc.Write([]byte("GET"))
			lc.(*net.TCPConn).CloseWrite()
		case 2: // it ends its side at once
			lc.(*net.TCPConn).CloseWrite()
		case 3: // it sends a stream of its own meanwhile, then ends its side
			writer = true
			go func() {
				buf := make([]byte, 64<<10)
				for left := size; left > 0; left -= len(buf) {
					if _, err := lc.Write(buf); err != nil {
						wdone <- err
						return
					}
				}
				wdone <- lc.(*net.TCPConn).CloseWrite()
			}()
		}
		n, err := io.Copy(io.Discard, lc)
		var werr error
		if writer {
			werr = <-wdone // bounded by the deadline
		}
		lc.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round %d: the read hung after %d bytes", i, n)
		}
		if err == nil && n < size && werr != nil && !errors.Is(werr, os.ErrDeadlineExceeded) {
			// The kernel hands a reset to one call only: a Write under way
			// can take it, and the Read then sees the end of the socket.
			// The application learned of the cut all the same.
			t.Logf("round %d: the reset went to the write: %v", i, werr)
			continue
		}
		if err == nil && n < size {
			t.Errorf("round %d (cut after %d bytes, reset %v): the local conn read a clean end of stream after %d of %d bytes", i, cut, reset, n, size)
		}
	}
}
