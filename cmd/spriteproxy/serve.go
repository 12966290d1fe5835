package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

const serveSynopsis = "spriteproxy serve [--listen ADDR] [--tls-cert FILE --tls-key FILE] [--token-file FILE] [--allow RULE]... [--allow-origin ORIGIN]... [--sprite NAME]... [--metrics-listen ADDR] [--resume-grace D | --no-resume] [--replica-id ID]\n\n" +
	"The token may also come from $" + envToken + ". Tunnels reach the sprite's loopback\n" +
	"(this machine's) and what --allow adds: a CIDR, an address or a host name,\n" +
	"each with an optional :PORT or :LOW-HIGH (10.0.0.0/8:5432, [fd00::1], db.internal:1-1024)."

func (c *cli) serve(ctx context.Context, args []string) int {
	fs := newFlagSet("serve")
	listen := fs.String("listen", "127.0.0.1:8080", "the `address` to listen on; port 0 picks a free one (the start line says which)")
	certFile := fs.String("tls-cert", "", "PEM certificate `FILE` (chain first to last); with --tls-key, serves https")
	keyFile := fs.String("tls-key", "", "PEM private key `FILE` of --tls-cert")
	tokenFile := fs.String("token-file", "", "`FILE` holding the bearer token clients must send (default $"+envToken+")")
	noAuth := fs.Bool("insecure-no-auth", false, "accept every client, with no token: only for a trusted network")
	var allow, names, origins listFlag
	fs.Var(&origins, "allow-origin", "let web pages from `ORIGIN` (as browsers send it: https://app.example) open tunnels; upgrades with any other Origin header get 403 (repeatable)")
	fs.Var(&allow, "allow", "let tunnels reach `RULE` besides loopback: CIDR|ADDR|HOST[:PORT|:LOW-HIGH] (repeatable)")
	fs.Var(&names, "sprite", "serve the sprite `NAME` only (repeatable; default: any name)")
	drain := fs.Duration("drain-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long open tunnels may take to end before they are cut")
	drainDelay := fs.Duration("drain-delay", 5*time.Second, "on SIGTERM, how long /healthz answers 503 while new connections are still served, so that a load balancer stops sending them, before the listener closes (SIGINT skips it)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at /metrics on this `address` (tunnels, bytes, latencies, refusals, Go runtime, process)")
	maxTunnels := fs.Int("max-tunnels", 0, "most tunnels open at once; over it, 503 (default 8192)")
	maxPerToken := fs.Int("max-tunnels-per-token", 0, "most tunnels one token holds open; over it, 429 (default 1024)")
	idle := fs.Duration("idle-timeout", 0, "close a tunnel that carried no data for this long (default never)")
	raw := fs.Bool("raw-streams", false, "let clients that offer it carry tunnels unframed after the handshake (the raw_stream extension: splice, no framing); only when nothing between here and the clients inspects WebSocket frames")
	noReuse := fs.Bool("no-reuse", false, "close each tunnel's connection when the tunnel ends, instead of letting the client carry its next tunnel on it (the reuse extension)")
	noResume := fs.Bool("no-resume", false, "refuse the resume extension: a tunnel whose connection drops ends, instead of being carried on by the client over a new connection")
	resumeGrace := fs.Duration("resume-grace", websocket.DefaultResumeGrace, "how long a resumable tunnel whose connection dropped keeps its target and slot, waiting for the client to resume it; 0 turns resume off, as --no-resume")
	replicaID := fs.String("replica-id", "", "name this replica `ID` (A-Z a-z 0-9 . _ -, at most 64) among several behind one balancer: resumable tunnels' clients come back with ?replica=ID and a Sprite-Replica header for the balancer to route on, and the 101 and /healthz answers carry Sprite-Replica: ID (default: none)")
	verbose := fs.Bool("v", false, "log every tunnel, and every refused request with its status, path, client and reason (never a token)")
	pos, err := c.parseFlags(fs, args, serveSynopsis)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		return c.failf(exitUsage, "serve", "%v", err)
	}
	if len(pos) > 0 {
		return c.failf(exitUsage, "serve", "unexpected argument %q (see spriteproxy serve -h)", pos[0])
	}

	if *resumeGrace < 0 {
		return c.failf(exitUsage, "serve", "bad --resume-grace %v: expected a duration of 0 (resume off) or more", *resumeGrace)
	}

	// The token, or the explicit choice of none.
	var auth websocket.Authenticator
	authDesc := "token"
	switch {
	case *noAuth && (*tokenFile != ""):
		return c.failf(exitUsage, "serve", "--insecure-no-auth and --token-file contradict each other")
	case *noAuth:
		authDesc = "none"
	case *tokenFile != "":
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return c.failf(exitFail, "serve", "--token-file: %v", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return c.failf(exitFail, "serve", "--token-file: %s is empty", *tokenFile)
		}
		auth = websocket.StaticToken(tok)
	case c.getenv(envToken) != "":
		auth = websocket.StaticToken(c.getenv(envToken))
	default:
		return c.failf(exitUsage, "serve", "no token: pass --token-file FILE or set %s (or --insecure-no-auth to accept every client)", envToken)
	}

	policy := &websocket.Policy{}
	for _, a := range allow {
		r, err := websocket.ParseRule(a)
		if err != nil {
			return c.failf(exitUsage, "serve", "bad --allow %q: %v; expected CIDR, ADDRESS or HOST, with an optional :PORT or :LOW-HIGH", a, err)
		}
		policy.Allow = append(policy.Allow, r)
	}
	for _, o := range origins {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return c.failf(exitUsage, "serve", "bad --allow-origin %q: expected SCHEME://HOST[:PORT], as a browser sends it (https://app.example)", o)
		}
	}
	for _, n := range names {
		if err := checkSpriteName(n); err != nil {
			return c.failf(exitUsage, "serve", "--sprite: %v", err)
		}
	}

	if err := websocket.CheckReplicaID(*replicaID); err != nil {
		return c.failf(exitUsage, "serve", "--replica-id: %v", err)
	}

	var tlsConfig *tls.Config
	switch {
	case (*certFile == "") != (*keyFile == ""):
		return c.failf(exitUsage, "serve", "--tls-cert and --tls-key go together")
	case *certFile != "":
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return c.failf(exitFail, "serve", "loading the TLS certificate: %v", err)
		}
		// HTTP/1.1 only: the upgrade to WebSocket needs it.
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))

	// "--listen 8443" is a port without its colon: say how to write it.
	if _, _, err := splitListen("--listen", *listen); err != nil {
		return c.failf(exitUsage, "serve", "%v", err)
	}
	// No TCP keep-alive on accepted conns: the tunnels ping on their own.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return c.failf(exitFail, "serve", "cannot listen on %s: the address is already in use", *listen)
		}
		return c.failf(exitFail, "serve", "cannot listen on %s: %v", *listen, short(err))
	}
	addr := ln.Addr().(*net.TCPAddr)

	srv := &websocket.Server{
		Auth:               auth,
		Sprites:            &websocket.HostNetwork{Names: names},
		Policy:             policy,
		AllowedOrigins:     origins,
		MaxTunnels:         *maxTunnels,
		MaxTunnelsPerToken: *maxPerToken,
		Tuning:             websocket.Tuning{IdleTimeout: *idle},
		RawStreams:         *raw,
		DisableReuse:       *noReuse,
		DisableResume:      *noResume || *resumeGrace == 0,
		ResumeGrace:        *resumeGrace,
		TLSConfig:          tlsConfig,
		ReplicaID:          *replicaID,
	}
	if *verbose {
		srv.Logger = logger
	}
	if *metricsListen != "" {
		srv.Metrics = websocket.NewMetrics()
		ms, err := startMetrics(*metricsListen, srv.Metrics)
		if err != nil {
			ln.Close()
			return c.failf(exitFail, "serve", "--metrics-listen: %v", short(err))
		}
		defer ms.close() // last: scrapes see the drain to its end
		logger.Info("metrics endpoint", "url", "http://"+ms.addr+"/metrics")
	}

	spritesDesc := "any"
	if len(names) > 0 {
		spritesDesc = strings.Join(names, ",")
	}
	tlsDesc := "off"
	if tlsConfig != nil {
		tlsDesc = "on"
	}
	allowDesc := "loopback"
	for _, r := range policy.Allow {
		allowDesc += "," + r.String()
	}
	logger.Info("spriteproxy serving", "addr", addr.String(), "tls", tlsDesc, "auth", authDesc,
		"sprites", spritesDesc, "targets", allowDesc)
	for _, w := range startWarnings(addr, tlsConfig != nil, auth != nil) {
		logger.Warn(w, "addr", addr.String())
	}

	// Serve upgrades on the raw connections (no net/http): fewer
	// allocations and syscalls per tunnel; the TLS handshake and the
	// upgrade are bounded by the server's handshake timeout.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		srv.Close()
		return c.failf(exitFail, "serve", "serving: %v", err)
	case <-ctx.Done():
	}

	// On SIGTERM, a drain a load balancer can follow: /healthz turns 503
	// and idle connections are told to go at once, while the listener keeps
	// serving for the drain delay.
	byTerm := stoppedByTerm(ctx, term)
	signal.Stop(term) // a second SIGTERM ends serve at once, as a second Ctrl-C does
	if *drainDelay > 0 && byTerm {
		srv.Drain()
		logger.Info("draining", "tunnels", srv.Live(), "drain_delay", drainDelay.String())
		t := time.NewTimer(*drainDelay)
		select {
		case <-t.C:
		case err := <-served:
			t.Stop()
			srv.Close()
			return c.failf(exitFail, "serve", "serving: %v", err)
		}
	}
	// Stop accepting, let open tunnels end within the drain timeout, then
	// cut what is left. Resumable tunnels that wait detached for their
	// client end at once: with the listener closed nothing can resume
	// them (PROTOCOL.md §9, Drain). So serve exits within the drain delay,
	// the drain timeout and a close timeout (2 s) at most.
	logger.Info("shutting down", "tunnels", srv.Live(), "drain_timeout", drain.String())
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		logger.Warn("drain timed out: open tunnels were cut", "drain_timeout", drain.String())
	}
	<-served
	logger.Info("stopped")
	return exitOK
}

// stoppedByTerm says whether serve's ctx ended on SIGTERM (a service
// manager or a rolling restart) rather than Ctrl-C or the caller: term is
// notified of SIGTERM, and ctx's cause names the signal that ended it.
func stoppedByTerm(ctx context.Context, term <-chan os.Signal) bool {
	select {
	case <-term:
		return true
	default:
	}
	cause := context.Cause(ctx)
	return cause != nil && strings.HasPrefix(cause.Error(), syscall.SIGTERM.String()+" ")
}

// startWarnings are the warnings serve logs at start: no TLS, or no
// authentication, on an address other machines may reach.
func startWarnings(addr *net.TCPAddr, tls, auth bool) []string {
	if addr.IP.IsLoopback() {
		return nil
	}
	var ws []string
	if !tls {
		ws = append(ws, "serving without TLS on a non-loopback address: tokens and data cross the network in clear text; use --tls-cert and --tls-key")
	}
	if !auth {
		ws = append(ws, "serving with no authentication on a non-loopback address: anyone who reaches it can open tunnels")
	}
	return ws
}
