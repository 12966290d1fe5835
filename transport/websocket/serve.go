package websocket

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/cork"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// ErrServerClosed is returned by Serve once Shutdown or Close has begun.
var ErrServerClosed = errors.New("websocket: server closed")

// Serve accepts connections on ln and serves tunnels on them until Shutdown
// or Close, when it returns ErrServerClosed (or the listener's error). It
// is the server's fast path: it upgrades on the raw connection with pooled
// buffers instead of going through net/http, so each tunnel costs fewer
// allocations and syscalls than ServeHTTP behind an http.Server; the
// protocol is the same, refusals included. For TLS, set TLSConfig (or
// wrap ln with tls.NewListener, which works but sends each TLS record with
// a syscall of its own). Serve may be called on several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.init(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.conns.Add(1)
	s.mu.Unlock()
	defer s.conns.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			shutting := s.shutting
			s.mu.Unlock()
			if shutting {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of descriptors, say: wait a little, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-s.ctx.Done():
					t.Stop()
					return ErrServerClosed
				}
				continue
			}
			return err
		}
		backoff = 0
		s.conns.Add(1)
		go s.serveConn(nc)
	}
}

// serveConn upgrades one raw connection and serves its tunnel.
func (s *Server) serveConn(nc net.Conn) {
	defer s.conns.Done()
	if s.TLSConfig != nil {
		nc = tls.Server(cork.New(nc), s.TLSConfig)
	}
	stop := context.AfterFunc(s.ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	nc.SetDeadline(time.Now().Add(s.handshakeTimeout()))
	fr := frontRequest{remote: nc.RemoteAddr().String()}
	var (
		network dialer.ContextDialer
		sl      slot
		ref     *refusal // the front door's answer, if it refused
	)
	// The Upgrader checks the version, the method and the WebSocket
	// headers itself; the hooks do the rest of the front door's checks, in
	// the same order as ServeHTTP.
	u := ws.Upgrader{
		Header: s.featuresHeader(),
		OnRequest: func(uri []byte) error {
			fr.path, _, _ = strings.Cut(string(uri), "?")
			if ref = s.health(s.ctx, fr.path); ref != nil {
				return ref
			}
			if sl.sprite, ref = pathRefusal(fr.path); ref != nil {
				return ref
			}
			return nil
		},
		OnHeader: func(k, v []byte) error {
			switch {
			case strings.EqualFold(string(k), "Authorization"):
				if fr.auths++; fr.auths == 1 {
					fr.auth = string(v)
				}
			case strings.EqualFold(string(k), "Origin"):
				fr.origins++
				fr.origin = string(v)
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if ref = s.checkFront(&fr); ref != nil {
				return nil, ref
			}
			sl.token = bearerValue(fr.auth)
			if network, ref = s.admit(s.ctx, &sl, false); ref != nil {
				return nil, ref
			}
			return nil, nil
		},
	}
	if tc, ok := nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			if ref := answerPlainHTTP(err); ref != nil {
				s.logRefused(&fr, "", ref)
			} else {
				s.log("TLS handshake failed", "client", fr.remote, "reason", err)
			}
			stop()
			nc.Close()
			return
		}
	}
	sl.start = time.Now()
	ur := &upgradeReader{r: nc, left: maxUpgradeRequest}
	_, err := u.Upgrade(ur)
	defer s.release(&sl)
	if err == nil {
		// The 101, which the Upgrader wrote to ur.
		_, err = nc.Write(ur.held)
		if err != nil {
			stop()
			nc.Close()
			return
		}
	}
	if err != nil {
		// What the Upgrader wrote is dropped: the answer is the front
		// door's, one response with exactly its headers.
		if ref == nil && err == ws.ErrHandshakeBadProtocol {
			ref = s.health(s.ctx, healthRequestLine(string(ur.line[:ur.lineN])))
		}
		if ref == nil {
			ref = ur.refusal(err)
		}
		if fr.path == "" {
			fr.path = ur.path()
		}
		if ref != nil {
			s.logRefused(&fr, sl.sprite, ref)
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write(ref.appendRaw(ur.held[:0], ur.major == 1 && ur.minor == 0))
		} else {
			s.log("upgrade failed", "path", fr.path, "client", fr.remote, "reason", err)
		}
		stop()
		closeAfterAnswer(nc)
		return
	}
	if !stop() {
		nc.Close()
		return
	}
	c := newConn(nc, false, s.cfg, ur.rest)
	s.serve(c, sl.sprite, network, &sl)
}

