package reference

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// BufferSize is the read and write buffer size of both ends, as the
// reference SDK sets it.
const BufferSize = 1 << 20

// initMessage is the client's first message.
type initMessage struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// replyMessage is the server's answer to it.
type replyMessage struct {
	Status  string `json:"status"`
	Target  string `json:"target,omitempty"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
}

// Dialer opens reference tunnels to the server at BaseURL.
type Dialer struct {
	BaseURL   string      // http://, https://, ws:// or wss://
	Token     string      // sent as a bearer token
	TLSConfig *tls.Config // for wss://; nil means the system's roots
	// NetDial, if set, dials the connection under the WebSocket.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ProbeControl makes each Dial first ask for the SDK's pooled
	// endpoint, GET {base}/v1/sprites/{name}/control as a WebSocket
	// upgrade on a connection of its own, and expect 404 before it opens
	// /proxy, as the SDK does when the server does not serve /control
	// (the captured transcript in the design notes shows the probe before
	// a ProxySocket and before a ProxyPort's first connection; modelled
	// here before every tunnel). The WAN rows set it: it costs round
	// trips, not CPU.
	ProbeControl bool
}

// Dial opens a tunnel to addr ("host:port") inside sprite. ctx bounds the
// handshake only.
func (d *Dialer) Dial(ctx context.Context, sprite, addr string) (net.Conn, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil, fmt.Errorf("reference: bad port in %q", addr)
	}
	base := d.BaseURL
	if strings.HasPrefix(base, "http") {
		base = "ws" + base[len("http"):]
	}
	wd := &websocket.Dialer{
		ReadBufferSize:  BufferSize,
		WriteBufferSize: BufferSize,
		TLSClientConfig: d.TLSConfig,
		NetDialContext:  d.NetDial,
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+d.Token)
	if d.ProbeControl {
		ws, resp, err := wd.DialContext(ctx, base+"/v1/sprites/"+sprite+"/control", h)
		if err == nil {
			ws.Close()
			return nil, errors.New("reference: /control upgraded; the model expects 404")
		}
		if resp == nil || resp.StatusCode != http.StatusNotFound {
			return nil, fmt.Errorf("reference: /control probe: %w", err)
		}
		resp.Body.Close()
	}
	ws, _, err := wd.DialContext(ctx, base+"/v1/sprites/"+sprite+"/proxy", h)
	if err != nil {
		return nil, fmt.Errorf("reference: dial: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		ws.NetConn().SetDeadline(dl)
	}
	var rep replyMessage
	if err := ws.WriteJSON(initMessage{Host: host, Port: port}); err != nil {
		ws.Close()
		return nil, fmt.Errorf("reference: init: %w", err)
	}
	if err := ws.ReadJSON(&rep); err != nil {
		ws.Close()
		return nil, fmt.Errorf("reference: reply: %w", err)
	}
	if rep.Status != "connected" {
		ws.Close()
		return nil, fmt.Errorf("reference: %s: %s %s", rep.Status, rep.Error, rep.Message)
	}
	ws.NetConn().SetDeadline(time.Time{})
	return &Conn{ws: ws, remote: rep.Target}, nil
}

// Conn is a tunnel as the SDK hands it out: one message per Write, reads
// through NextReader.
type Conn struct {
	ws     *websocket.Conn
	remote string

	rmu sync.Mutex
	cur io.Reader // the message being read, or nil

	wmu       sync.Mutex
	closeOnce sync.Once
	closeErr  error
}

var _ net.Conn = (*Conn)(nil)

// Read returns bytes of binary messages; a normal close reads as io.EOF.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.cur != nil {
			n, err := c.cur.Read(p)
			if err == io.EOF {
				c.cur = nil
				if n > 0 {
					return n, nil
				}
				continue
			}
			return n, err
		}
		typ, r, err := c.ws.NextReader()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
				return 0, io.EOF
			}
			return 0, err
		}
		if typ == websocket.BinaryMessage {
			c.cur = r
		}
	}
}

// Write sends p as one binary message.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close sends a close frame (1000), waiting at most a second, and closes
// the connection.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		dl := time.Now().Add(time.Second)
		c.wmu.Lock()
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), dl)
		c.wmu.Unlock()
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

// LocalAddr is the WebSocket connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.ws.LocalAddr() }

// RemoteAddr is the target the server reported.
func (c *Conn) RemoteAddr() net.Addr { return addr(c.remote) }

// SetDeadline sets both deadlines of the connection under the WebSocket.
func (c *Conn) SetDeadline(t time.Time) error { return c.ws.NetConn().SetDeadline(t) }

// SetReadDeadline sets the WebSocket's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline sets the WebSocket's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// addr is the target address the server reported.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }
