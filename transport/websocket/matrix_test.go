package websocket

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/pump"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// The lifecycle matrix of issue 12: for each side (client, server), each
// way of ending first (close, FIN, RST, going silent, the dead-peer rule,
// the idle rule, a cancelled context) and each kind of peer (a plain v1
// peer, half_close, reuse), one tunnel client → relay → Server → target is
// opened, carries a round trip, and is ended that way. Then:
//
//   - the other side sees the end, within its timeout (every wait is
//     bounded), as the right kind of error: io.EOF only for a clean end, a
//     reset matching syscall.ECONNRESET, a timeout a net.Error whose
//     Timeout() is true (and not the test's own read deadline);
//   - nothing of the tunnel is left: the server's tunnel count is back to
//     0, no goroutine of the case runs a tunnel (they carry a pprof label
//     of the case, so that the check holds while other tests run in
//     parallel), no descriptor of this process is a socket to or from one
//     of the case's listeners (on linux, from /proc/self/fd), and once the
//     case is torn down no goroutine of it is left at all (goleak checks
//     the whole package at its end);
//   - under reuse, a clean end leaves the connection in the Dialer's pool,
//     and a cut one does not.
//
// The relay between the client and the server is a plain TCP relay that
// passes FIN and RST on and can hold either direction: that is how a side
// goes silent (both directions held: a paused process, a lost network), or
// stops being heard while it still hears (one direction held: the peer's
// dead-peer rule fires, and its close 4002 still arrives). The "plain v1
// peer" is our own Dialer and Server with half_close (and so every
// extension) turned off: each side then speaks exactly the base protocol.
//
// Where a case cannot apply by design, the designed behaviour is asserted
// instead: the dead-peer rule applies only to a peer known to answer pings
// (one that negotiated an extension; PROTOCOL.md §3), so a plain peer's
// tunnel survives a silence of two dead-peer timeouts and carries data
// again once the silence ends.

// Timeouts of the matrix: short, so that each case takes a few hundred
// milliseconds at most.
const (
	mxKeepAlive = 30 * time.Millisecond
	mxDeadPeer  = 150 * time.Millisecond
	mxIdle      = 200 * time.Millisecond // (counted from the dial: the round trip must fit within it)
	// mxClose is the close timeout: the close handshake of a clean end
	// must fit within it (on a loaded machine, with the relay's hop).
	mxClose = time.Second
	// mxSurvive is how long a plain peer's tunnel is watched surviving a
	// silence: what must not happen (the tunnel's end) cannot be waited
	// for, so a Read waits out its own deadline.
	mxSurvive = 2 * mxDeadPeer
)

// Tunings of one side: quiet has no timer at all (no ping, no rule), watch
// pings and applies the dead-peer rule, idle applies the idle rule.
var (
	mxQuiet = Tuning{KeepAlive: -1, CloseTimeout: mxClose}
	mxWatch = Tuning{KeepAlive: mxKeepAlive, DeadPeerTimeout: mxDeadPeer, CloseTimeout: mxClose}
	mxIdler = Tuning{KeepAlive: -1, IdleTimeout: mxIdle, CloseTimeout: mxClose}
)

// The kinds of peer.
const (
	mxPlain     = "plain"
	mxHalfClose = "half_close"
	mxReuse     = "reuse"
)

// endKind is what an end must look like to the side that sees it.
type endKind int

const (
	endClean   endKind = iota // io.EOF from a Read, nil from the server
	endLost                   // a cut: not io.EOF, matching dialer.ErrTunnelClosed, ECONNRESET or EPIPE
	endReset                  // matches syscall.ECONNRESET
	endTimeout                // a net.Error with Timeout() true, not the test's read deadline
)

func (k endKind) String() string {
	return [...]string{"a clean end", "a cut tunnel", "a reset", "a timeout"}[k]
}

// wantEnd fails the test unless err is an end of kind want.
func wantEnd(t *testing.T, what string, err error, want endKind) {
	t.Helper()
	var ok bool
	switch want {
	case endClean:
		ok = err == nil || err == io.EOF
	case endLost:
		ok = err != nil && err != io.EOF && !errors.Is(err, errDeadline) &&
			(errors.Is(err, dialer.ErrTunnelClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
	case endReset:
		ok = errors.Is(err, syscall.ECONNRESET)
	case endTimeout:
		ok = err != io.EOF && isTimeout(err) && !errors.Is(err, errDeadline)
	}
	if !ok {
		t.Fatalf("%s: %v (%T), want %v", what, err, err, want)
	}
}

// matrixEnd is one row of the matrix: who ends first, and how.
type matrixEnd struct {
	who, how string
	// The client's and the server's tunings.
	client, server Tuning
	// run ends the tunnel c of e; it reports whether the end is clean
	// (then, under reuse, the connection stays in the Dialer's pool).
	run func(e *matrixEnv, c *Conn) (clean bool)
}

var matrixEnds = []matrixEnd{
	{"client", "close", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		if err := c.Close(); err != nil {
			e.t.Fatalf("Close: %v", err)
		}
		wantEnd(e.t, "the target's read", e.targetEnd(), endClean)
		wantEnd(e.t, "the server's end", e.serverEnd(), endClean)
		return true
	}},
	{"client", "fin", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// The client's socket ends its writing without a closing
		// handshake: the server must take the client as gone, cut the
		// target and tell what is left of the client so.
		c.rawTCP().CloseWrite()
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end", e.serverEnd(), endLost)
		wantEnd(e.t, "the client's read after its FIN", readEnd(c), endLost)
		c.Close()
		return false
	}},
	{"client", "rst", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		tcp := c.rawTCP()
		tcp.SetLinger(0)
		tcp.Close()
		c.CloseNow()
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end", e.serverEnd(), endReset)
		return false
	}},
	{"client", "silent", mxQuiet, mxWatch, func(e *matrixEnv, c *Conn) bool {
		// The client neither sends nor receives (a paused process, a lost
		// network); it has no timer of its own.
		e.rl.hold(c2s, s2c)
		if e.ext == mxPlain {
			e.survives(c)
			return true
		}
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end (its dead-peer rule)", e.serverEnd(), endTimeout)
		e.rl.release()
		// Back, the client reads the server's close 4002, held meanwhile.
		wantEnd(e.t, "the client's read once back", readEnd(c), endTimeout)
		c.Close()
		return false
	}},
	{"client", "deadpeer", mxWatch, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// The client hears nothing from the server (its pongs are held)
		// while the server still hears it: the client's dead-peer rule
		// ends the tunnel, and its close 4002 reaches the server.
		e.rl.hold(s2c)
		if e.ext == mxPlain {
			e.survives(c)
			return true
		}
		wantEnd(e.t, "the client's read (its dead-peer rule)", readEnd(c), endTimeout)
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end (the client's 4002)", e.serverEnd(), endTimeout)
		e.rl.release()
		c.Close()
		return false
	}},
	{"client", "idle", mxIdler, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// The idle rule applies to every peer, plain ones included.
		wantEnd(e.t, "the client's read (its idle rule)", readEnd(c), endTimeout)
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end (the client's 4002)", e.serverEnd(), endTimeout)
		c.Close()
		return false
	}},
	{"client", "ctx", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// As ProxyPort does: a local connection pumped to the tunnel, the
		// pump's context cancelled.
		app, local := testnet.TCPPair(e.t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ran := make(chan error, 1)
		go func() { ran <- pump.Run(ctx, local, c, nil) }()
		roundTrip(e.t, app, []byte("through the pump"))
		cancel()
		if err := recv(e.t, ran, "the pump's end"); !errors.Is(err, context.Canceled) {
			e.t.Fatalf("pump.Run = %v, want context.Canceled", err)
		}
		wantEnd(e.t, "the local application's read", readEnd(app), endReset)
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end (the client's 4001)", e.serverEnd(), endReset)
		return false
	}},

	{"server", "close", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// The target closed after its echo (see newMatrixEnv): the server
		// passes the end of stream on.
		wantEnd(e.t, "the client's read", readEnd(c), endClean)
		if err := c.Close(); err != nil {
			e.t.Fatalf("Close: %v", err)
		}
		wantEnd(e.t, "the server's end", e.serverEnd(), endClean)
		return true
	}},
	{"server", "fin", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// The server's socket ends its writing without a closing
		// handshake: a cut stream, never a clean end, for the client.
		e.srvSock.CloseWrite()
		wantEnd(e.t, "the client's read", readEnd(c), endLost)
		c.Close()
		e.serverEnd()
		return false
	}},
	{"server", "rst", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		e.srvSock.SetLinger(0)
		e.srvSock.Close()
		wantEnd(e.t, "the client's read", readEnd(c), endReset)
		c.Close()
		e.serverEnd()
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		return false
	}},
	{"server", "silent", mxWatch, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// The server neither sends nor receives; it has no timer of its
		// own. The client's dead-peer rule ends the tunnel; once back, the
		// server learns of it and frees everything.
		e.rl.hold(c2s, s2c)
		if e.ext == mxPlain {
			e.survives(c)
			return true
		}
		wantEnd(e.t, "the client's read (its dead-peer rule)", readEnd(c), endTimeout)
		c.Close()
		e.rl.release()
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end once back", e.serverEnd(), endLost)
		return false
	}},
	{"server", "deadpeer", mxQuiet, mxWatch, func(e *matrixEnv, c *Conn) bool {
		// The server hears nothing from the client while the client still
		// hears it: the server's dead-peer rule ends the tunnel with 4002.
		e.rl.hold(c2s)
		if e.ext == mxPlain {
			e.survives(c)
			return true
		}
		wantEnd(e.t, "the client's read (the server's 4002)", readEnd(c), endTimeout)
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end (its dead-peer rule)", e.serverEnd(), endTimeout)
		e.rl.release()
		c.Close()
		return false
	}},
	{"server", "idle", mxQuiet, mxIdler, func(e *matrixEnv, c *Conn) bool {
		wantEnd(e.t, "the client's read (the server's 4002)", readEnd(c), endTimeout)
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		wantEnd(e.t, "the server's end (its idle rule)", e.serverEnd(), endTimeout)
		c.Close()
		return false
	}},
	{"server", "ctx", mxQuiet, mxQuiet, func(e *matrixEnv, c *Conn) bool {
		// Server.Close cancels the server's context: every tunnel is cut,
		// and Close returns once they are gone. The client reads
		// meanwhile and closes at the end, as an application would, so
		// that the server's close is answered at once (a plain peer
		// answers only once its own side ends).
		read := make(chan error, 1)
		go func() {
			err := readEnd(c)
			c.Close()
			read <- err
		}()
		e.srv.Close()
		if n := e.srv.Live(); n != 0 {
			e.t.Fatalf("Live() = %d after Close", n)
		}
		wantEnd(e.t, "the client's read (the server's 4001)", recv(e.t, read, "the client's read"), endReset)
		wantEnd(e.t, "the target's read", e.targetEnd(), endReset)
		c.Close()
		e.serverEnd()
		return false
	}},
}

