package websocket

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// The server's front door: what a request must be, and who may open a
// tunnel, decided in one place for ServeHTTP, Serve and a reused
// connection's next tunnel. In order:
//
//  1. the HTTP version (1.1 or later; 505 otherwise, an HTTP/2 preface
//     included);
//  2. the method (GET; 405 with Allow: GET otherwise);
//  3. the path (/v1/sprites/{name}/proxy; 404 otherwise, /control included);
//  4. the WebSocket upgrade headers (400, or 426 for another version);
//  5. one Authorization header at most, one Origin at most (400);
//  6. an Origin header only if AllowedOrigins lists it (403);
//  7. admit: the token (401, 403), the sprite (404, 502), a handshake slot
//     (429, 503: the tunnel caps, then the handshake caps).
//
// The tunnel slot itself is taken when the first message is in
// (startTunnel), so that a connection that upgrades and stays silent holds
// none.
//
// Every refusal is answered alike on both serving paths (a refusal's
// answer).

// refusal is the server's HTTP answer to a request it does not upgrade: a
// status and the protocol's JSON error body. It is an error, so that it
// can be joined to the cause for the log.
type refusal struct {
	status  int
	code    string // the body's "error"
	message string // the body's "message": the client reads it, never the token
	cause   error  // what went wrong, for the log; nil when message says it all
	health  bool   // the answer to a health check (health.go): no refusal, not logged
	replica string // the Sprite-Replica header, on health answers (Server.ReplicaID)
}

func (r *refusal) Error() string {
	s := strconv.Itoa(r.status) + " " + r.code + ": " + r.message
	if r.cause != nil {
		s += ": " + r.cause.Error()
	}
	return s
}

func (r *refusal) Unwrap() error { return r.cause }

func refuse(status int, code, message string, cause error) *refusal {
	return &refusal{status: status, code: code, message: message, cause: cause}
}

const codeMethodNotAllowed = "method_not_allowed"

// codeFor is the JSON error code of an HTTP status.
func codeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return dialer.CodeForbidden
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return codeMethodNotAllowed
	case http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusBadGateway:
		return "unavailable"
	case http.StatusInternalServerError:
		return "internal"
	}
	return dialer.CodeBadRequest
}

// frontRequest is what the front door looks at in an upgrade request,
// gathered by each serving path from its own parser.
type frontRequest struct {
	path     string // without the query
	auth     string // the Authorization header's value
	auths    int    // how many Authorization headers
	origin   string
	origins  int // how many Origin headers
	remote   string
	upgraded error // the WebSocket headers' fault, a ws.ConnectionRejectedError, or nil
}

var (
	errNoEndpoint = errors.New("no such endpoint")
	// errTwoAuth: ServeHTTP would take the first Authorization header and
	// gobwas the last; a request that sends two is refused on both.
	errTwoAuth   = errors.New("more than one Authorization header")
	errTwoOrigin = errors.New("more than one Origin header")
	errOrigin    = errors.New("origin not allowed")
)

// versionRefusal refuses a request that is not HTTP/1.1 or later: a
// WebSocket upgrade needs 1.1 (RFC 6455 §4.1), and an HTTP/2 preface
// ("PRI * HTTP/2.0") is not spoken here.
func versionRefusal(major int) *refusal {
	msg := "a WebSocket upgrade needs HTTP/1.1"
	if major >= 2 {
		msg = "HTTP/2 is not served here: upgrade to WebSocket over HTTP/1.1"
	}
	return refuse(http.StatusHTTPVersionNotSupported, dialer.CodeBadRequest, msg, nil)
}

func methodRefusal() *refusal {
	return refuse(http.StatusMethodNotAllowed, codeMethodNotAllowed, "the proxy endpoint takes GET with a WebSocket upgrade", nil)
}

