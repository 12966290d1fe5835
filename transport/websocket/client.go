package websocket

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/cork"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// UserAgent is sent with every upgrade request.
const UserAgent = "spriteproxy/1"

// Dialer is the client side of the tunnel: a dialer.Dialer that opens a
// WebSocket to {BaseURL}/v1/sprites/{name}/proxy per stream and speaks the
// Sprites v1 protocol on it. With a server that takes the reuse extension
// (spriteproxy's does), a tunnel closed cleanly leaves its WebSocket idle
// for the next tunnel to the same sprite, as HTTP keep-alive does:
// CloseIdleConnections closes those. Its zero value is not usable (BaseURL is
// required); it is safe for concurrent use once dialing has begun, when it
// must no longer be changed.
type Dialer struct {
	// BaseURL is the API's base, http:// or https:// (ws:// and wss:// are
	// taken as they are). A path in it is kept as a prefix.
	BaseURL string
	// Token is sent as "Authorization: Bearer <Token>"; empty sends none.
	Token string
	// TLSConfig configures wss:// connections (custom RootCAs, client
	// certificates, a minimum version). nil means the system's roots. Its
	// ServerName, if empty, is the BaseURL's host; its MinVersion, if zero,
	// TLS 1.2; its ClientSessionCache, if nil, a cache of the Dialer's own,
	// so that tunnels after the first resume the TLS session.
	TLSConfig *tls.Config
	// NetDial, if set, gives the connection under the WebSocket (TLS is
	// layered on it for wss://): it may come from anywhere, e.g. an
	// in-process network. nil means a net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Proxy chooses the HTTP proxy for the server's URL (http:// for ws,
	// https:// for wss), through which the connection is a CONNECT
	// tunnel; a nil URL means none. nil means ProxyFromEnvironment; use
	// NoProxy for none. The proxy is reached with NetDial if set.
	Proxy func(*url.URL) (*url.URL, error)
	// DisableHalfClose stops the client from asking for the half_close
	// extension, so that it speaks exactly like the Sprites SDK.
	DisableHalfClose bool
	// DisableRawStream stops the client from offering the raw_stream
	// extension (unframed bytes after the handshake), which a server uses
	// only when its operator has turned it on (Server.RawStreams).
	DisableRawStream bool
	// DisableReuse stops the client from offering the reuse extension,
	// by which a tunnel closed cleanly leaves its connection open for the
	// next tunnel to the same sprite (no TCP, TLS or WebSocket handshake
	// then). With it, every tunnel has a connection of its own.
	DisableReuse bool
	// DisableResume stops the client from offering the resume extension,
	// by which a tunnel whose connection drops is carried on over a new
	// one (DialSprite then returns a *ResumableConn when the server grants
	// it, a *Conn otherwise).
	DisableResume bool
	// ResumeBuffer caps, per resumable tunnel, the bytes sent that the
	// server has not acknowledged (a Write past it waits); 0 means
	// DefaultResumeBuffer.
	ResumeBuffer int
	// Optimistic lets a tunnel send its first bytes without waiting for
	// the server's reply (the optimistic extension, PROTOCOL.md §8), one
	// round trip fewer to the first byte back: DialSprite then returns as
	// soon as the request is out, on a reused connection whose server
	// announced the extension or on a fresh one when the server's last
	// upgrade response did (with early_data), and otherwise waits for the
	// reply as always. Up to 64 KiB of writes go out before the reply (a
	// Write past that waits for it); everything else (Read, CloseWrite,
	// Close, the read deadline) waits for the reply. A refused target then
	// surfaces as the typed error (errors.Is dialer.ErrTargetRefused, ...)
	// of the next Read or Write, and the bytes sent are dropped by the
	// server; RemoteAddr is the address asked for. The dial's ctx then
	// bounds only what comes before DialSprite returns, and its deadline
	// (30 s without one) the wait for the reply. Use it where the dial's
	// result needs no answer of its own (a port forward that has accepted
	// its local connection), not where it does (a SOCKS reply).
	Optimistic bool
	// MaxIdlePerSprite caps the idle connections kept per sprite for
	// reuse; negative keeps none. 0, the default, lets the pool follow
	// the demand: every connection a tunnel closed cleanly hands back is
	// kept (each for IdleConnTimeout), up to AdaptiveMaxIdlePerSprite. A
	// new connection is dialed only when no idle one is there, so the pool
	// holds at most as many as the tunnels that were open to the sprite
	// at once within the last IdleConnTimeout: 16 concurrent tunnels leave
	// 16 idle connections for the next 16, where a fixed cap of 8 made
	// half of them pay a fresh TCP and TLS handshake.
	MaxIdlePerSprite int
	// IdleConnTimeout is how long an idle connection is kept for reuse; 0
	// means DefaultIdleConnTimeout.
	IdleConnTimeout time.Duration
	// HalfCloseLinger is how long, after CloseWrite on a tunnel whose
	// server has no half_close (a plain v1 server), the tunnel waits for
	// the server to fall silent before it sends the close frame, so that a
	// reply still in flight is not cut off (see Conn.CloseWrite); as
	// socat's -t. 0 means DefaultHalfCloseLinger; negative sends the close
	// frame at once.
	HalfCloseLinger time.Duration
	// Tuning sets the keep-alive, dead-peer and close timeouts and the
	// message limit; the zero value means the defaults.
	Tuning Tuning
	// Logger receives debug lines for tunnels opened and refused; nil
	// logs nothing.
	Logger *slog.Logger
	// Retry says how a tunnel that fails before the server's reply is
	// tried again on a fresh connection (retry.go); the zero value means
	// the defaults, MaxAttempts 1 none.
	Retry Retry

	once    sync.Once
	initErr error
	base    *url.URL
	header  ws.HandshakeHeader
	cfg     *config
	tlsConf *tls.Config

	// earlyData: the server's last upgrade response said it takes the
	// first message with the upgrade request (the early_data extension).
	earlyData atomic.Bool
	// optimistic: the server's last upgrade response announced the
	// optimistic extension.
	optimistic atomic.Bool

	pmu  sync.Mutex
	idle map[string][]*idleLink // connections kept for reuse, by sprite
}

