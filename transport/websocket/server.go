package websocket

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/pump"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// Server defaults.
const (
	DefaultDialTimeout        = 10 * time.Second
	DefaultHandshakeTimeout   = 5 * time.Second
	DefaultMaxTunnels         = 8192
	DefaultMaxTunnelsPerToken = 1024
)

// Server is the sprite side of the tunnel: an http.Handler that serves
// GET /v1/sprites/{name}/proxy (and answers /control with 404, so that the
// Sprites SDK falls back to /proxy). For each tunnel it authenticates the
// bearer token, resolves the sprite, upgrades to WebSocket, reads the
// client's first message, checks the target against Policy, dials it, and
// only then replies "connected" and copies both ways until both sides end.
//
// The zero value serves every sprite name on the host network, with no
// authentication and the loopback-only policy. Fields must not change once
// it serves.
type Server struct {
	// Auth checks the bearer token; nil accepts every request.
	Auth Authenticator
	// Sprites says where each sprite's targets are dialed; nil is
	// &HostNetwork{} (every name, this machine's network).
	Sprites Resolver
	// Policy says which targets may be reached; nil allows only the
	// sprite's loopback.
	Policy *Policy
	// AllowedOrigins lists the origins (as a browser sends them in the
	// Origin header: "https://app.example") whose pages may open tunnels.
	// An upgrade that carries any other Origin is refused with 403: a web
	// page in a local browser could otherwise reach what this server
	// reaches. Clients that are not browsers send no Origin.
	AllowedOrigins []string
	// DialTimeout bounds the dial of a target; default DefaultDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the wait for the client's first message
	// (with the upgrade, the Authenticator and the Resolver before it),
	// and, apart, the writing of the reply once the target's dial is
	// done; default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxTunnels caps the tunnels open at once; a request over it gets 503.
	// 0 means DefaultMaxTunnels; negative means no cap.
	MaxTunnels int
	// MaxTunnelsPerToken caps the tunnels that one token holds open; a
	// request over it gets 429. With no Auth, every client is one
	// identity, whatever bearer value it sends. 0 means
	// DefaultMaxTunnelsPerToken; negative means no cap.
	MaxTunnelsPerToken int
	// MaxHandshakes caps the connections upgraded and waiting for their
	// first message (each for up to HandshakeTimeout); a request over it
	// gets 503. They hold no tunnel until the message is in, so clients
	// that upgrade and stay silent cannot take the tunnels of others.
	// 0 means DefaultMaxHandshakes; negative means no cap.
	MaxHandshakes int
	// MaxHandshakesPerToken caps those of one token (one identity with no
	// Auth); a request over it gets 429. 0 means
	// DefaultMaxHandshakesPerToken; negative means no cap.
	MaxHandshakesPerToken int
	// RawStreams lets clients that offer it use the raw_stream extension:
	// after the handshake the connection carries the stream unframed, and
	// bytes move between it and the target by splice. Turn it on only when
	// nothing between the server and its clients inspects WebSocket frames
	// (a TCP load balancer is fine; a proxy that parses frames is not).
	RawStreams bool
	// DisableHalfClose makes the server ignore the half_close extension
	// (and so reuse, which needs it).
	DisableHalfClose bool
	// DisableReuse makes the server ignore the reuse extension, by which
	// a client's connection carries its next tunnel once a tunnel on it
	// has ended cleanly.
	DisableReuse bool
	// DisableResume makes the server ignore the resume extension, by
	// which a client carries a tunnel on over a new connection when its
	// connection drops.
	DisableResume bool
	// ResumeBuffer caps, per resumable tunnel, the bytes sent that the
	// client has not acknowledged; 0 means DefaultResumeBuffer.
	ResumeBuffer int
	// ResumeGrace is how long a resumable tunnel whose connection dropped
	// waits, target and slot kept, for the client to resume it; 0 means
	// DefaultResumeGrace. During Drain it still waits; once Shutdown has
	// begun, nothing can resume it and it ends at once.
	ResumeGrace time.Duration
	// IdleConnTimeout is how long a connection whose tunnel ended (reuse)
	// waits for the client's next handshake; 0 means
	// DefaultServerIdleTimeout.
	IdleConnTimeout time.Duration
	// MaxIdleConns caps the connections kept waiting for a next tunnel;
	// past it, a connection closes when its tunnel ends. 0 means
	// DefaultMaxIdleConns; negative means no cap.
	MaxIdleConns int
	// TLSConfig, if set, makes Serve speak TLS on every connection it
	// accepts, as a listener from tls.NewListener would. It is the faster
	// way to serve wss: the tunnel then owns the connection under TLS and
	// sends the records of a frame with one write instead of one per
	// 16 KiB record. It must hold a certificate (Certificates or
	// GetCertificate); ServeHTTP does not use it (http.Server has its own).
	// Leave its session tickets on (SessionTicketsDisabled false, the
	// default): a Dialer's fresh connections after the first then resume
	// the TLS session instead of paying for certificates again.
	TLSConfig *tls.Config
	// Tuning sets keep-alive, dead-peer and close timeouts and the message
	// limit; the zero value means the defaults.
	Tuning Tuning
	// Logger receives a debug line per tunnel and refusal; nil logs nothing.
	Logger *slog.Logger
	// Metrics, if set, counts tunnels, bytes, dials and refusals for
	// Prometheus (see NewMetrics); nil counts nothing.
	Metrics *Metrics
	// ReplicaID, if set, names this server among replicas behind one
	// balancer: a resumable tunnel's reply carries it, and the client's
	// resume requests name it (the Sprite-Replica header and ?replica=).
	// It is also sent as the Sprite-Replica response header of the 101
	// upgrade response and of /healthz and /readyz, so that a balancer's
	// routing on it can be checked. At most 64 of A-Z a-z 0-9 . _ -;
	// anything else makes Serve fail and ServeHTTP answer 500.
	ReplicaID string

	once    sync.Once
	cfg     *config
	initErr error
	// upgradeHdr and httpUp are the 101's extra headers on each serving
	// path (features, and Sprite-Replica), by b2i(optimistic).
	upgradeHdr [2]ws.HandshakeHeaderString
	httpUp     [2]ws.HTTPUpgrader
	ctx        context.Context // cancelled to force every tunnel closed
	cancel     context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // those Serve accepts on
	conns     sync.WaitGroup            // Serve loops and their connections
	shutting  bool
	draining  bool // Drain or Shutdown has begun: health says 503, idle connections go
	live      int
	perToken  map[[sha256.Size]byte]int
	// handshaking counts the connections waiting for their first message
	// (admission.go), hsPerToken those of each identity.
	handshaking int
	hsPerToken  map[[sha256.Size]byte]int
	idle        chan struct{}      // closed when live and handshaking drop to 0 during Shutdown
	waiting     map[*Conn]struct{} // idle connections waiting for a next handshake
	// resumable holds the resumable tunnels by the SHA-256 of their
	// resume tokens (resume.go).
	resumable map[[sha256.Size]byte]*ResumableConn
}

