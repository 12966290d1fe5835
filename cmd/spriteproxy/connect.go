package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/spriteproxy/spriteproxy/internal/pump"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

const connectSynopsis = "spriteproxy connect [--api URL] [--token T] [--tls-ca FILE] [--proxy URL | --no-proxy] SPRITE HOST:PORT\n\n" +
	"One tunnel on stdin and stdout, e.g. for ssh:\n" +
	"  ssh -o ProxyCommand='spriteproxy connect my-sprite localhost:22' user@my-sprite\n" +
	"stdin's end is passed on as a half-close; the reply is still read to its end,\n" +
	"and the reply's end closes stdout while stdin is still sent to its end.\n" +
	"Ctrl-C or SIGTERM with the tunnel open cuts it (exit 1).\n" +
	"Nothing but the tunnel's bytes is written to stdout. The token and API may also\n" +
	"come from $" + envToken + " and $" + envAPI + "."

// connect runs "spriteproxy connect": one tunnel between stdin/stdout and
// HOST:PORT inside the sprite. It exits 0 when both directions ended
// cleanly (or a signal came before the tunnel was open), 1 with one line
// on stderr otherwise, a signal with the tunnel open included: that cuts
// the tunnel.
func (c *cli) connect(ctx context.Context, args []string) int {
	fs := newFlagSet("connect")
	cf := addClientFlags(fs, "bound on opening the tunnel")
	pos, err := c.parseFlags(fs, args, connectSynopsis)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		return c.failf(exitUsage, "connect", "%v", err)
	}
	if len(pos) != 2 {
		return c.failf(exitUsage, "connect", "expected SPRITE HOST:PORT (see spriteproxy connect -h)")
	}
	sprite, target := pos[0], pos[1]
	if err := checkSpriteName(sprite); err != nil {
		return c.failf(exitUsage, "connect", "%v", err)
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return c.failf(exitUsage, "connect", "bad target %q: expected HOST:PORT inside the sprite, e.g. localhost:22", target)
	}
	cfg, err := cf.resolve(c.getenv)
	if err != nil {
		return c.failf(exitUsage, "connect", "%v", err)
	}
	w := where{api: redactURL(cfg.base), sprite: sprite, target: target, hasToken: cfg.token != "", timeout: cfg.timeout}

	d := &websocket.Dialer{BaseURL: cfg.base, Token: cfg.token, TLSConfig: cfg.tlsConfig, Proxy: cfg.proxy}
	dialCtx, cancel := withTimeout(ctx, cfg.timeout)
	conn, err := d.DialSprite(dialCtx, sprite, "tcp", target)
	cancel()
	if ctx.Err() != nil {
		if err == nil {
			conn.Close() // nothing was sent, and nothing read
		}
		return exitOK // interrupted: nothing was sent
	}
	if err != nil {
		return c.failf(exitFail, "connect", "%s", explain(err, w))
	}
	in := c.stdin
	if in == nil {
		in = eofReader{}
	}
	if err := pipe(ctx, conn, in, c.stdout); err != nil {
		if cause := context.Cause(ctx); cause != nil && errors.Is(err, cause) {
			// A signal mid-stream: the tunnel was cut, so that the target
			// does not take what it got for the whole stream.
			return c.failf(exitFail, "connect", "stopped (%v) with the tunnel open: the stream to %s inside sprite %q was cut, not ended", cause, target, sprite)
		}
		return c.failf(exitFail, "connect", "%s", explain(err, w))
	}
	return exitOK
}

// pipe copies in to conn and conn to out, both ways at once, as two ends of
// one TCP connection would: the end of in is passed on as conn's
// CloseWrite, and the end of the reply (the target's half-close) closes
// out, if it is an io.Closer, while in is still copied to its end. The pipe
// is over, and conn closed gracefully, when both directions have ended, or
// at once when the peer closed the tunnel both ways (pump.ErrClosedByPeer,
// or its clean end seen by AwaitEnd meanwhile); it then returns nil.
//
// Anything else cuts the tunnel (CloseWithError, so that the target reads
// a reset, never a clean end of stream) and returns the first failure: a
// read error on in, a write error on out, the tunnel's own failure, or
// context.Cause(ctx) when ctx ends before the pipe is over.
//
// The goroutine reading in may outlive pipe while blocked in a read of
// in: there is no portable way to interrupt a read of stdin, and the
// process exits right after.
func pipe(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	p := &pipeEnd{conn: conn, cut: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { p.fail(context.Cause(ctx)) })
	defer stop()
	if e, ok := conn.(pump.Ender); ok {
		stopEnd := e.AfterEnd(p.fail) // the tunnel found lost while idle
		defer stopEnd()
	}

	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, in)
		if err == nil {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		if err != nil {
			p.fail(err) // the reply copy returns too: nothing waits for ever
		}
		sent <- err
	}()

	var rerr error
	if ct, ok := conn.(pump.CopierTo); ok {
		_, rerr = ct.CopyTo(out, nil)
	} else {
		_, rerr = io.Copy(out, conn)
	}
	if errors.Is(rerr, pump.ErrClosedByPeer) {
		// The peer closed both ways: what in still holds has no reader.
		return p.end()
	}
	if rerr != nil {
		p.fail(rerr)
		return p.end()
	}
	// The reply's end is the target's half-close: pass it on, and go on
	// sending in until its own end.
	if c, ok := out.(io.Closer); ok {
		c.Close()
	}
	if aw, ok := conn.(pump.EndAwaiter); ok {
		// Watch the tunnel meanwhile: a peer lost while in is idle cuts
		// the pipe, and a peer that ends the tunnel cleanly ends it.
		err := aw.AwaitEnd()
		switch {
		case err == nil:
			return p.end()
		case !errors.Is(err, pump.ErrNoWatch):
			p.fail(err)
			return p.end()
		}
	}
	select {
	case <-sent:
	case <-p.cut:
	}
	return p.end()
}

// pipeEnd ends a pipe once: gracefully, or cut with the first failure.
type pipeEnd struct {
	conn net.Conn
	once sync.Once
	err  error         // the failure that cut the tunnel; set before cut is closed
	cut  chan struct{} // closed once the tunnel is cut
}

// fail cuts the tunnel for err, unless the pipe has already ended.
func (p *pipeEnd) fail(err error) {
	p.once.Do(func() {
		p.err = err
		close(p.cut)
		if ec, ok := p.conn.(pump.ErrorCloser); ok {
			ec.CloseWithError(err)
		} else {
			p.conn.Close()
		}
	})
}

// end closes the tunnel gracefully unless it was cut, and returns the
// failure that cut it, nil if none did.
func (p *pipeEnd) end() error {
	p.once.Do(func() { p.conn.Close() })
	select {
	case <-p.cut:
		return p.err
	default:
		return nil
	}
}

// eofReader is an empty stdin.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
