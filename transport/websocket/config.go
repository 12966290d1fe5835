package websocket

import (
	"fmt"
	"time"
)

// Defaults of the settings shared by Dialer and Server.
const (
	// DefaultKeepAlive is how long a tunnel may stay silent before a ping
	// goes out: well under the 60 s after which proxies such as nginx drop
	// idle connections.
	DefaultKeepAlive = 20 * time.Second
	// DefaultDeadPeerTimeout is how long a waiting Read hears nothing
	// (pongs included) before the tunnel is closed as dead.
	DefaultDeadPeerTimeout = 3 * DefaultKeepAlive
	// DefaultCloseTimeout bounds the wait for the peer's close frame.
	DefaultCloseTimeout = 2 * time.Second
	// DefaultHalfCloseLinger is how long a client's tunnel to a plain
	// server waits, after CloseWrite, for the server to fall silent before
	// it sends the close frame (Dialer.HalfCloseLinger).
	DefaultHalfCloseLinger = 2 * time.Second
	// DefaultMaxMessageSize caps one received message. Payloads are
	// streamed, never buffered whole, so the cap is a defence, not a cost.
	DefaultMaxMessageSize = 16 << 20
)

// Tuning holds the settings of a tunnel's life that the client and the
// server share. The zero value means the defaults; a negative KeepAlive or
// DeadPeerTimeout turns that mechanism off.
type Tuning struct {
	KeepAlive       time.Duration // idle time before a ping; default DefaultKeepAlive
	DeadPeerTimeout time.Duration // silence that ends a waiting Read; default DefaultDeadPeerTimeout
	CloseTimeout    time.Duration // wait for the peer's close frame; default DefaultCloseTimeout
	MaxMessageSize  int64         // largest message received; default DefaultMaxMessageSize
	// IdleTimeout closes a tunnel that carried no data either way for this
	// long (pings do not count); 0 means never, the default, since an idle
	// database connection is a normal thing to keep.
	IdleTimeout time.Duration
}

// config is Tuning checked and with defaults filled in.
type config struct {
	keepAlive    time.Duration
	deadPeer     time.Duration
	closeTimeout time.Duration
	maxMessage   int64
	idle         time.Duration
	tick         time.Duration // how often the keep-alive timer runs; 0 for never
	// linger is how long the peer must be silent, after CloseWrite with no
	// half_close, before the close frame goes out; <= 0 sends it at once
	// (the server, whose close frame is its plain client's end of stream).
	linger time.Duration
}

func (t Tuning) config() (*config, error) {
	c := &config{
		keepAlive:    t.KeepAlive,
		deadPeer:     t.DeadPeerTimeout,
		closeTimeout: t.CloseTimeout,
		maxMessage:   t.MaxMessageSize,
		idle:         t.IdleTimeout,
	}
	if c.keepAlive == 0 {
		c.keepAlive = DefaultKeepAlive
	}
	if c.deadPeer == 0 {
		c.deadPeer = 3 * max(c.keepAlive, 0)
		if c.deadPeer == 0 {
			c.deadPeer = DefaultDeadPeerTimeout
		}
	}
	if c.closeTimeout == 0 {
		c.closeTimeout = DefaultCloseTimeout
	}
	if c.maxMessage == 0 {
		c.maxMessage = DefaultMaxMessageSize
	}
	c.tick = max(c.keepAlive, 0)
	if c.idle > 0 && (c.tick == 0 || c.idle/2 < c.tick) {
		c.tick = c.idle / 2
	}
	switch {
	case c.idle < 0:
		return nil, fmt.Errorf("websocket: negative IdleTimeout %v", c.idle)
	case c.closeTimeout < 0:
		return nil, fmt.Errorf("websocket: negative CloseTimeout %v", c.closeTimeout)
	case c.maxMessage < 0:
		return nil, fmt.Errorf("websocket: negative MaxMessageSize %d", c.maxMessage)
	case c.keepAlive > 0 && c.deadPeer > 0 && c.deadPeer <= c.keepAlive:
		return nil, fmt.Errorf("websocket: DeadPeerTimeout %v must exceed KeepAlive %v", c.deadPeer, c.keepAlive)
	}
	return c, nil
}
