package main

import (
	"log/slog"
	"net"
	"sync"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// resumeCounter counts how many times forward's tunnels were resumed (the
// resume extension carried them on over a new connection): those open now
// and those that ended. It is safe for concurrent use.
type resumeCounter struct {
	mu     sync.Mutex
	live   map[*countedConn]struct{}
	ended  int
	logger *slog.Logger // nil: no log line per tunnel
}

// track returns conn, counted if it is resumable.
func (rc *resumeCounter) track(conn net.Conn, sprite, address string) net.Conn {
	r, ok := conn.(*websocket.ResumableConn)
	if !ok {
		return conn
	}
	c := &countedConn{ResumableConn: r, rc: rc, sprite: sprite, address: address}
	rc.mu.Lock()
	if rc.live == nil {
		rc.live = make(map[*countedConn]struct{})
	}
	rc.live[c] = struct{}{}
	rc.mu.Unlock()
	return c
}

// total is the resumes of every tunnel, open or ended.
func (rc *resumeCounter) total() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := rc.ended
	for c := range rc.live {
		n += c.Resumes()
	}
	return n
}

// countedConn is a resumable tunnel whose resumes are added to the
// counter's totals when it is closed. Every method of ResumableConn is
// promoted (CloseWrite, AwaitEnd, AfterEnd: what the session's pump looks
// for), Close and CloseWithError only record first.
type countedConn struct {
	*websocket.ResumableConn
	rc              *resumeCounter
	sprite, address string
	once            sync.Once
}

func (c *countedConn) ended() {
	c.once.Do(func() {
		n := c.Resumes()
		c.rc.mu.Lock()
		delete(c.rc.live, c)
		c.rc.ended += n
		c.rc.mu.Unlock()
		if n > 0 && c.rc.logger != nil {
			c.rc.logger.Debug("tunnel resumed", "sprite", c.sprite, "target", c.address, "resumed", n)
		}
	})
}

// Close records the tunnel's resumes and closes it.
func (c *countedConn) Close() error {
	err := c.ResumableConn.Close()
	c.ended()
	return err
}

// CloseWithError records the tunnel's resumes and closes it with err.
func (c *countedConn) CloseWithError(err error) error {
	cerr := c.ResumableConn.CloseWithError(err)
	c.ended()
	return cerr
}