// answerPlainHTTP tells a client that spoke plain HTTP to a TLS listener
// what went wrong, as net/http does, instead of closing on it silently; it
// returns the answer it sent, if it sent one.
func answerPlainHTTP(err error) *refusal {
	var re tls.RecordHeaderError
	if !errors.As(err, &re) || re.Conn == nil || !looksLikeHTTP(re.RecordHeader[:]) {
		return nil
	}
	ref := refuse(http.StatusBadRequest, dialer.CodeBadRequest, "client sent an HTTP request to an HTTPS server", nil)
	body := ref.body()
	re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(re.Conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+string(body))
	return ref
}

func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "PRI *":
		return true
	}
	return false
}

// maxUpgradeRequest caps the upgrade request (request line and headers):
// the Upgrader itself would buffer a line without end.
const maxUpgradeRequest = 16 << 10

var (
	errRequestTooLarge = errors.New("upgrade request over 16 KiB")
	errTLSHandshake    = errors.New("a TLS handshake sent to a plain server")
)

// upgradeReader is the Upgrader's connection: it caps the request's size,
// sees a TLS handshake coming to a plain listener (whose ClientHello has no
// line end to wait for), and notes the request line's HTTP version.
//
// It also stops at the end of the request's header: the Upgrader's buffer
// is pooled and dropped after the upgrade, so bytes the client sent early
// (the first message, with the early_data extension) must not reach it.
// They are kept in rest.
//
// What the Upgrader writes is held, not sent: the 101 goes out once the
// upgrade succeeded, and a refusal is answered by the front door instead.
type upgradeReader struct {
	r            io.Reader
	left         int64
	started      bool
	tls          bool
	lineLen      int  // bytes of the current header line, CR aside
	lines        int  // lines seen
	done         bool // the header's empty line has been read
	rest         []byte
	vers         [8]byte  // the last bytes of the request line so far
	line         [64]byte // the first bytes of the request line (a health check's)
	lineN        int
	target       []byte // the request line's target, for the log (up to 256 bytes)
	targetState  int    // 0: in the method, 1: in the target, 2: past it
	major, minor int    // the request line's version, once read (0.0 if not HTTP/x.y)
	held         []byte
	heldBuf      [256]byte
}

func (u *upgradeReader) Read(p []byte) (int, error) {
	if u.done {
		return 0, io.EOF
	}
	if u.left <= 0 {
		return 0, errRequestTooLarge
	}
	if int64(len(p)) > u.left {
		p = p[:u.left]
	}
	n, err := u.r.Read(p)
	if !u.started && n > 0 {
		u.started = true
		if p[0] == 0x16 { // a TLS handshake record
			u.tls = true
			return 0, errTLSHandshake
		}
	}
	for i, b := range p[:n] {
		switch b {
		case '\r':
		case '\n':
			if u.lineLen == 0 && u.lines > 0 {
				u.done = true
				if i+1 < n {
					u.rest = append([]byte(nil), p[i+1:n]...)
				}
				u.left -= int64(i + 1)
				return i + 1, err
			}
			if u.lines == 0 {
				u.version()
			}
			u.lines++
			u.lineLen = 0
		default:
			if u.lines == 0 {
				copy(u.vers[:], u.vers[1:])
				u.vers[len(u.vers)-1] = b
				if u.lineN < len(u.line) {
					u.line[u.lineN] = b
					u.lineN++
				}
				u.noteTarget(b)
			}
			u.lineLen++
		}
	}
	u.left -= int64(n)
	return n, err
}