// TestLifecycleMatrix runs the matrix; see above.
func TestLifecycleMatrix(t *testing.T) {
	t.Parallel()
	for _, end := range matrixEnds {
		t.Run(end.who+"/"+end.how, func(t *testing.T) {
			t.Parallel()
			for _, ext := range []string{mxPlain, mxHalfClose, mxReuse} {
				t.Run(ext, func(t *testing.T) {
					t.Parallel()
					e := newMatrixEnv(t, end, ext)
					c := e.dial()
					roundTrip(t, c, []byte("ping"))
					e.srvSock = recv(t, e.srvSocks, "the server's accepted connection")
					clean := end.run(e, c)
					e.finish(c, clean)
				})
			}
		})
	}
}

// matrixEnv is one case's world: the target, the server, the relay and
// the client's Dialer.
type matrixEnv struct {
	t        *testing.T
	ext      string
	srv      *Server
	rl       *relay
	d        *Dialer
	srvSocks chan *net.TCPConn // the server's accepted connections
	srvSock  *net.TCPConn      // the server's end of the tunnel's connection
	ports    []int             // the listeners of the case

	ended    chan error // the server's "tunnel closed" error
	endOnce  sync.Once
	endErr   error
	tgEnded  chan error // how the target's reads ended: nil for a clean EOF
	tgCloses bool       // the target closes after its first echo
}

