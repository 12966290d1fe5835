package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// defaultSOCKSListen is where socks listens without --listen: the port
// SOCKS clients assume, on loopback only.
const defaultSOCKSListen = "127.0.0.1:1080"

const socksSynopsis = "spriteproxy socks [--listen ADDR] [--api URL] [--token T] [--tls-ca FILE] [--proxy URL | --no-proxy] SPRITE\n\n" +
	"A local SOCKS5 proxy (no authentication, loopback only) whose every connection is\n" +
	"a tunnel to the address the client asked for, inside the sprite; names are\n" +
	"resolved inside the sprite. One listener reaches every service, e.g.\n" +
	"  curl --socks5-hostname 127.0.0.1:1080 http://localhost:8080/\n" +
	"The token and API may also come from $" + envToken + " and $" + envAPI + "."

// socks runs "spriteproxy socks": a SOCKS5 server on a loopback address
// whose connections are tunnels into one sprite, until Ctrl-C.
func (c *cli) socks(ctx context.Context, args []string) int {
	fs := newFlagSet("socks")
	listen := fs.String("listen", defaultSOCKSListen, "the loopback `ADDR` (host:port) to listen on; port 0 picks a free one")
	cf := addClientFlags(fs, "bound on the start-up check of the API, token and sprite")
	verbose := fs.Bool("v", false, "log every connection")
	pos, err := c.parseFlags(fs, args, socksSynopsis)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		return c.failf(exitUsage, "socks", "%v", err)
	}
	if len(pos) != 1 {
		return c.failf(exitUsage, "socks", "expected one SPRITE (see spriteproxy socks -h)")
	}
	sprite := pos[0]
	if err := checkSpriteName(sprite); err != nil {
		return c.failf(exitUsage, "socks", "%v", err)
	}
	if err := checkLoopbackListen("--listen", *listen); err != nil {
		return c.failf(exitUsage, "socks", "%v", err)
	}
	cfg, err := cf.resolve(c.getenv)
	if err != nil {
		return c.failf(exitUsage, "socks", "%v", err)
	}

	con := &console{out: c.stdout, err: c.stderr, width: c.width, prefix: "spriteproxy socks: "}
	f := &forwarder{api: cfg.base, token: cfg.token, tlsConfig: cfg.tlsConfig, proxy: cfg.proxy,
		sprite: sprite, timeout: cfg.timeout, con: con}
	d := &websocket.Dialer{BaseURL: cfg.base, Token: cfg.token, TLSConfig: cfg.tlsConfig, Proxy: cfg.proxy}
	defer d.CloseIdleConnections()
	// The API, the token and the sprite, checked before listening.
	if err := f.probe(ctx, d); err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return c.failf(exitFail, "socks", "%s", explain(err, f.where("")))
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return c.failf(exitFail, "socks", "cannot listen on %s: the address is already in use; pick another with --listen (port 0 for a free one)", *listen)
		}
		return c.failf(exitFail, "socks", "cannot listen on %s: %v", *listen, short(err))
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	srv := &sprites.SOCKS5{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialSprite(ctx, sprite, network, addr)
			if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
				con.warn("a connection failed: " + explain(err, f.streamWhere(addr)))
			}
			return conn, err
		},
		Logger: newLogger(con, level),
	}
	addr := ln.Addr().String()
	fmt.Fprintf(c.stdout, "%s: SOCKS5 proxy into sprite %q (e.g. curl --socks5-hostname %s http://localhost:8080/)\n", addr, sprite, addr)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	status := c.terminal
	var tick <-chan time.Time
	if status {
		t := time.NewTicker(cmp.Or(c.statusEvery, time.Second))
		defer t.Stop()
		tick = t.C
		con.status(socksStatusLine(srv.Stats()))
	}
	for {
		select {
		case <-ctx.Done():
			srv.Close()
			<-served
			if status {
				con.summary(socksStatusLine(srv.Stats()))
			}
			return exitOK
		case err := <-served:
			srv.Close()
			con.done()
			return c.failf(exitFail, "socks", "the listener failed: %v", short(err))
		case <-tick:
			con.status(socksStatusLine(srv.Stats()))
		}
	}
}

// socksStatusLine is the status line of socks, as forward's.
func socksStatusLine(st sprites.SOCKS5Stats) string {
	return countsLine(sprites.Stats{Accepted: st.Accepted, Active: st.Active, Failed: st.Failed, Sent: st.Sent, Received: st.Received})
}

// checkLoopbackListen accepts a host:port whose host is a loopback address
// or "localhost", for listeners that authenticate nobody.
func checkLoopbackListen(flagName, addr string) error {
	host, _, err := splitListen(flagName, addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s %s: the SOCKS5 proxy has no authentication, so it listens on loopback only (127.0.0.1:PORT, [::1]:PORT or localhost:PORT)", flagName, addr)
}
