package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// Config describes one forwarded port. Dialer and RemotePort are required;
// every other field works at its zero value.
type Config struct {
	// Dialer opens one stream per accepted connection. Required.
	Dialer dialer.Dialer

	// Sprite is the name of the sprite the streams are dialed in, passed to
	// the Dialer as is.
	Sprite string

	// RemoteHost is the host dialed inside the sprite: a name, an IPv4
	// address, or an IPv6 address with or without brackets ("fdf::1",
	// "[::1]"). Empty means "localhost".
	RemoteHost string

	// RemotePort is the port dialed inside the sprite, 1-65535.
	RemotePort int

	// LocalHost is where the session listens. Empty means "localhost",
	// served on both 127.0.0.1 and ::1 where the machine has both.
	LocalHost string

	// LocalPort is the port the session listens on, 0-65535; 0 lets the
	// OS (or Listen) pick a free one, which Session.Port reports.
	LocalPort int

	// Listen opens the session's listeners; nil means ListenOS. For
	// "localhost" it is called with ("tcp4", "127.0.0.1:port") and ("tcp6",
	// "[::1]:port"); for any other host with ("tcp", "host:port").
	Listen ListenFunc

	// DialTimeout bounds each stream's dial, tunnel handshake included.
	// Zero means DefaultDialTimeout; a negative value means no bound but the
	// session's own life.
	DialTimeout time.Duration

	// Logger receives a debug line per stream opened and closed, and
	// warnings about the listener. Nil means slog.Default() at Start.
	Logger *slog.Logger
}

// DefaultDialTimeout is how long a stream's dial may take when
// Config.DialTimeout is zero: long enough for a slow tunnel handshake plus
// the sprite's own dial of the target.
const DefaultDialTimeout = 30 * time.Second

// Validate checks c as Start does, with no I/O: a Dialer is set, the local
// port is in 0-65535, and the remote host and port make a valid address.
// Address errors match dialer.ErrBadAddress with errors.Is.
func (c *Config) Validate() error {
	_, err := c.target()
	return err
}

// target validates c and returns the "host:port" its streams dial.
func (c *Config) target() (string, error) {
	if c.Dialer == nil {
		return "", errors.New("session: no Dialer")
	}
	if err := dialer.CheckPort(c.LocalPort, true); err != nil {
		return "", fmt.Errorf("session: local %w", err)
	}
	target := dialer.HostPort(c.RemoteHost, c.RemotePort)
	if _, _, err := dialer.SplitAddress("tcp", target); err != nil {
		return "", fmt.Errorf("session: remote %w", err)
	}
	return target, nil
}

// errClosed is the cause a session is cancelled with by Close.
var errClosed = errors.New("session closed")

// A Session forwards connections accepted on a local port to an address
// inside a sprite. It is safe for concurrent use.
type Session struct {
	dialer      dialer.Dialer
	sprite      string
	target      string
	dialTimeout time.Duration
	listeners   []net.Listener
	log         *slog.Logger

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // the accept loops and every stream
	done   chan struct{}  // closed once all of the session's goroutines ended

	streamID atomic.Uint64
	accepted atomic.Int64
	active   atomic.Int64
	failed   atomic.Int64

	mu       sync.Mutex
	live     map[*pump.Counters]resumer // the streams being pumped: their counters and, if it counts them, their conn's resumes
	sent     int64                      // bytes of the streams that ended, local → sprite
	received int64                      // bytes of the streams that ended, sprite → local
	resumes  int64                      // resumes of the streams that ended
}

// Start validates cfg, opens the session's listeners and starts accepting.
//
// ctx bounds the whole life of the session: when it is done, the session
// closes as if Close had been called. An error is returned, with no
// goroutine left behind, if cfg is invalid, ctx is already done, or a
// listener cannot be opened (a local port in use, for one).
func Start(ctx context.Context, cfg Config) (*Session, error) {
	target, err := cfg.target()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	listenFn := cfg.Listen
	if listenFn == nil {
		listenFn = ListenOS
	}
	host := cfg.LocalHost
	if host == "" {
		host = "localhost"
	}
	ls, err := listen(ctx, listenFn, host, cfg.LocalPort)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}

	s := &Session{
		dialer:      cfg.Dialer,
		sprite:      cfg.Sprite,
		target:      target,
		dialTimeout: cfg.DialTimeout,
		listeners:   ls,
		log:         log,
		done:        make(chan struct{}),
		live:        make(map[*pump.Counters]resumer),
	}
	if s.dialTimeout == 0 {
		s.dialTimeout = DefaultDialTimeout
	}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	log.Debug("session listening", "addrs", s.Addrs(), "sprite", s.sprite, "target", s.target)
	s.wg.Add(len(ls))
	for _, l := range ls {
		go s.acceptLoop(l)
	}
	go s.run()
	return s, nil
}

// run closes the listeners once the session's context is done, waits for
// the accept loops and streams to end, and marks the session done.
func (s *Session) run() {
	<-s.ctx.Done()
	for _, l := range s.listeners {
		l.Close()
	}
	s.wg.Wait()
	s.log.Debug("session closed", "addr", s.Addr(), "sprite", s.sprite, "target", s.target, "accepted", s.accepted.Load())
	close(s.done)
}

// Close stops the session: it closes the listeners and every connection
// being forwarded, and returns once all the session's goroutines have
// exited. It may be called any number of times, from any goroutine; it
// always returns nil.
func (s *Session) Close() error {
	s.stop()
	<-s.done
	return nil
}

// stop starts closing the session without waiting.
func (s *Session) stop() { s.cancel(errClosed) }

// Wait blocks until the session has closed (by Close, its context, or a
// failed listener) and all its goroutines have exited.
func (s *Session) Wait() { <-s.done }

// Done returns a channel closed when Wait would return.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err reports why the session ended: nil while it runs and after Close, the
// context's cause if its context ended it, or the error of a listener that
// failed.
func (s *Session) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	if err := context.Cause(s.ctx); err != errClosed {
		return err
	}
	return nil
}

// Addr returns the address of the session's first listener (127.0.0.1:port
// for localhost where the machine has IPv4).
func (s *Session) Addr() net.Addr { return s.listeners[0].Addr() }

// Addrs returns the addresses of all the session's listeners.
func (s *Session) Addrs() []net.Addr {
	addrs := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.Addr()
	}
	return addrs
}

// Port returns the local port the session listens on: the one asked for, or
// the one the OS picked for port 0.
func (s *Session) Port() int {
	p, _ := portOf(s.Addr())
	return p
}

// Target returns the "host:port" the session's streams dial inside the
// sprite, IPv6 hosts in brackets.
func (s *Session) Target() string { return s.target }

// Sprite returns the name of the sprite the session forwards to.
func (s *Session) Sprite() string { return s.sprite }

// acceptLoop accepts connections on l and starts a stream for each until
// the session ends. A temporary accept error (out of file descriptors, say)
// is retried after a growing pause; any other ends the session.
func (s *Session) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	var pause time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			if !temporary(err) {
				s.log.Error("session listener failed", "addr", l.Addr(), "err", err)
				s.cancel(fmt.Errorf("session: accept on %v: %w", l.Addr(), err))
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.log.Warn("session accept failed; retrying", "addr", l.Addr(), "err", err, "pause", pause)
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		pause = 0
		s.accepted.Add(1)
		s.active.Add(1)
		s.wg.Add(1)
		go s.serve(c)
	}
}

// temporary reports whether an accept error may go away on its own.
func temporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