func newMatrixEnv(t *testing.T, end matrixEnd, ext string) *matrixEnv {
	e := &matrixEnv{
		t:        t,
		ext:      ext,
		srvSocks: make(chan *net.TCPConn, 4),
		ended:    make(chan error, 4),
		tgEnded:  make(chan error, 4),
		tgCloses: end.who == "server" && end.how == "close",
	}
	// Registered first, so that it runs once everything else is torn
	// down; the label marks every goroutine this case starts (they inherit
	// it), and only those.
	label := t.Name()
	t.Cleanup(func() { waitNoGoroutines(t, label, nil) })
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("matrix", label)))

	tgPort := testnet.Listen(t, e.target)
	e.srv = newServer()
	e.srv.Tuning = end.server
	e.srv.Logger = slog.New(endLog{e.ended})
	e.srv.DisableHalfClose = ext == mxPlain
	e.srv.DisableReuse = ext != mxReuse
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, e.srv, &grabListener{Listener: inner, got: e.srvSocks}, true)
	e.rl = startRelay(t, inner.Addr().String())
	e.d = &Dialer{
		BaseURL:          "http://" + e.rl.ln.Addr().String(),
		Token:            testToken,
		DisableResume:    true, // the matrix is about one Conn's lifecycle
		Tuning:           end.client,
		DisableHalfClose: ext == mxPlain,
		DisableReuse:     ext != mxReuse,
		DisableRawStream: true,
	}
	t.Cleanup(e.d.CloseIdleConnections)
	e.ports = []int{tgPort, inner.Addr().(*net.TCPAddr).Port, e.rl.ln.Addr().(*net.TCPAddr).Port}
	return e
}

// dial opens the case's tunnel and checks that it has the extensions the
// case is about.
func (e *matrixEnv) dial() *Conn {
	e.t.Helper()
	c := dialTo(e.t, e.d, "s", net.JoinHostPort("127.0.0.1", itoa(e.ports[0])))
	got := mxPlain
	switch {
	case c.Reuse():
		got = mxReuse
	case c.HalfClose():
		got = mxHalfClose
	}
	if got != e.ext {
		e.t.Fatalf("the tunnel negotiated %s, want %s", got, e.ext)
	}
	return c
}

// target echoes; it reports how its reads ended (nil for a clean end of
// stream) on e.tgEnded. With tgCloses, it closes after its first echo.
func (e *matrixEnv) target(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			c.Write(buf[:n])
			if e.tgCloses {
				return // (testnet closes c: a FIN, all it was sent being read)
			}
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			e.tgEnded <- err
			return
		}
	}
}

// targetEnd is how the target's reads ended.
func (e *matrixEnv) targetEnd() error {
	e.t.Helper()
	return recv(e.t, e.tgEnded, "the target's end")
}

// serverEnd is the error with which the server ended the tunnel (nil for
// a clean end), once it has.
func (e *matrixEnv) serverEnd() error {
	e.t.Helper()
	e.endOnce.Do(func() { e.endErr = recv(e.t, e.ended, "the server's end of the tunnel") })
	return e.endErr
}

// survives checks the designed behaviour of a plain peer whose other side
// went silent (held by the relay): the tunnel outlives two dead-peer
// timeouts (a Read waits out the test's own deadline, and the server has
// not ended the tunnel), and carries data again once the silence ends.
func (e *matrixEnv) survives(c *Conn) {
	e.t.Helper()
	c.SetReadDeadline(time.Now().Add(mxSurvive))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, errDeadline) {
		e.t.Fatalf("a plain peer's tunnel ended while silent: Read = %d, %v; want the test's own deadline", n, err)
	}
	select {
	case err := <-e.ended:
		e.t.Fatalf("the server ended a plain peer's silent tunnel: %v", err)
	default:
	}
	c.SetReadDeadline(time.Time{})
	e.rl.release()
	roundTrip(e.t, c, []byte("still here"))
	if err := c.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	wantEnd(e.t, "the target's read", e.targetEnd(), endClean)
	wantEnd(e.t, "the server's end", e.serverEnd(), endClean)
}

// finish checks that nothing of the tunnel is left once it has ended.
func (e *matrixEnv) finish(c *Conn, clean bool) {
	t := e.t
	t.Helper()
	c.Close()
	e.serverEnd()
	if e.ext == mxReuse {
		want := 0
		if clean {
			want = 1
		}
		if n := e.d.IdleConnections(); n != want {
			t.Fatalf("%d idle connections in the pool after the tunnel's end, want %d", n, want)
		}
		// The idle connection is not the tunnel's: closing it frees the
		// server's side too.
		e.d.CloseIdleConnections()
	}
	waitFor(t, "the server's tunnel count to drop to 0", func() bool { return e.srv.Live() == 0 })
	waitNoGoroutines(t, t.Name(), tunnelFuncs)
	if canCountSockets { // (the descriptors are counted from /proc/self/fd)
		var n int
		var err error
		deadline := time.Now().Add(5 * time.Second)
		for n, err = caseSockets(e.ports); err == nil && n > 0 && time.Now().Before(deadline); n, err = caseSockets(e.ports) {
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			t.Fatalf("%d descriptors of the tunnel's sockets still open", n)
		}
	}
}

