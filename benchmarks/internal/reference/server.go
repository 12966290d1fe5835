package reference

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// copyBufferSize is what the server reads from a target per message.
const copyBufferSize = 32 << 10

// Server is the sprite side of a reference tunnel, an http.Handler for
// /v1/sprites/{name}/proxy. Its zero value accepts any token and dials
// targets on this machine's network.
type Server struct {
	// Token, if set, is the only bearer token accepted.
	Token string
	// Dial dials targets; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	conns  map[io.Closer]struct{} // live WebSockets and targets
	closed bool
	wg     sync.WaitGroup
	live   atomic.Int64 // tunnels connected to their target
}

var _ http.Handler = (*Server)(nil)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  BufferSize,
	WriteBufferSize: BufferSize,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// ServeHTTP serves one tunnel until both directions have ended.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.Token {
		http.Error(w, `{"error":"unauthorized","message":"bad token"}`, http.StatusUnauthorized)
		return
	}
	if !s.enter() {
		http.Error(w, `{"error":"unavailable","message":"closed"}`, http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	if !s.track(ws, true) {
		return
	}
	defer s.track(ws, false)

	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var req initMessage
	if err := ws.ReadJSON(&req); err != nil {
		return
	}
	ws.SetReadDeadline(time.Time{})
	dial := s.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	target, err := dial(ctx, "tcp", net.JoinHostPort(req.Host, strconv.Itoa(req.Port)))
	cancel()
	if err != nil {
		ws.WriteJSON(replyMessage{Status: "error", Error: "connection_refused", Message: err.Error()})
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		return
	}
	defer target.Close()
	if !s.track(target, true) {
		return
	}
	defer s.track(target, false)
	s.live.Add(1)
	defer s.live.Add(-1)
	if err := ws.WriteJSON(replyMessage{Status: "connected", Target: target.RemoteAddr().String()}); err != nil {
		return
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // target → WebSocket, one message per read
		defer wg.Done()
		buf := make([]byte, copyBufferSize)
		for {
			n, err := target.Read(buf)
			if n > 0 {
				if werr := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				break
			}
		}
	}()
	// WebSocket → target, NextReader per message.
	for {
		typ, msg, err := ws.NextReader()
		if err != nil {
			break
		}
		if typ != websocket.BinaryMessage {
			continue
		}
		if _, err := io.Copy(target, msg); err != nil {
			break
		}
	}
	target.Close()
	ws.Close()
	wg.Wait()
}

func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// track adds c to (or removes it from) the conns Close closes; adding
// fails once Close has begun.
func (s *Server) track(c io.Closer, live bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !live {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[io.Closer]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

// Live returns the number of tunnels whose target is connected.
func (s *Server) Live() int {
	return int(s.live.Load())
}

// Close closes every tunnel and waits for their handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