var _ http.Handler = (*Server)(nil)

func (s *Server) init() error {
	s.once.Do(func() {
		s.cfg, s.initErr = s.Tuning.config()
		if s.initErr == nil {
			s.initErr = CheckReplicaID(s.ReplicaID)
		}
		s.upgradeHdr, s.httpUp = featuresHeaders, httpUpgraders
		if s.ReplicaID != "" {
			for i := range s.upgradeHdr {
				s.upgradeHdr[i] += ws.HandshakeHeaderString(wire.ReplicaHeader + ": " + s.ReplicaID + "\r\n")
				h := s.httpUp[i].Header.Clone()
				h.Set(wire.ReplicaHeader, s.ReplicaID)
				s.httpUp[i] = ws.HTTPUpgrader{Header: h}
			}
		}
		s.ctx, s.cancel = context.WithCancel(context.Background())
	})
	return s.initErr
}

// ServeHTTP serves one tunnel; it returns when the tunnel has ended.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		if ref := s.health(r.Context(), r.URL.Path); ref != nil {
			ref.writeHTTP(w)
			return
		}
	}
	fr := &frontRequest{path: r.URL.Path, remote: r.RemoteAddr, auth: r.Header.Get("Authorization"),
		auths: len(r.Header["Authorization"]), origin: r.Header.Get("Origin"), origins: len(r.Header["Origin"])}
	sl, network, ref := s.frontHTTP(r, fr)
	if ref != nil {
		s.logRefused(fr, sl.sprite, ref)
		ref.writeHTTP(w)
		return
	}
	defer s.release(sl)
	// The hijacked connection is ours, not net/http's: Shutdown waits for
	// it. (Added while a slot is held, so before Shutdown's wait can begin.)
	s.conns.Add(1)
	defer s.conns.Done()
	nc, rw, _, err := s.httpUp[b2i(s.allowed().optimistic)].Upgrade(r, w)
	if err != nil {
		// The front door checked the request: this is a connection that
		// cannot be hijacked, and gobwas has answered 500.
		if nc != nil {
			nc.Close()
		}
		s.log("request refused", "sprite", sl.sprite, "path", fr.path, "client", fr.remote, "reason", err)
		return
	}
	var pre []byte
	if rw != nil && rw.Reader.Buffered() > 0 {
		pre, _ = rw.Reader.Peek(rw.Reader.Buffered())
	}
	c := newConn(nc, false, s.cfg, pre)
	s.serve(c, sl.sprite, network, sl)
}

// httpUpgraders upgrade behind net/http, announcing early_data (and, the
// second, optimistic): the bytes a client sends early are in the hijacked
// connection's buffer, which ServeHTTP keeps.
var httpUpgraders = [2]ws.HTTPUpgrader{
	{Header: http.Header{wire.ServerFeaturesHeader: {wire.FeatureEarlyData}}},
	{Header: http.Header{wire.ServerFeaturesHeader: {wire.FeatureEarlyData + ", " + featureOptimistic}}},
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// slot is a connection's place in the counts: handshaking from the
// upgrade to the first message, then held while a tunnel is open on it,
// neither while it waits idle for the next one.
type slot struct {
	key         [sha256.Size]byte
	held        bool
	handshaking bool
	token       string // checked again for each tunnel on a reused connection
	sprite      string
	start       time.Time // when the tunnel's request began (Metrics)
	// endCut, set by serveTunnel, stops the cut of the handshake's
	// connection at Shutdown's deadline: a resumed tunnel calls it once
	// attached, so that its own close (a 4001 close frame) reaches the
	// client instead of a connection cut under it.
	endCut func() bool
}

// release gives the slot back if it is held or handshaking.
func (s *Server) release(sl *slot) {
	if sl.held {
		sl.held = false
		s.leave(sl.key)
	}
	if sl.handshaking {
		sl.handshaking = false
		s.mu.Lock()
		s.leaveHandshakeLocked(sl.key)
		s.drainedLocked()
		s.mu.Unlock()
	}
}

// serve runs the tunnels of one upgraded connection: the first, and with
// the reuse extension those the client asks for after it, until the
// connection closes. sl is held for the first.
func (s *Server) serve(c *Conn, sprite string, network dialer.ContextDialer, sl *slot) {
	for {
		next := s.serveTunnel(c, sprite, network, sl)
		s.release(sl)
		if next == nil {
			return
		}
		c = newConn(next.nc, false, s.cfg, next.pre)
		if !s.park(c) {
			c.goAway()
			return
		}
	}
}

// serveTunnel serves one tunnel on c; it returns the connection if the
// tunnel ended cleanly under reuse.
func (s *Server) serveTunnel(c *Conn, sprite string, network dialer.ContextDialer, sl *slot) *link {
	var next *link
	c.onReuse = func(l *link) { next = l }
	stop := context.AfterFunc(s.ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	sl.endCut = stop
	target, req, err := s.handshake(c, network, sl)
	sl.endCut = nil
	if !stop() {
		err = errors.Join(err, s.ctx.Err())
	}
	if errors.Is(err, errResumeServed) {
		return next
	}
	if errors.Is(err, errIdleClosed) || errors.Is(err, errNoSlot) {
		// The client closed its idle connection, or the server is shutting
		// down, or (errNoSlot) the next tunnel would be over a limit:
		// closing before any reply makes a client that asked dial afresh,
		// where it gets the HTTP refusal.
		c.goAway()
		return nil
	}
	if err != nil {
		if target != nil {
			target.Close()
		}
		if next == nil {
			c.Close()
		}
		s.log("tunnel refused", "sprite", sprite, "client", c.remote, "err", err, "reused", next != nil)
		return next
	}
	c.nc.SetDeadline(time.Time{})
	c.startKeepalive()
	s.log("tunnel open", "sprite", sprite, "client", c.remote, "target", target.RemoteAddr(), "half_close", c.halfClose, "raw", c.raw, "reuse", c.reuse)
	var n pump.Counters
	s.Metrics.opened()
	var tunnel net.Conn = c
	if c.resume {
		r := s.newServerResumable(c, sl)
		s.resumableOpened(r)
		tunnel = r
	}
	err = pump.Run(s.ctx, tunnel, target, &n)
	s.Metrics.closed(n.AToB.Load(), n.BToA.Load())
	s.log("tunnel closed", "sprite", sprite, "client", c.remote, "target", req, "up", n.AToB.Load(), "down", n.BToA.Load(), "err", err, "reused", next != nil)
	return next
}

// park counts c among the idle connections that Drain and Shutdown close
// at once, unless the server is draining or has as many as it keeps.
func (s *Server) park(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting || s.draining {
		return false
	}
	if max := limit(s.MaxIdleConns, DefaultMaxIdleConns); max > 0 && len(s.waiting) >= max {
		return false
	}
	if s.waiting == nil {
		s.waiting = make(map[*Conn]struct{})
	}
	s.waiting[c] = struct{}{}
	s.Metrics.idled(1)
	// Set here, under the lock Shutdown takes to cut idle waits short, so
	// that this deadline never overwrites Shutdown's.
	c.nc.SetReadDeadline(time.Now().Add(cmpOr(s.IdleConnTimeout, DefaultServerIdleTimeout)))
	return true
}

// unpark takes c off the idle connections; it reports false if a drain
// has begun (c is then to be closed, with no reply: the client dials
// afresh).
func (s *Server) unpark(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.waiting[c]
	delete(s.waiting, c)
	if ok {
		s.Metrics.idled(-1)
	}
	return ok && !s.shutting && !s.draining
}

var (
	// errIdleClosed: an idle connection ended without a next handshake.
	errIdleClosed = errors.New("idle connection closed")
	// errNoSlot: a reused connection's next tunnel is over a limit, or its
	// token is no longer accepted.
	errNoSlot = errors.New("over the tunnel limits")
)

// handshake reads the first message, checks it, dials the target and
// replies. On an error the reply (if one is due) has been sent.
//
// On a new connection (sl handshaking), the tunnel takes its slot once the
// first message is in and parses. On a reused connection, the wait for the
// message is an idle one (up to IdleConnTimeout) that Shutdown cuts short,
// and the tunnel is admitted afresh once the message is in.
func (s *Server) handshake(c *Conn, network dialer.ContextDialer, sl *slot) (net.Conn, string, error) {
	first := sl.handshaking
	if first {
		// (park set the idle connection's deadline.)
		c.nc.SetReadDeadline(time.Now().Add(s.handshakeTimeout()))
	}
	msg, err := c.readMessage()
	if !first {
		sl.start = time.Now() // the first message is the request
		if !s.unpark(c) || err != nil && !errors.Is(err, dialer.ErrBadRequest) {
			return nil, "", errIdleClosed
		}
		if err == nil {
			// Each tunnel is admitted afresh: the token may have been
			// revoked, or the sprite moved or removed, since the
			// connection's upgrade.
			var ref *refusal
			if network, ref = s.admit(s.ctx, sl, true); ref != nil {
				s.log("request refused", "sprite", sl.sprite, "client", c.remote, "reason", ref, "reused", true)
				return nil, "", errors.Join(errNoSlot, ref)
			}
			// The replies before the dial are bounded as on a new
			// connection (the one set after the dial bounds the others).
			c.nc.SetWriteDeadline(time.Now().Add(s.handshakeTimeout()))
		}
	}
	if err != nil {
		if errors.Is(err, dialer.ErrBadRequest) {
			s.replyError(c, dialer.CodeBadRequest, err.Error())
			s.Metrics.answered(dialer.CodeBadRequest, sl.start)
		}
		return nil, "", err
	}
	req, err := wire.ParseRequest(msg)
	if err != nil {
		s.replyError(c, dialer.CodeBadRequest, err.Error())
		s.Metrics.answered(dialer.CodeBadRequest, sl.start)
		return nil, "", err
	}
	if req.Resume != "" {
		return nil, "", s.resumeTunnel(c, req, sl)
	}
	if first {
		if ref := s.startTunnel(sl); ref != nil {
			s.replyError(c, ref.code, ref.message)
			s.Metrics.answered(ref.code, sl.start)
			return nil, "", ref
		}
	}
	addr := dialer.HostPort(req.Host, req.Port)
	// A target that cannot be reached leaves the connection as it was
	// (reuse): no stream was opened, so no end is exchanged. Whether it
	// may is decided at each reply, since a drain can begin during the
	// dial.
	if err := s.Policy.Check(req.Host, req.Port); err != nil {
		s.replyTargetError(c, dialer.CodeForbidden, err, keepsRefused(req.Features, s.allowed(), true))
		s.Metrics.answered(dialer.CodeForbidden, sl.start)
		return nil, addr, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, cmpOr(s.DialTimeout, DefaultDialTimeout))
	dialed := time.Now()
	target, err := dialTarget(ctx, network, req.Host, req.Port)
	cancel()
	s.Metrics.dialed(dialed)
	// The dial may take DialTimeout, longer than the handshake's bound:
	// the reply, whichever it is, gets a bound of its own from now. A
	// reply cut by a deadline set before the dial would leave a client
	// that retries (no reply: PROTOCOL.md §7) to dial the target again.
	c.nc.SetWriteDeadline(time.Now().Add(s.handshakeTimeout()))
	if err != nil {
		s.replyTargetError(c, targetCode(err), err, keepsRefused(req.Features, s.allowed(), true))
		s.Metrics.answered(targetCode(err), sl.start)
		return nil, addr, err
	}
	ext := negotiate(req.Features, s.allowed())
	rep := wire.Reply{Status: wire.StatusConnected, Target: targetString(target, addr), Features: ext.features()}
	if ext.resume {
		c.resumeTok, c.resumeGrace = newResumeToken(), cmpOr(s.ResumeGrace, DefaultResumeGrace)
		rep.Resume, rep.GraceMS, rep.Replica = c.resumeTok, graceMillis(c.resumeGrace), s.ReplicaID
		rep.Buffer, c.peerBuf = resumeBufferOf(s.ResumeBuffer), req.Buffer
	}
	if err := c.writeMessage(wire.Marshal(rep)); err != nil {
		return target, addr, err
	}
	s.Metrics.answered("", sl.start)
	// From here on the client reads the stream unframed, and so do we; or
	// it ends the stream with end, and so do we. (Not before: a reply that
	// did not go out opened no stream.)
	c.setExtensions(ext)
	return target, addr, nil
}

// replyError sends the protocol's error reply; Close then sends the close
// frame.
func (s *Server) replyError(c *Conn, code, message string) {
	c.writeMessage(wire.Marshal(wire.Reply{Status: wire.StatusError, Error: code, Message: message}))
}

// replyTargetError sends the error reply for a target that may not or
// cannot be reached. With keep (reuse), the reply says that the connection
// stays open, and it is handed on to wait for the client's next first
// message.
func (s *Server) replyTargetError(c *Conn, code string, err error, keep bool) {
	rep := wire.Reply{Status: wire.StatusError, Error: code, Message: err.Error(), Features: refusalFeatures(keep)}
	if c.writeMessage(wire.Marshal(rep)) == nil && keep {
		c.detach()
	}
}

// targetCode maps a dial error to the protocol's error code.
func targetCode(err error) string {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return dialer.CodeConnectionRefused
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && !dns.IsTimeout {
		return dialer.CodeUnreachable
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return dialer.CodeTimeout
	}
	return dialer.CodeOf(err)
}

func targetString(target net.Conn, addr string) string {
	if a := target.RemoteAddr(); a != nil {
		return a.String()
	}
	return addr
}

// Shutdown stops the server from opening tunnels (new requests get 503,
// and the listeners given to Serve are closed), closes the connections
// that wait idle for a next tunnel, and waits for the live ones to end;
// /healthz answers 503 from then on, as after Drain, which a load balancer
// needs a while before (see Drain). Since no resume can reach the server
// any more, resumable tunnels that wait detached for their client end at
// once (their targets are reset), as do those that lose their connection
// later, instead of holding the drain (PROTOCOL.md §9, Drain). When ctx
// ends first, it closes the tunnels left, waits for their goroutines (a
// resumed tunnel's included), and returns ctx's error. An http.Server serving the handler is the
// caller's to shut down; hijacked tunnels are invisible to it, which is why
// this method exists.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.shutting, s.draining = true, true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.waiting {
		c.nc.SetReadDeadline(aLongTimeAgo) // idle: no tunnel to drain
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
		if s.live+s.handshaking == 0 {
			close(s.idle)
		}
	}
	idle := s.idle
	rs := s.resumablesLocked()
	s.mu.Unlock()
	s.shutdownResumables(rs)
	done := make(chan struct{})
	go func() {
		<-idle
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	<-done
	return ctx.Err()
}

// Close closes every tunnel at once and waits for them to end.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Shutdown(ctx)
	return nil
}

