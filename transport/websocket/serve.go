package websocket

import (
	"context"
	"crypto/sha256"
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
		nc = tls.Server(newCorkConn(nc), s.TLSConfig)
	}
	stop := context.AfterFunc(s.ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	nc.SetDeadline(time.Now().Add(cmpOr(s.HandshakeTimeout, DefaultHandshakeTimeout)))
	var (
		name, path, auth string
		network          dialer.ContextDialer
		sl               slot
	)
	u := ws.Upgrader{
		Header: earlyDataHeader,
		OnRequest: func(uri []byte) error {
			path, _, _ = strings.Cut(string(uri), "?")
			var endpoint string
			var ok bool
			if name, endpoint, ok = parsePath(path); !ok || endpoint != "proxy" {
				return reject(http.StatusNotFound, "not_found", "no such endpoint")
			}
			return nil
		},
		OnHeader: func(k, v []byte) error {
			if strings.EqualFold(string(k), "Authorization") {
				auth = string(v)
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			token := bearerValue(auth)
			ctx := s.ctx
			if s.Auth != nil {
				if err := s.Auth.Authenticate(ctx, token, name); err != nil {
					s.log("request refused", "sprite", name, "client", nc.RemoteAddr(), "err", err)
					if errors.Is(err, dialer.ErrForbidden) {
						return nil, reject(http.StatusForbidden, "forbidden", "token not allowed for sprite "+name)
					}
					return nil, reject(http.StatusUnauthorized, "unauthorized", "bad or missing token")
				}
			}
			var err error
			if network, err = s.resolver().ResolveSprite(ctx, name); err != nil {
				s.log("request refused", "sprite", name, "client", nc.RemoteAddr(), "err", err)
				if errors.Is(err, dialer.ErrUnknownSprite) {
					return nil, reject(http.StatusNotFound, "not_found", "unknown sprite "+name)
				}
				return nil, reject(http.StatusBadGateway, "unavailable", err.Error())
			}
			sl.key, sl.token, sl.sprite = sha256.Sum256([]byte(token)), token, name
			if status, why := s.enter(sl.key); status != 0 {
				s.log("request refused", "sprite", name, "client", nc.RemoteAddr(), "err", why)
				return nil, reject(status, "unavailable", why)
			}
			sl.held = true
			return nil, nil
		},
	}
	if tc, ok := nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			answerPlainHTTP(err)
			stop()
			nc.Close()
			return
		}
	}
	ur := &upgradeReader{r: nc, left: maxUpgradeRequest}
	_, err := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{ur, nc})
	defer s.release(&sl)
	if err != nil {
		ur.answer(nc, err)
		stop()
		closeAfterAnswer(nc)
		return
	}
	if !stop() {
		nc.Close()
		return
	}
	c := newConn(nc, false, s.cfg, ur.rest)
	s.serve(c, name, network, &sl)
}

// answerPlainHTTP tells a client that spoke plain HTTP to a TLS listener
// what went wrong, as net/http does, instead of closing on it silently.
func answerPlainHTTP(err error) {
	var re tls.RecordHeaderError
	if !errors.As(err, &re) || re.Conn == nil || !looksLikeHTTP(re.RecordHeader[:]) {
		return
	}
	body := wire.Marshal(wire.ErrorBody{Error: dialer.CodeBadRequest, Message: "client sent an HTTP request to an HTTPS server"})
	re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(re.Conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+string(body))
}

func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
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

// upgradeReader feeds the Upgrader: it caps the request's size, and sees a
// TLS handshake coming to a plain listener (whose ClientHello has no line
// end to wait for).
//
// It also stops at the end of the request's header: the Upgrader's buffer
// is pooled and dropped after the upgrade, so bytes the client sent early
// (the first message, with the early_data extension) must not reach it.
// They are kept in rest.
type upgradeReader struct {
	r       io.Reader
	left    int64
	started bool
	tls     bool
	lineLen int  // bytes of the current header line, CR aside
	lines   int  // lines seen
	done    bool // the header's empty line has been read
	rest    []byte
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
			u.lines++
			u.lineLen = 0
		default:
			u.lineLen++
		}
	}
	u.left -= int64(n)
	return n, err
}

// answer tells the client why an upgrade failed where the Upgrader wrote
// nothing: a request line it could not parse, a request too large, or TLS
// spoken to a plain server (the client's TLS stack then reports a server
// that does not speak TLS).
func (u *upgradeReader) answer(w net.Conn, err error) {
	var status string
	switch {
	case u.tls:
		status = "400 Bad Request\r\n\r\nthis server speaks plain ws://, not TLS\n"
	case errors.Is(err, errRequestTooLarge):
		status = "431 Request Header Fields Too Large\r\n\r\n"
	case errors.Is(err, ws.ErrMalformedRequest):
		status = "400 Bad Request\r\n\r\n"
	default:
		return // the Upgrader answered, or the client is gone
	}
	w.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(w, "HTTP/1.1 "+strings.Replace(status, "\r\n", "\r\nConnection: close\r\n", 1))
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

// earlyDataHeader tells clients that the server takes the first message in
// the same write as the upgrade request.
var earlyDataHeader = ws.HandshakeHeaderString(wire.ServerFeaturesHeader + ": " + wire.FeatureEarlyData + "\r\n")

// reject makes the Upgrader answer with status and the protocol's JSON
// error body.
func reject(status int, code, message string) error {
	return ws.RejectConnectionError(
		ws.RejectionStatus(status),
		ws.RejectionHeader(ws.HandshakeHeaderString("Content-Type: application/json\r\n")),
		ws.RejectionReason(strings.TrimSuffix(string(wire.Marshal(wire.ErrorBody{Error: code, Message: message})), "\n")),
	)
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
