package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// The SOCKS5 protocol's numbers (RFC 1928).
const (
	socksVersion = 0x05

	socksMethodNoAuth       = 0x00
	socksMethodNoAcceptable = 0xff

	socksCmdConnect = 0x01

	socksAtypIPv4   = 0x01
	socksAtypDomain = 0x03
	socksAtypIPv6   = 0x04
)

// SOCKS5 reply codes (RFC 1928 §6), as a SOCKS5 server sends them.
const (
	SOCKS5Succeeded           byte = 0x00
	SOCKS5GeneralFailure      byte = 0x01
	SOCKS5NotAllowed          byte = 0x02 // connection not allowed by ruleset
	SOCKS5NetworkUnreachable  byte = 0x03
	SOCKS5HostUnreachable     byte = 0x04
	SOCKS5ConnectionRefused   byte = 0x05
	SOCKS5TTLExpired          byte = 0x06
	SOCKS5CommandNotSupported byte = 0x07
	SOCKS5AddrTypeUnsupported byte = 0x08
)

// Defaults of a SOCKS5 server's zero fields.
const (
	DefaultSOCKS5HandshakeTimeout = 10 * time.Second
	DefaultSOCKS5DialTimeout      = 30 * time.Second
)

// ErrSOCKS5Closed is what SOCKS5.Serve returns once Close was called.
var ErrSOCKS5Closed = errors.New("proxy: SOCKS5 server closed")

// ErrSOCKS5Protocol is matched (errors.Is) by the error a SOCKS5 server
// logs for a client that broke the protocol: a version other than 5, no
// acceptable authentication method, a command other than CONNECT, an
// unknown address type, or a request cut short.
var ErrSOCKS5Protocol = errors.New("SOCKS5 protocol error")

// SOCKS5 is a SOCKS5 proxy server (RFC 1928) whose every connection is a
// tunnel: a client's CONNECT to host:port becomes one call of Dial with
// that address, as the client gave it. Names are not resolved here: they
// go to Dial (and so, with Sprite.DialContext, to the server's policy and
// the sprite's resolver), which is the "socks5h" behaviour of curl and
// browsers. An address given as IPv4 or IPv6 goes to Dial as that literal.
//
// Only CONNECT is served, with no authentication: serve it on a loopback
// listener, as anything that can reach the listener can open tunnels with
// the Client's token. A Dial error is answered with the RFC's reply code:
//
//	dialer.ErrTargetRefused     0x05 connection refused
//	dialer.ErrTargetForbidden   0x02 connection not allowed by ruleset
//	dialer.ErrTargetUnreachable 0x04 host unreachable
//	dialer.ErrBadAddress        0x08 address type not supported
//	anything else               0x01 general SOCKS server failure
//
// and a request it does not serve with 0x07 (a command other than CONNECT)
// or 0x08 (an unknown address type). A greeting that offers no "no
// authentication" method is answered 0xFF and closed; one with a version
// other than 5 is closed without a reply.
//
// Once CONNECT succeeded, bytes are copied both ways and end of stream is
// passed on each way as a half-close, as in ProxySocket; a tunnel that
// fails resets the client's connection.
//
// The zero value is not usable: Dial must be set (Sprite.SOCKS5 returns a
// server for one sprite). Fields must not change once Serve was called. A
// SOCKS5 is safe for concurrent use; Serve may be called for several
// listeners.
type SOCKS5 struct {
	// Dial opens a tunnel to addr ("host:port", an IPv6 host in brackets),
	// network "tcp". ctx bounds the dial only.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// HandshakeTimeout bounds a client's greeting and request; 0 means
	// DefaultSOCKS5HandshakeTimeout.
	HandshakeTimeout time.Duration

	// DialTimeout bounds each Dial; 0 means DefaultSOCKS5DialTimeout.
	DialTimeout time.Duration

	// Logger gets a debug line per connection (its target, how it ended,
	// bytes each way) and per refused request; nil means slog.Default().
	Logger *slog.Logger

	once   sync.Once
	ctx    context.Context // ended by Close: every connection ends
	cancel context.CancelFunc
	wg     sync.WaitGroup // every connection's goroutine

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}

	accepted, active, failed, sent, received atomic.Int64
}