// tunnelFuncs are the functions in which a tunnel's goroutines run: none
// of a case may be left in them once its tunnel has ended.
var tunnelFuncs = []string{
	"spriteproxy/internal/pump.",
	"websocket.(*Server).serve",
	"websocket.(*Conn).",
	"websocket.(*relay).pipe",
	"websocket.(*matrixEnv).target",
}

// waitNoGoroutines waits up to 5 s until no goroutine labelled with label
// (other than a test's own) runs, or, with funcs, runs any of them; it
// fails the test with their stacks if some are left.
func waitNoGoroutines(t *testing.T, label string, funcs []string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		left = labelledGoroutines(label, funcs)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d goroutine stacks of the case left:\n%s", len(left), strings.Join(left, "\n\n"))
}

// labelledGoroutines returns the goroutine profile's records (stacks with
// their counts) that carry the matrix label, skipping tests' own
// goroutines and, with funcs, keeping only those in one of funcs.
func labelledGoroutines(label string, funcs []string) []string {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 1)
	mark := "# labels: {" + strconv.Quote("matrix") + ":" + strconv.Quote(label) + "}"
	var out []string
	for rec := range strings.SplitSeq(buf.String(), "\n\n") {
		if !strings.Contains(rec, mark) || strings.Contains(rec, "testing.tRunner") {
			continue
		}
		keep := funcs == nil
		for _, f := range funcs {
			keep = keep || strings.Contains(rec, f)
		}
		if keep {
			out = append(out, rec)
		}
	}
	return out
}

// readEnd reads c until an error, at most 5 s, and returns the error (the
// deadline's, which no wantEnd takes, if the end never came).
func readEnd(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return err
		}
	}
}

// endLog is a slog.Handler that passes on the error of each "tunnel
// closed" line of the server.
type endLog struct{ ch chan<- error }

func (h endLog) Enabled(context.Context, slog.Level) bool { return true }
func (h endLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h endLog) WithGroup(string) slog.Handler            { return h }

func (h endLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "tunnel closed" {
		return nil
	}
	var err error
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			err, _ = a.Value.Any().(error)
		}
		return true
	})
	select {
	case h.ch <- err:
	default:
	}
	return nil
}

// grabListener passes on each connection it accepts (the server's end of
// the tunnel's connection, which the server cases end under the server).
type grabListener struct {
	net.Listener
	got chan<- *net.TCPConn
}

func (l *grabListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.got <- c.(*net.TCPConn):
		default:
		}
	}
	return c, err
}

// The relay's directions.
const (
	c2s = iota // client to server
	s2c        // server to client
)

// relay is a TCP relay from its listener to the server that passes each
// direction's FIN and RST on, and can hold either direction: held, it
// passes nothing (data, FIN or RST) until released.
type relay struct {
	ln     net.Listener
	server string
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	open   [2]chan struct{} // closed while the direction flows
	conns  []net.Conn
}

// startRelay relays to server until the test's cleanup, which closes
// every connection and waits for the relay's goroutines.
func startRelay(t *testing.T, server string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, server: server, done: make(chan struct{})}
	for i := range r.open {
		r.open[i] = make(chan struct{})
		close(r.open[i])
	}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		r.mu.Lock()
		close(r.done)
		ln.Close()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		a, err := r.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", r.server)
		if err != nil {
			a.Close()
			continue
		}
		r.mu.Lock()
		select {
		case <-r.done:
			r.mu.Unlock()
			a.Close()
			b.Close()
			return
		default:
		}
		r.conns = append(r.conns, a, b)
		r.wg.Add(3)
		r.mu.Unlock()
		var both sync.WaitGroup
		both.Add(2)
		go r.pipe(&both, c2s, b.(*net.TCPConn), a.(*net.TCPConn))
		go r.pipe(&both, s2c, a.(*net.TCPConn), b.(*net.TCPConn))
		go func() {
			defer r.wg.Done()
			both.Wait()
			a.Close()
			b.Close()
		}()
	}
}

