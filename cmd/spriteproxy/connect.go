package main

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

const connectSynopsis = "spriteproxy connect [--api URL] [--token T] [--tls-ca FILE] [--proxy URL | --no-proxy] SPRITE HOST:PORT\n\n" +
	"One tunnel on stdin and stdout, e.g. for ssh:\n" +
	"  ssh -o ProxyCommand='spriteproxy connect my-sprite localhost:22' user@my-sprite\n" +
	"stdin's end is passed on as a half-close; the reply is still read to its end.\n" +
	"Nothing but the tunnel's bytes is written to stdout. The token and API may also\n" +
	"come from $" + envToken + " and $" + envAPI + "."

// connect runs "spriteproxy connect": one tunnel between stdin/stdout and
// HOST:PORT inside the sprite. It exits 0 when both directions ended
// cleanly, 1 with one line on stderr otherwise.
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
		return c.failf(exitFail, "connect", "%s", explain(err, w))
	}
	return exitOK
}

// pipe copies in to conn and conn to out until conn's reply ends, and
// closes conn. The end of in is passed on as conn's CloseWrite, and the
// reply is still read to its end; the reply's end while in still has bytes
// ends the pipe too (the far side is done with us). ctx ending closes conn.
// The error is the first failure of either direction, nil on a clean end.
//
// The goroutine reading in may outlive pipe while blocked in a read of
// in: there is no portable way to interrupt a read of stdin, and the
// process exits right after.
func pipe(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, in)
		if err == nil {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		sent <- err
	}()
	_, rerr := io.Copy(out, conn)
	select {
	case serr := <-sent:
		if ctx.Err() != nil {
			return nil // a signal: a clean stop
		}
		return cmp.Or(rerr, serr)
	default:
		// The reply ended before stdin: the far side closed the tunnel.
		if ctx.Err() != nil {
			return nil
		}
		return rerr
	}
}

// eofReader is an empty stdin.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