var _ dialer.Dialer = (*Dialer)(nil)

// NewDialer returns a Dialer for the API at baseURL with token.
func NewDialer(baseURL, token string) *Dialer {
	return &Dialer{BaseURL: baseURL, Token: token}
}

func (d *Dialer) init() error {
	d.once.Do(func() { d.initErr = d.setup() })
	return d.initErr
}

func (d *Dialer) setup() error {
	u, err := url.Parse(d.BaseURL)
	if err != nil {
		return fmt.Errorf("websocket: bad BaseURL %q: %w", d.BaseURL, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return fmt.Errorf("websocket: BaseURL %q: scheme must be http, https, ws or wss", d.BaseURL)
	}
	if u.Host == "" {
		return fmt.Errorf("websocket: BaseURL %q has no host", d.BaseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	d.base = u
	h := http.Header{"User-Agent": {UserAgent}}
	if d.Token != "" {
		h.Set("Authorization", "Bearer "+d.Token)
	}
	d.header = ws.HandshakeHeaderHTTP(h)
	if d.cfg, err = d.Tuning.config(); err != nil {
		return err
	}
	d.cfg.linger = d.HalfCloseLinger
	if d.cfg.linger == 0 {
		d.cfg.linger = DefaultHalfCloseLinger
	}
	if u.Scheme == "wss" {
		d.tlsConf = d.TLSConfig.Clone()
		if d.tlsConf == nil {
			d.tlsConf = &tls.Config{}
		}
		if d.tlsConf.ServerName == "" {
			d.tlsConf.ServerName = u.Hostname()
		}
		if d.tlsConf.MinVersion == 0 {
			d.tlsConf.MinVersion = tls.VersionTLS12
		}
		if d.tlsConf.ClientSessionCache == nil {
			// Every tunnel is a TLS connection to the same server:
			// resuming the session skips the certificate's signature and
			// its verification on all but the first.
			d.tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(16)
		}
	}
	return nil
}

// DialSprite opens a tunnel to address inside sprite. ctx bounds the TCP
// dial, the TLS and WebSocket handshakes and the server's dial of the
// target; the returned *Conn outlives it. See dialer.Dialer for the errors.
func (d *Dialer) DialSprite(ctx context.Context, sprite, network, address string) (net.Conn, error) {
	c, err := d.dialRetrying(ctx, sprite, network, address)
	if err != nil {
		if d.Logger != nil {
			d.Logger.Debug("tunnel refused", "sprite", sprite, "addr", address, "err", err)
		}
		return nil, dialer.OpError(network, sprite, address, err)
	}
	if d.Logger != nil && c.hs != nil {
		d.Logger.Debug("tunnel requested optimistically", "sprite", sprite, "addr", address)
	} else if d.Logger != nil {
		d.Logger.Debug("tunnel open", "sprite", sprite, "addr", address, "target", c.remote, "half_close", c.halfClose, "raw", c.raw, "reuse", c.reuse, "resume", c.resume)
	}
	if c.hs == nil && c.resume {
		host, port, _ := dialer.SplitAddress(network, address)
		return d.newClientResumable(c, sprite, host, port), nil
	}
	return c, nil
}

func (d *Dialer) dial(ctx context.Context, sprite, network, address string) (*Conn, error) {
	host, port, err := dialer.SplitAddress(network, address)
	if err != nil {
		return nil, err
	}
	if err := dialer.CheckSprite(sprite); err != nil {
		return nil, err
	}
	if err := d.init(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// What an optimistic tunnel's Read or Write returns when its dial
	// failed: what DialSprite would have.
	wrap := func(err error) error { return dialer.OpError(network, sprite, address, err) }
	if !d.DisableReuse && !d.DisableHalfClose {
		for l := d.takeIdle(sprite); l != nil; l = d.takeIdle(sprite) {
			var c *Conn
			var retry bool
			if d.allowed().sendsEarly(l.optimistic) {
				// Retried only if the request did not go out: once the
				// tunnel is returned, the data may be.
				c, retry, err = d.dialReusedEarly(ctx, l, sprite, host, port, wrap)
			} else {
				c, retry, err = d.dialReused(ctx, l, sprite, host, port)
			}
			if !retry {
				return c, err
			}
			// The server closed it while it was idle: so it may have
			// done with the others, which are as old.
			d.dropIdle(sprite)
		}
	}
	u := *d.base
	u.Path = d.base.Path + "/v1/sprites/" + sprite + "/proxy"

	nc, err := d.netConn(ctx)
	if err != nil {
		return nil, err
	}
	// ctx bounds the handshakes: a deadline for its deadline, and a past
	// deadline the moment it is cancelled (no goroutine unless it is).
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	if d.earlyData.Load() && d.allowed().sendsEarly(d.optimistic.Load()) {
		return d.handshakeEarly(ctx, nc, stop, &u, sprite, host, port, wrap)
	}
	c, kept, err := d.handshake(nc, &u, sprite, host, port)
	if err != nil && isTimeout(err) && ctxExpired(ctx) {
		// The deadline taken from ctx fired before ctx's own timer.
		err = context.DeadlineExceeded
	}
	if !stop() || ctx.Err() != nil {
		// ctx ended during the handshake: its error is the better one.
		// (Its deadline may still be on its way to the connection, which
		// must then not be kept.)
		if c != nil {
			c.CloseNow()
		} else {
			nc.Close()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	} else if kept != nil {
		d.putIdle(sprite, kept)
	}
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c.startKeepalive()
	return c, nil
}

// netConn dials the server and, for wss://, completes the TLS handshake.
func (d *Dialer) netConn(ctx context.Context) (net.Conn, error) {
	addr := d.base.Host
	if d.base.Port() == "" {
		if d.base.Scheme == "wss" {
			addr = net.JoinHostPort(d.base.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(d.base.Hostname(), "80")
		}
	}
	var nc net.Conn
	var err error
	nc, err = d.dialServer(ctx, addr) // proxydial.go
	if err != nil {
		return nil, err
	}
	if d.tlsConf == nil {
		return nc, nil
	}
	tc := tls.Client(cork.New(nc), d.tlsConf)
	// The handshake runs on a goroutine of its own, which ends with it:
	// its key exchange (X25519MLKEM768) grows the stack it runs on, and
	// the caller's goroutine, which often goes on to carry the tunnel for
	// as long as it lasts (a forwarded connection's), kept about 8 KiB of
	// that growth through any number of GCs (measured: 34.0 against 26.6
	// KiB of stacks per idle ProxyPort tunnel over wss, ws 26.1).
	herr := make(chan error, 1)
	go func() { herr <- tc.HandshakeContext(ctx) }()
	if err := <-herr; err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

// handshake upgrades nc to a WebSocket at u and asks for host:port. On an
// error nc is closed and c is nil, unless the tunnel was set up (then the
// caller must close c).
//
// kept is the connection left open by a target error reply (reuse), for
// the caller to keep if ctx allows.
func (d *Dialer) handshake(nc net.Conn, u *url.URL, sprite, host string, port int) (c *Conn, kept *link, err error) {
	first := d.firstMessage(host, port, false)
	// A server that said it takes the first message early gets it in the
	// same write as the upgrade request: one round trip fewer.
	var rw io.ReadWriter = nc
	sentEarly := d.earlyData.Load()
	if sentEarly {
		rw = &earlyWriter{Conn: nc, frame: maskedTextFrame(first)}
	}
	br, announced, err := d.upgrade(nc, rw, u)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	var pre []byte
	if br != nil {
		pre, _ = br.Peek(br.Buffered())
	}
	c = newConn(nc, true, d.cfg, pre)
	c.announced = announced
	if br != nil {
		ws.PutReader(br)
	}
	kept, _, err = d.request(c, first, sentEarly, sprite, host, port)
	if err != nil {
		return nil, kept, err
	}
	return c, nil, nil
}

// upgrade sends the upgrade request through rw and reads the response from
// nc; it records what the response announces (early_data, and whether
// optimistic is among it). On an error the caller closes nc.
func (d *Dialer) upgrade(nc net.Conn, rw io.ReadWriter, u *url.URL) (br *bufio.Reader, optimistic bool, err error) {
	return d.upgradeWith(nc, rw, u, d.header)
}

// upgradeWith is upgrade with the request's headers hdr.
func (d *Dialer) upgradeWith(nc net.Conn, rw io.ReadWriter, u *url.URL, hdr ws.HandshakeHeader) (br *bufio.Reader, optimistic bool, err error) {
	var refusal *dialer.HTTPError
	var retryAfter string
	var early bool // the server says it takes the first message early
	up := ws.Dialer{
		Header: hdr,
		OnStatusError: func(status int, _ []byte, resp io.Reader) {
			refusal, retryAfter = readRefusal(nc, status, resp)
		},
		OnHeader: func(k, v []byte) error {
			if strings.EqualFold(string(k), wire.ServerFeaturesHeader) {
				early = early || hasToken(string(v), wire.FeatureEarlyData)
				optimistic = optimistic || hasToken(string(v), featureOptimistic)
			}
			return nil
		},
	}
	br, _, err = up.Upgrade(rw, u)
	if err != nil {
		if refusal != nil && refusal.StatusCode >= 400 {
			return nil, false, withRetryAfter(refusal, retryAfter)
		}
		var se ws.StatusError
		if errors.As(err, &se) {
			if se < 400 {
				return nil, false, fmt.Errorf("%w: server answered %d without upgrading to WebSocket", dialer.ErrTunnelClosed, int(se))
			}
			return nil, false, &dialer.HTTPError{StatusCode: int(se)}
		}
		if isTimeout(err) {
			return nil, false, err
		}
		return nil, false, fmt.Errorf("%w: websocket upgrade failed: %w", dialer.ErrTunnelClosed, err)
	}
	d.earlyData.Store(early)
	d.optimistic.Store(optimistic)
	return br, optimistic, nil
}

// firstMessage is the handshake message asking for host:port; early says
// that data follows it before the reply (optimistic).
func (d *Dialer) firstMessage(host string, port int, early bool) []byte {
	req := wire.Request{Host: host, Port: port, Features: d.allowed().offer(early)}
	if !d.DisableResume {
		req.Buffer = resumeBufferOf(d.ResumeBuffer)
	}
	return wire.Marshal(req)
}

// request sends the handshake message first on c (unless it went out
// already) and reads the reply. On an error c is closed, or its connection
// is kept (a target error reply under reuse) for the caller to pool;
// replied says whether the server had answered.
func (d *Dialer) request(c *Conn, first []byte, sent bool, sprite, host string, port int) (kept *link, replied bool, err error) {
	// (On an optimistic tunnel, the error is recorded before the
	// connection closes, so that a Write under way returns it.)
	if !sent {
		if err := c.writeMessage(first); err != nil {
			c.failPending(err)
			c.closeNow()
			return nil, false, err
		}
	}
	msg, err := c.readMessage()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errClosedBeforeReply
		}
		c.failPending(err)
		c.closeNow()
		return nil, false, err
	}
	rep, err := wire.ParseReply(msg)
	if err != nil {
		c.failPending(err)
		c.closeNow()
		return nil, true, err
	}
	if rep.Status == wire.StatusError {
		terr := &dialer.TargetError{Code: rep.Error, Message: rep.Message}
		c.failPending(terr)
		// Under reuse the server may keep the connection open: no stream
		// was opened on it.
		if keepsRefused(rep.Features, d.allowed(), false) {
			c.onReuse = func(l *link) { kept = l }
		}
		if c.onReuse == nil || !c.detach() {
			c.closeStream()
		}
		return kept, true, terr
	}
	c.setExtensions(negotiate(rep.Features, d.allowed()))
	if c.reuse {
		c.onReuse = func(l *link) { d.putIdle(sprite, l) }
	}
	if c.resume {
		if rep.Resume == "" {
			err := fmt.Errorf("%w: resume granted without a token", dialer.ErrTunnelClosed)
			c.failPending(err)
			c.closeNow()
			return nil, true, err
		}
		c.resumeTok, c.resumeGrace, c.replica = rep.Resume, time.Duration(rep.GraceMS)*time.Millisecond, rep.Replica
		c.peerBuf = rep.Buffer
	}
	if c.hs == nil {
		// (An optimistic tunnel's address is the one asked for: the
		// application may be reading it already.)
		c.remote = targetAddr(rep.Target, host, port)
	}
	return nil, true, nil
}

// dialReused asks for host:port on an idle link. retry says that the
// link was found closed before the server read the request (so the target
// was not dialed): the caller should try another connection. It is false
// when ctx ended or its deadline passed: the server may just be slow.
func (d *Dialer) dialReused(ctx context.Context, l *link, sprite, host string, port int) (c *Conn, retry bool, err error) {
	nc := l.nc
	dl, _ := ctx.Deadline()
	nc.SetDeadline(dl) // zero without one
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	c = newConn(nc, true, d.cfg, l.pre)
	c.announced = l.optimistic
	kept, replied, err := d.request(c, d.firstMessage(host, port, false), false, sprite, host, port)
	timedOut := err != nil && isTimeout(err)
	if timedOut && ctxExpired(ctx) {
		err = context.DeadlineExceeded
	}
	if !stop() || ctx.Err() != nil {
		// As in dial: the connection is not kept once ctx has ended.
		c.CloseNow()
		if kept != nil {
			kept.nc.Close()
		}
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
	} else if kept != nil {
		d.putIdle(sprite, kept)
	}
	if err != nil {
		return nil, !replied && !timedOut, err
	}
	nc.SetDeadline(time.Time{})
	c.startKeepalive()
	return c, false, nil
}

// clientDialer dials the server. TCP keep-alive is off: the tunnel's pings
// keep it alive and find dead peers, sooner and through proxies.
var clientDialer = &net.Dialer{KeepAlive: -1}

// readRefusal reads the JSON body of a refused upgrade, and its
// Retry-After header.
func readRefusal(nc net.Conn, status int, resp io.Reader) (*dialer.HTTPError, string) {
	e := &dialer.HTTPError{StatusCode: status}
	// The body is small or absent; never wait long for it.
	nc.SetReadDeadline(time.Now().Add(time.Second))
	r, err := http.ReadResponse(bufio.NewReader(resp), nil)
	if err != nil {
		return e, ""
	}
	defer r.Body.Close()
	var body wire.ErrorBody
	if json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&body) == nil {
		e.Code, e.Message = body.Error, body.Message
	}
	return e, r.Header.Get("Retry-After")
}

// targetAddr is the tunnel's RemoteAddr: the server's "target" when it is an
// IP address and port, the requested address otherwise.
func targetAddr(target, host string, port int) net.Addr {
	if ap, err := netip.ParseAddrPort(target); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	if target == "" {
		target = dialer.HostPort(host, port)
	}
	return &dialer.Addr{Address: target}
}

// writeMessage sends a text message during the handshake.
func (c *Conn) writeMessage(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.writeFrameLocked(opText, p)
	return err
}

// ctxExpired reports whether ctx's deadline has passed.
func ctxExpired(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// earlyWriter sends the first message's frame in the same write as the
// upgrade request, the first Write through it.
type earlyWriter struct {
	net.Conn
	frame []byte
}

func (w *earlyWriter) Write(p []byte) (int, error) {
	if w.frame == nil {
		return w.Conn.Write(p)
	}
	// One buffer, so that it is one write (and one TLS record) whatever
	// the conn.
	b := append(append(make([]byte, 0, len(p)+len(w.frame)), p...), w.frame...)
	w.frame = nil
	n, err := w.Conn.Write(b)
	return min(n, len(p)), err
}

// maskedTextFrame frames p as a client's masked text message.
func maskedTextFrame(p []byte) []byte {
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], rand.Uint32())
	f := make([]byte, headerLen(len(p), true)+len(p))
	n := putHeader(f, opText, len(p), &m)
	copy(f[n:], p)
	ws.Cipher(f[n:], m, 0)
	return f
}

// hasToken reports whether the comma-separated list v holds token.
func hasToken(v, token string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}
