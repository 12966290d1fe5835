package websocket

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Health checks and the drain a load balancer can follow.
//
// A GET of /healthz or /readyz on the serving listener (either serving
// path) is answered by the server itself, with no token: 200
// {"status":"ok"} while it serves, 503 {"error":"draining",...} from the
// moment a drain begins. /readyz also asks the Resolver about a sprite
// (readyProbe) and answers 503 {"error":"not_ready",...} when it fails for
// another reason than an unknown sprite. Neither says anything else: no
// counts, no names, no errors.

const (
	healthzPath = "/healthz"
	readyzPath  = "/readyz"
	// readyProbe is the sprite name /readyz resolves: that the Resolver
	// knows no such sprite is an answer too.
	readyProbe = "spriteproxy-readyz"
	// readyTimeout bounds /readyz's call of the Resolver.
	readyTimeout = 2 * time.Second
)

var healthOK = []byte(`{"status":"ok"}` + "\n")

// ErrBadReplicaID is Serve's error (and ServeHTTP's 500) for a
// Server.ReplicaID that cannot be a header value and query parameter as
// it is: empty is fine, else at most 64 of A-Z a-z 0-9 . _ -.
var ErrBadReplicaID = errors.New("websocket: bad ReplicaID")

// CheckReplicaID returns nil if id can be a Server.ReplicaID (empty
// included), else an error that wraps ErrBadReplicaID and says why.
func CheckReplicaID(id string) error {
	if len(id) > 64 {
		return fmt.Errorf("%w: %d bytes, at most 64", ErrBadReplicaID, len(id))
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q holds %q (only A-Z a-z 0-9 . _ -)", ErrBadReplicaID, id, c)
		}
	}
	return nil
}

// isHealthPath says whether path is one of the health endpoints.
func isHealthPath(path string) bool {
	return path == healthzPath || path == readyzPath
}

// health answers a health check of path, or returns nil if path is not a
// health endpoint. ctx bounds the Resolver's call.
func (s *Server) health(ctx context.Context, path string) *refusal {
	ref := s.healthAnswer(ctx, path)
	if ref != nil && s.initErr == nil { // healthAnswer ran init
		ref.replica = s.ReplicaID
	}
	return ref
}

func (s *Server) healthAnswer(ctx context.Context, path string) *refusal {
	if !isHealthPath(path) {
		return nil
	}
	if err := s.init(); err != nil {
		// A server that cannot serve tunnels is not healthy; its
		// ReplicaID may be what is wrong, so it is not sent.
		return &refusal{status: http.StatusInternalServerError, code: "internal", message: err.Error(), health: true}
	}
	if s.Draining() {
		return &refusal{status: http.StatusServiceUnavailable, code: "draining", message: "the server is draining", health: true}
	}
	if path == readyzPath {
		ctx, cancel := context.WithTimeout(ctx, readyTimeout)
		_, err := s.resolver().ResolveSprite(ctx, readyProbe)
		cancel()
		if err != nil && !errors.Is(err, dialer.ErrUnknownSprite) {
			return &refusal{status: http.StatusServiceUnavailable, code: "not_ready", message: "the sprite resolver does not answer", health: true}
		}
		// The resolver may take a while: a drain begun meanwhile wins.
		if s.Draining() {
			return &refusal{status: http.StatusServiceUnavailable, code: "draining", message: "the server is draining", health: true}
		}
	}
	return &refusal{status: http.StatusOK, health: true}
}

// healthRequestLine returns the path of a request line "GET PATH HTTP/1.0"
// to a health endpoint, or "": the Upgrader refuses HTTP/1.0 before its
// hooks see the path, and balancers' health checks often speak it.
func healthRequestLine(line string) string {
	rest, ok := strings.CutPrefix(line, "GET ")
	if !ok {
		return ""
	}
	target, vers, ok := strings.Cut(rest, " ")
	if !ok || vers != "HTTP/1.0" {
		return ""
	}
	path, _, _ := strings.Cut(target, "?")
	if !isHealthPath(path) {
		return ""
	}
	return path
}

// Drain begins a drain that a load balancer can follow, before Shutdown:
// from now on /healthz and /readyz answer 503, so that the balancer stops
// sending new connections here; the connections that wait idle for a next
// tunnel (the reuse extension) are closed at once, before any reply, which
// makes a client that uses one open its next tunnel on a new connection
// (PROTOCOL.md §7); new tunnels are not granted reuse, and a connection
// whose tunnel ends is closed instead of kept. The listeners stay open and new tunnels are still served, so that
// the connections the balancer sends until it notices are not refused;
// open tunnels are untouched. Shutdown drains too if Drain was not called.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for c := range s.waiting {
		c.nc.SetReadDeadline(aLongTimeAgo) // the idle wait ends; serve closes it
	}
}

// Draining reports whether Drain or Shutdown has begun.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}