// pathRefusal refuses a path other than /v1/sprites/{name}/proxy; it
// returns the sprite's name otherwise.
func pathRefusal(path string) (string, *refusal) {
	name, endpoint, ok := parsePath(path)
	if !ok || endpoint != "proxy" {
		// /control included: not part of v1 here.
		return "", refuse(http.StatusNotFound, "not_found", "no such endpoint", fmt.Errorf("%w: %.128q", errNoEndpoint, path))
	}
	return name, nil
}

// upgradeRefusal turns a fault of the WebSocket headers, as gobwas/ws
// names them, into the server's answer.
func upgradeRefusal(err error) *refusal {
	status := http.StatusBadRequest
	var rej *ws.ConnectionRejectedError
	if errors.As(err, &rej) && rej.StatusCode() != 0 {
		status = rej.StatusCode()
	}
	return refuse(status, codeFor(status), err.Error(), nil)
}

// checkFront applies the checks after the path (4 to 6 above) to a request
// whose path named sprite.
func (s *Server) checkFront(r *frontRequest) *refusal {
	switch {
	case r.upgraded != nil:
		return upgradeRefusal(r.upgraded)
	case r.auths > 1:
		return refuse(http.StatusBadRequest, dialer.CodeBadRequest, errTwoAuth.Error(), nil)
	case r.origins > 1:
		return refuse(http.StatusBadRequest, dialer.CodeBadRequest, errTwoOrigin.Error(), nil)
	case r.origins == 1 && !s.originAllowed(r.origin):
		// A browser sends Origin on every WebSocket; a page would otherwise
		// reach what this server reaches, with no CORS to stop it.
		return refuse(http.StatusForbidden, dialer.CodeForbidden, "origin not allowed: browsers may open tunnels only from an allowed origin",
			fmt.Errorf("%w: %.128q", errOrigin, r.origin))
	}
	return nil
}

func (s *Server) originAllowed(origin string) bool {
	for _, o := range s.AllowedOrigins {
		if asciiEqualFold(o, origin) {
			return true
		}
	}
	return false
}

// admit decides whether sl's token may open a tunnel into sl's sprite now:
// the token (Auth), then the sprite's network (Sprites), then a place
// under the caps. On a yes, the sprite's network is returned and sl holds
// its place: on a new connection (either serving path) a handshake slot,
// which becomes a tunnel slot when the first message is in (startTunnel);
// on a reused connection's next tunnel, whose first message is in already,
// a tunnel slot. ctx, and the handshake timeout, bound the Authenticator's and
// the Resolver's calls (only the calls: the network returned outlives them).
func (s *Server) admit(ctx context.Context, sl *slot, reused bool) (dialer.ContextDialer, *refusal) {
	// The Authenticator and the Resolver are bounded as the handshake is,
	// on every path: on Serve's, ctx is the server's own, which nothing
	// but Shutdown ends.
	ctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	defer cancel()
	if s.Auth != nil {
		if err := s.Auth.Authenticate(ctx, sl.token, sl.sprite); err != nil {
			if errors.Is(err, dialer.ErrForbidden) {
				return nil, refuse(http.StatusForbidden, dialer.CodeForbidden, "token not allowed for sprite "+sl.sprite, err)
			}
			return nil, refuse(http.StatusUnauthorized, "unauthorized", "bad or missing token", err)
		}
	}
	network, err := s.resolver().ResolveSprite(ctx, sl.sprite)
	if err != nil {
		if errors.Is(err, dialer.ErrUnknownSprite) {
			return nil, refuse(http.StatusNotFound, "not_found", "unknown sprite "+sl.sprite, err)
		}
		return nil, refuse(http.StatusBadGateway, "unavailable", err.Error(), nil)
	}
	sl.key = s.identity(sl.token)
	if reused {
		if status, why := s.enter(sl.key); status != 0 {
			return nil, refuse(status, "unavailable", why, nil)
		}
		sl.held = true
		return network, nil
	}
	if status, why := s.enterHandshake(sl.key); status != 0 {
		return nil, refuse(status, "unavailable", why, nil)
	}
	sl.handshaking = true
	return network, nil
}