// pipe copies src to dst in direction dir, and passes src's end on: a FIN
// as a FIN, a reset as a reset.
func (r *relay) pipe(both *sync.WaitGroup, dir int, dst, src *net.TCPConn) {
	defer r.wg.Done()
	defer both.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !r.flows(dir) {
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				src.CloseRead() // dst is gone: its own pipe passes that on
				return
			}
		}
		switch {
		case err == nil:
			continue
		case err == io.EOF:
			dst.CloseWrite()
		case errors.Is(err, syscall.ECONNRESET):
			dst.SetLinger(0)
			dst.Close()
		default:
			dst.Close()
		}
		return
	}
}

// flows waits until direction dir is not held; false if the relay is
// being torn down.
func (r *relay) flows(dir int) bool {
	r.mu.Lock()
	open := r.open[dir]
	r.mu.Unlock()
	select {
	case <-open:
		return true
	case <-r.done:
		return false
	}
}

// hold stops the directions dirs.
func (r *relay) hold(dirs ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range dirs {
		select {
		case <-r.open[d]:
			r.open[d] = make(chan struct{})
		default:
		}
	}
}

// release lets every direction flow again.
func (r *relay) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, open := range r.open {
		select {
		case <-open:
		default:
			close(open)
		}
	}
}

// Focused regressions of what the matrix found, each failing on the code
// before its fix.

// TestOwnTimeoutWinsOverPeerClose: once our idle or dead-peer rule has
// ended a tunnel (expire: close 4002 sent, connection not yet closed), the
// peer's answering close 1000 does not turn the end into a clean one: the
// copy towards the target reports the timeout, so that the target is cut,
// not closed as if the stream were complete. Before the fix CopyTo
// returned the peer's clean end (ErrClosedByPeer), and a Read io.EOF.
func TestOwnTimeoutWinsOverPeerClose(t *testing.T) {
	t.Parallel()
	client, server := connPair(t, true, Tuning{KeepAlive: -1, CloseTimeout: time.Second})
	// The state expire leaves between its close 4002 and closing the
	// connection.
	dead := error(&net.OpError{Op: "read", Net: "websocket", Err: &timeoutError{"no data either way: idle tunnel closed"}})
	server.deadErr.Store(&dead)
	closed := make(chan error, 1)
	go func() { closed <- client.Close() }() // the peer's close 1000
	_, err := server.CopyTo(io.Discard, nil)
	if err != dead {
		t.Fatalf("CopyTo after our timeout and the peer's close = %v, want the timeout", err)
	}
	if _, err := server.Read(make([]byte, 1)); err != dead {
		t.Fatalf("Read after our timeout and the peer's close = %v, want the timeout", err)
	}
	server.CloseNow()
	recv(t, closed, "the client's Close")
}

// TestCloseWaitsForWriteUnderWay: Close while a Write still holds the
// write side (its bytes out, its goroutine not yet run again) waits for it
// and sends the close frame, so that the peer reads a clean end. Before
// the fix Close took the held write side for a blocked Write and closed at
// once without a close frame: the peer read a connection lost.
func TestCloseWaitsForWriteUnderWay(t *testing.T) {
	t.Parallel()
	client, server := connPair(t, false, Tuning{KeepAlive: -1, CloseTimeout: 5 * time.Second})
	label := t.Name()
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("matrix", label)))
	client.wmu.Lock() // the Write under way
	closed := make(chan error, 1)
	go func() { closed <- client.Close() }()
	// Wait until Close waits for the write side (or fail at once if it
	// returned without it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case err := <-closed:
			client.wmu.Unlock()
			t.Fatalf("Close returned (%v) while a Write held the write side", err)
		default:
		}
		waiting := false
		for _, g := range labelledGoroutines(label, []string{"websocket.(*Conn).close+"}) {
			waiting = waiting || strings.Contains(g, "Mutex).Lock")
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			client.wmu.Unlock()
			t.Fatal("Close never came to wait for the write side")
		}
		time.Sleep(time.Millisecond)
	}
	client.wmu.Unlock()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the peer read %v, want the clean end of Close's close frame", err)
	}
	server.Close() // answers the close frame: the client's Close returns
	if err := recv(t, closed, "the client's Close"); err != nil {
		t.Fatalf("Close = %v", err)
	}
}