// SOCKS5Stats are a SOCKS5 server's counters at one moment: connections
// accepted, active and whose CONNECT failed, and bytes forwarded each way
// by the connections that ended (Sent: client to tunnel).
type SOCKS5Stats struct {
	Accepted, Active, Failed int64
	Sent, Received           int64
}

// SOCKS5 returns a SOCKS5 server whose tunnels open inside this sprite
// (Dial is s.DialContext). Serve it with Serve; Close stops it.
func (s *Sprite) SOCKS5() *SOCKS5 {
	return &SOCKS5{Dial: s.DialContext, Logger: s.client.logger}
}

func (s *SOCKS5) init() {
	s.once.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.lns = make(map[net.Listener]struct{})
	})
}

// Serve accepts connections on ln and serves each in a goroutine of its
// own, until ln fails or Close is called; it closes ln when it returns. It
// returns ErrSOCKS5Closed after Close, or the listener's error. The
// connections it started are the server's: Close ends them and waits for
// them. A temporary accept error (out of descriptors) is retried after a
// pause.
func (s *SOCKS5) Serve(ln net.Listener) error {
	if s.Dial == nil {
		ln.Close()
		return errors.New("proxy: SOCKS5 with no Dial")
	}
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrSOCKS5Closed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrSOCKS5Closed
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				t := time.NewTimer(pause)
				select {
				case <-t.C:
				case <-s.ctx.Done():
					t.Stop()
				}
				continue
			}
			return fmt.Errorf("proxy: SOCKS5 accept on %v: %w", ln.Addr(), err)
		}
		pause = 0
		// Under mu, so that no connection starts once Close waits.
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrSOCKS5Closed
		}
		s.accepted.Add(1)
		s.active.Add(1)
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Close stops the server: it closes the listeners of every Serve and every
// connection (those being forwarded are cut), and returns once all the
// server's goroutines have exited. It is idempotent and returns nil.
func (s *SOCKS5) Close() error {
	s.init()
	s.mu.Lock()
	s.closed = true
	s.cancel()
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Stats returns the server's counters; they move while it runs.
func (s *SOCKS5) Stats() SOCKS5Stats {
	return SOCKS5Stats{
		Accepted: s.accepted.Load(), Active: s.active.Load(), Failed: s.failed.Load(),
		Sent: s.sent.Load(), Received: s.received.Load(),
	}
}

func (s *SOCKS5) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// serveConn runs one client connection: handshake, dial, then the copy.
func (s *SOCKS5) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer s.active.Add(-1)
	log := s.logger()
	start := time.Now()

	// Until the copy owns c, Close reaches it through this.
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	handshake := cmp.Or(s.HandshakeTimeout, DefaultSOCKS5HandshakeTimeout)
	c.SetDeadline(time.Now().Add(handshake))
	target, err := socksHandshake(c)
	if err != nil {
		stop()
		c.Close()
		log.Debug("socks5 request refused", "client", c.RemoteAddr(), "err", err)
		return
	}

	ctx, cancel := context.WithTimeout(s.ctx, cmp.Or(s.DialTimeout, DefaultSOCKS5DialTimeout))
	remote, err := s.Dial(ctx, "tcp", target)
	cancel()
	c.SetDeadline(time.Now().Add(handshake)) // for the reply: the dial may have outlasted the first
	if err != nil {
		if s.ctx.Err() == nil {
			s.failed.Add(1)
		}
		code := SOCKS5ReplyCode(err)
		c.Write(socksReply(code))
		stop()
		c.Close()
		log.Debug("socks5 connect failed", "client", c.RemoteAddr(), "target", target, "reply", code, "err", err)
		return
	}
	if _, err := c.Write(socksReply(SOCKS5Succeeded)); err != nil {
		stop()
		c.Close()
		remote.Close()
		log.Debug("socks5 client gone before the reply", "client", c.RemoteAddr(), "target", target, "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	stop() // from here pump.Run closes c when s.ctx ends
	log.Debug("socks5 tunnel open", "client", c.RemoteAddr(), "target", target, "setup", time.Since(start))

	var counts pump.Counters
	err = pump.Run(s.ctx, c, remote, &counts)
	s.sent.Add(counts.AToB.Load())
	s.received.Add(counts.BToA.Load())
	attrs := []any{"client", c.RemoteAddr(), "target", target,
		"sent", counts.AToB.Load(), "received", counts.BToA.Load(), "duration", time.Since(start)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	log.Debug("socks5 tunnel closed", attrs...)
}

// SOCKS5ReplyCode is the reply code a SOCKS5 server sends for a Dial error
// (see SOCKS5 for the table).
func SOCKS5ReplyCode(err error) byte {
	switch {
	case err == nil:
		return SOCKS5Succeeded
	case errors.Is(err, dialer.ErrTargetRefused):
		return SOCKS5ConnectionRefused
	case errors.Is(err, dialer.ErrTargetForbidden):
		return SOCKS5NotAllowed
	case errors.Is(err, dialer.ErrTargetUnreachable):
		return SOCKS5HostUnreachable
	case errors.Is(err, dialer.ErrBadAddress):
		return SOCKS5AddrTypeUnsupported
	}
	return SOCKS5GeneralFailure
}

// socksError is a client's protocol violation, with the reply it got (or
// none, for a bad version).
type socksError struct {
	reply int // -1: none sent
	msg   string
}

func (e *socksError) Error() string { return "SOCKS5 protocol error: " + e.msg }
func (e *socksError) Is(target error) bool {
	return target == ErrSOCKS5Protocol
}

// socksHandshake reads the client's greeting and CONNECT request (RFC 1928
// §3, §4) and returns the address asked for. A request it does not serve
// is answered with its reply code before the error returns; so is a
// greeting without the no-authentication method.
func socksHandshake(c net.Conn) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", &socksError{-1, fmt.Sprintf("greeting cut short: %v", err)}
	}
	if hdr[0] != socksVersion {
		return "", &socksError{-1, fmt.Sprintf("version %d, not 5", hdr[0])}
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", &socksError{-1, fmt.Sprintf("greeting cut short: %v", err)}
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == socksMethodNoAuth
	}
	if !noAuth {
		c.Write([]byte{socksVersion, socksMethodNoAcceptable})
		return "", &socksError{socksMethodNoAcceptable, fmt.Sprintf("no acceptable authentication method in %v (only 0, none, is served)", methods)}
	}
	if _, err := c.Write([]byte{socksVersion, socksMethodNoAuth}); err != nil {
		return "", err
	}

	var req [4]byte // VER CMD RSV ATYP
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return "", &socksError{-1, fmt.Sprintf("request cut short: %v", err)}
	}
	if req[0] != socksVersion {
		c.Write(socksReply(SOCKS5GeneralFailure))
		return "", &socksError{int(SOCKS5GeneralFailure), fmt.Sprintf("request version %d, not 5", req[0])}
	}
	if req[1] != socksCmdConnect {
		c.Write(socksReply(SOCKS5CommandNotSupported))
		return "", &socksError{int(SOCKS5CommandNotSupported), fmt.Sprintf("command %d (only 1, CONNECT, is served)", req[1])}
	}
	var host string
	switch req[3] {
	case socksAtypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(c, a[:]); err != nil {
			return "", &socksError{-1, fmt.Sprintf("request cut short: %v", err)}
		}
		host = netip.AddrFrom4(a).String()
	case socksAtypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(c, a[:]); err != nil {
			return "", &socksError{-1, fmt.Sprintf("request cut short: %v", err)}
		}
		host = netip.AddrFrom16(a).String()
	case socksAtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return "", &socksError{-1, fmt.Sprintf("request cut short: %v", err)}
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return "", &socksError{-1, fmt.Sprintf("request cut short: %v", err)}
		}
		host = string(name)
	default:
		c.Write(socksReply(SOCKS5AddrTypeUnsupported))
		return "", &socksError{int(SOCKS5AddrTypeUnsupported), fmt.Sprintf("address type %d", req[3])}
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return "", &socksError{-1, fmt.Sprintf("request cut short: %v", err)}
	}
	p := int(port[0])<<8 | int(port[1])
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// socksReply is a reply with code and a bound address of 0.0.0.0:0: the
// tunnel has no local address the client could use.
func socksReply(code byte) []byte {
	return []byte{socksVersion, code, 0x00, socksAtypIPv4, 0, 0, 0, 0, 0, 0}
}