// Handshake caps: connections upgraded and waiting for their first
// message. They are counted apart from the tunnels, which they do not
// hold, so that clients that upgrade and stay silent (each for up to the
// handshake timeout) cannot take the tunnels of others.
const (
	DefaultMaxHandshakes         = 1024
	DefaultMaxHandshakesPerToken = 256
)

// enterHandshake counts a new connection in among those waiting for their
// first message, or says why it may not upgrade: a status (503 or 429) and
// a reason. A request the tunnel caps would refuse now is refused here,
// with its HTTP answer, rather than after the upgrade.
func (s *Server) enterHandshake(key [sha256.Size]byte) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting {
		return http.StatusServiceUnavailable, "server is shutting down"
	}
	if status, why := s.overTunnelCaps(key); status != 0 {
		return status, why
	}
	if max := limit(s.MaxHandshakes, DefaultMaxHandshakes); max > 0 && s.handshaking >= max {
		return http.StatusServiceUnavailable, fmt.Sprintf("server is at its limit of %d connections waiting for their first message", max)
	}
	if max := limit(s.MaxHandshakesPerToken, DefaultMaxHandshakesPerToken); max > 0 && s.hsPerToken[key] >= max {
		return http.StatusTooManyRequests, fmt.Sprintf("token is at its limit of %d connections waiting for their first message", max)
	}
	if s.hsPerToken == nil {
		s.hsPerToken = make(map[[sha256.Size]byte]int)
	}
	s.hsPerToken[key]++
	s.handshaking++
	return 0, ""
}

// leaveHandshakeLocked counts a connection out of those waiting for their
// first message; s.mu is held.
func (s *Server) leaveHandshakeLocked(key [sha256.Size]byte) {
	s.handshaking--
	if s.hsPerToken[key]--; s.hsPerToken[key] == 0 {
		delete(s.hsPerToken, key)
	}
}

// startTunnel turns sl's handshake slot into a tunnel slot, now that its
// first message is in. It is refused only when the tunnel caps filled up
// since the upgrade (other connections' tunnels took the last places): the
// answer is then the handshake's error reply "unavailable". A connection
// admitted before Shutdown began still gets its tunnel, which Shutdown
// then waits for.
func (s *Server) startTunnel(sl *slot) *refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl.handshaking = false
	s.leaveHandshakeLocked(sl.key)
	if status, why := s.overTunnelCaps(sl.key); status != 0 {
		s.drainedLocked()
		return refuse(status, dialer.CodeUnavailable, why, nil)
	}
	s.countTunnelLocked(sl.key)
	sl.held = true
	return nil
}

// identity is the key of the per-token cap: the token Auth accepted, or,
// with no Auth, one identity for every client, so that a client cannot
// multiply its share by inventing bearer values.
func (s *Server) identity(token string) [sha256.Size]byte {
	if s.Auth == nil {
		return [sha256.Size]byte{}
	}
	return sha256.Sum256([]byte(token))
}

// A refusal's answer, the same on both serving paths: the status, the
// headers in net/http's order (sorted), and the JSON body. Connection:
// close, because bytes the client sent behind the request (early_data)
// are not a next request.
func (r *refusal) headers(now time.Time) [][2]string {
	body := r.body()
	h := make([][2]string, 0, 7)
	if r.status == http.StatusMethodNotAllowed {
		h = append(h, [2]string{"Allow", http.MethodGet})
	}
	h = append(h,
		[2]string{"Connection", "close"},
		[2]string{"Content-Length", strconv.Itoa(len(body))},
		[2]string{"Content-Type", "application/json"},
		[2]string{"Date", now.UTC().Format(http.TimeFormat)})
	if r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable {
		h = append(h, [2]string{"Retry-After", "1"})
	}
	if r.status == http.StatusUpgradeRequired {
		h = append(h, [2]string{"Sec-Websocket-Version", "13"})
	}
	if r.replica != "" {
		h = append(h, [2]string{wire.ReplicaHeader, r.replica})
	}
	return h
}