// Live returns the number of tunnels open now.
func (s *Server) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// enter counts a new tunnel in, or says why it may not open: a status
// (503 or 429) and a reason.
func (s *Server) enter(key [sha256.Size]byte) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting {
		return http.StatusServiceUnavailable, "server is shutting down"
	}
	if status, why := s.overTunnelCaps(key); status != 0 {
		return status, why
	}
	s.countTunnelLocked(key)
	return 0, ""
}

// overTunnelCaps says why key may not open one more tunnel now, if it may
// not; s.mu is held.
func (s *Server) overTunnelCaps(key [sha256.Size]byte) (int, string) {
	if max := limit(s.MaxTunnels, DefaultMaxTunnels); max > 0 && s.live >= max {
		return http.StatusServiceUnavailable, fmt.Sprintf("server is at its limit of %d tunnels", max)
	}
	if max := limit(s.MaxTunnelsPerToken, DefaultMaxTunnelsPerToken); max > 0 && s.perToken[key] >= max {
		return http.StatusTooManyRequests, fmt.Sprintf("token is at its limit of %d tunnels", max)
	}
	return 0, ""
}

// countTunnelLocked counts a tunnel of key in; s.mu is held.
func (s *Server) countTunnelLocked(key [sha256.Size]byte) {
	if s.perToken == nil {
		s.perToken = make(map[[sha256.Size]byte]int)
	}
	s.perToken[key]++
	s.live++
}

func (s *Server) leave(key [sha256.Size]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live--
	if s.perToken[key]--; s.perToken[key] == 0 {
		delete(s.perToken, key)
	}
	s.drainedLocked()
}

// drainedLocked tells Shutdown when the last tunnel or handshake has
// ended; s.mu is held. (Neither count rises once Shutdown has begun.)
func (s *Server) drainedLocked() {
	if s.live+s.handshaking == 0 && s.idle != nil {
		close(s.idle)
	}
}

// limit applies a cap's convention: 0 is the default, negative is none.
func limit(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func (s *Server) log(msg string, args ...any) {
	if s.Logger != nil {
		s.Logger.Debug(msg, args...)
	}
}

// parsePath splits /v1/sprites/{name}/{endpoint}.
func parsePath(p string) (name, endpoint string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v1/sprites/")
	if !ok {
		return "", "", false
	}
	name, endpoint, ok = strings.Cut(rest, "/")
	if !ok || dialer.CheckSprite(name) != nil || strings.Contains(endpoint, "/") {
		return "", "", false
	}
	return name, endpoint, true
}

// errTooManyFiles is the accept error that a pause may cure.
var errTooManyFiles = syscall.EMFILE

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