// noteTarget keeps the request line's target (its second field), so that
// a request refused before the Upgrader's OnRequest hook (a method or a
// version it refuses) is logged with its path.
func (u *upgradeReader) noteTarget(b byte) {
	switch {
	case b == ' ':
		if u.targetState < 2 && (u.targetState == 1 || u.lineLen > 0) {
			u.targetState++
		}
	case u.targetState == 1 && len(u.target) < 256:
		u.target = append(u.target, b)
	}
}

// path is the path of the request line's target, without the query.
func (u *upgradeReader) path() string {
	p, _, _ := strings.Cut(string(u.target), "?")
	return p
}

// version reads the version at the end of the request line.
func (u *upgradeReader) version() {
	v := string(u.vers[:])
	if strings.HasPrefix(v, "HTTP/") && v[6] == '.' && '0' <= v[5] && v[5] <= '9' && '0' <= v[7] && v[7] <= '9' {
		u.major, u.minor = int(v[5]-'0'), int(v[7]-'0')
	}
}

// Write holds what the Upgrader writes.
func (u *upgradeReader) Write(p []byte) (int, error) {
	if u.held == nil {
		u.held = u.heldBuf[:0]
	}
	u.held = append(u.held, p...)
	return len(p), nil
}

// refusal is the answer to an upgrade that failed before the front door's
// hooks could refuse it: a request line or header the Upgrader could not
// parse or accept, a request too large, or TLS spoken to a plain server
// (the client's TLS stack then reports a server that does not speak TLS).
// It is nil for a client that went away or timed out: no one to answer.
func (u *upgradeReader) refusal(err error) *refusal {
	switch {
	case u.tls:
		return refuse(http.StatusBadRequest, dialer.CodeBadRequest, "this server speaks plain ws://, not TLS", nil)
	case errors.Is(err, errRequestTooLarge):
		return refuse(http.StatusRequestHeaderFieldsTooLarge, dialer.CodeBadRequest, errRequestTooLarge.Error(), nil)
	case err == ws.ErrHandshakeBadProtocol:
		return versionRefusal(u.major)
	case err == ws.ErrHandshakeBadMethod:
		return methodRefusal()
	}
	var rej *ws.ConnectionRejectedError
	if errors.As(err, &rej) {
		// ErrMalformedRequest included: a header line without a colon, or
		// an obs-fold line (which RFC 9112 §5.2 lets a server refuse).
		return upgradeRefusal(err)
	}
	return nil
}

// closeAfterAnswer closes a connection whose upgrade was refused without
// destroying the answer: a client with early_data sent its first message
// behind the request, and closing with those bytes unread would reset the
// connection, which can reach the client before the refusal does. So the
// write side ends first (FIN after the answer), then what the client sent
// is read off briefly, then the connection closes.
func closeAfterAnswer(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	nc.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	var buf [4096]byte
	for n := 0; n < 16<<10; {
		m, err := nc.Read(buf[:])
		n += m
		if err != nil {
			break
		}
	}
	nc.Close()
}

// featuresHeaders tell clients that the server takes the first message in
// the same write as the upgrade request (early_data), and, with optimistic,
// data behind it before the reply.
var featuresHeaders = [2]ws.HandshakeHeaderString{
	ws.HandshakeHeaderString(wire.ServerFeaturesHeader + ": " + wire.FeatureEarlyData + "\r\n"),
	ws.HandshakeHeaderString(wire.ServerFeaturesHeader + ": " + wire.FeatureEarlyData + ", " + featureOptimistic + "\r\n"),
}

// featuresHeader is Serve's announcement of the extensions of §5 and §8,
// and of the replica (ReplicaID); init has run.
func (s *Server) featuresHeader() ws.HandshakeHeaderString {
	return s.upgradeHdr[b2i(s.allowed().optimistic)]
}

func (s *Server) resolver() Resolver {
	if s.Sprites == nil {
		return &HostNetwork{}
	}
	return s.Sprites
}

// bearerValue returns the token of an Authorization header value, or "".
func bearerValue(h string) string {
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