func (r *refusal) body() []byte {
	if r.health && r.status == http.StatusOK {
		return healthOK
	}
	return wire.Marshal(wire.ErrorBody{Error: r.code, Message: r.message})
}

// writeHTTP answers r through net/http.
func (r *refusal) writeHTTP(w http.ResponseWriter) {
	h := w.Header()
	for _, kv := range r.headers(time.Now()) {
		h.Set(kv[0], kv[1])
	}
	w.WriteHeader(r.status)
	w.Write(r.body())
}

// appendRaw appends r's answer as bytes on the wire; http10 writes the
// status line as net/http does for an HTTP/1.0 request.
func (r *refusal) appendRaw(b []byte, http10 bool) []byte {
	if http10 {
		b = append(b, "HTTP/1.0 "...)
	} else {
		b = append(b, "HTTP/1.1 "...)
	}
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(r.status)...)
	b = append(b, "\r\n"...)
	for _, kv := range r.headers(time.Now()) {
		b = append(b, kv[0]...)
		b = append(b, ": "...)
		b = append(b, kv[1]...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, r.body()...)
}

// logRefused logs a refusal at debug level: the sprite if known, the
// path, the client and the reason (the refusal's message and cause, which
// never carry the token).
func (s *Server) logRefused(r *frontRequest, sprite string, ref *refusal) {
	if ref.health {
		return
	}
	s.Metrics.refused(ref.status, sprite != "")
	path := r.path
	if len(path) > 256 {
		path = path[:256] + "..."
	}
	s.log("request refused", "status", ref.status, "sprite", sprite, "path", path, "client", r.remote, "reason", ref)
}

// frontHTTP is the front door on ServeHTTP's path: the checks in order,
// then admit. On a nil refusal the returned slot is held.
func (s *Server) frontHTTP(r *http.Request, fr *frontRequest) (*slot, dialer.ContextDialer, *refusal) {
	sl := &slot{start: time.Now()}
	if err := s.init(); err != nil {
		return sl, nil, refuse(http.StatusInternalServerError, "internal", err.Error(), nil)
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return sl, nil, versionRefusal(r.ProtoMajor)
	}
	if r.Method != http.MethodGet {
		return sl, nil, methodRefusal()
	}
	var ref *refusal
	if sl.sprite, ref = pathRefusal(fr.path); ref != nil {
		return sl, nil, ref
	}
	fr.upgraded = checkUpgradeHeaders(r)
	if ref := s.checkFront(fr); ref != nil {
		return sl, nil, ref
	}
	sl.token = bearerValue(fr.auth)
	network, ref := s.admit(r.Context(), sl, false)
	return sl, network, ref
}

// checkUpgradeHeaders checks the WebSocket headers of a request that
// net/http parsed, with gobwas/ws's errors, as its Upgrader checks those
// of a request on Serve's path (a missing header in the same order).
func checkUpgradeHeaders(r *http.Request) error {
	h := r.Header
	switch v := h.Get("Sec-Websocket-Version"); {
	case r.Host == "":
		return ws.ErrHandshakeBadHost
	case !strings.EqualFold(h.Get("Upgrade"), "websocket"):
		return ws.ErrHandshakeBadUpgrade
	case !hasToken(h.Get("Connection"), "upgrade"):
		return ws.ErrHandshakeBadConnection
	case v == "":
		return ws.ErrHandshakeBadSecVersion
	case v != "13":
		return ws.ErrHandshakeUpgradeRequired
	case len(h.Get("Sec-Websocket-Key")) != 24:
		return ws.ErrHandshakeBadSecKey
	}
	return nil
}

// handshakeTimeout is HandshakeTimeout, or its default.
func (s *Server) handshakeTimeout() time.Duration {
	return cmpOr(s.HandshakeTimeout, DefaultHandshakeTimeout)
}
