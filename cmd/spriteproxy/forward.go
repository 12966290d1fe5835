package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	sprites "github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

const forwardSynopsis = "spriteproxy forward [--api URL] [--token T] [--tls-ca FILE] [--proxy URL | --no-proxy] [--json] SPRITE MAPPING...\n\n" +
	"MAPPING is " + mappingSyntax + ";\nLOCAL 0 picks a free port. The token and API may also come from\n$" +
	envToken + " and $" + envAPI + "."

// probeAddr is the target of the start-up check that needs no target (see
// forwarder.probe): a name under .invalid (RFC 6761), which no resolver
// answers and the server's default policy refuses without resolving it.
const probeAddr = "spriteproxy-probe.invalid:9"

func (c *cli) forward(ctx context.Context, args []string) int {
	fs := newFlagSet("forward")
	cf := addClientFlags(fs, "bound on the start-up checks")
	jsonOut := fs.Bool("json", false, "print the mappings as JSON lines, for scripts")
	noCheck := fs.Bool("no-target-check", false, "start without checking that each target accepts a connection (for services that start later)")
	verbose := fs.Bool("v", false, "log every forwarded connection")
	pos, err := c.parseFlags(fs, args, forwardSynopsis)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		return c.failf(exitUsage, "forward", "%v", err)
	}
	if len(pos) < 2 {
		return c.failf(exitUsage, "forward", "expected SPRITE MAPPING... (see spriteproxy forward -h)")
	}
	sprite := pos[0]
	if err := checkSpriteName(sprite); err != nil {
		return c.failf(exitUsage, "forward", "%v", err)
	}
	mappings, err := parseMappings(pos[1:], 2)
	if err != nil {
		return c.failf(exitUsage, "forward", "%v", err)
	}
	cfg, err := cf.resolve(c.getenv)
	if err != nil {
		return c.failf(exitUsage, "forward", "%v", err)
	}

	f := &forwarder{
		api:          cfg.base,
		token:        cfg.token,
		tlsConfig:    cfg.tlsConfig,
		proxy:        cfg.proxy,
		sprite:       sprite,
		mappings:     mappings,
		checkTargets: !*noCheck,
		timeout:      cfg.timeout,
		verbose:      *verbose,
		con:          &console{out: c.stdout, err: c.stderr, width: c.width, prefix: "spriteproxy forward: "},
	}
	sessions, mgr, err := f.start(ctx)
	if ctx.Err() != nil {
		return exitOK // interrupted while starting: nothing is left running
	}
	if err != nil {
		return c.failf(exitFail, "forward", "%s", explain(err, f.where("")))
	}
	if err := printMappings(c.stdout, sprite, sessions, *jsonOut); err != nil {
		mgr.CloseAll()
		return c.failf(exitFail, "forward", "writing the mappings: %v", err)
	}
	return f.hold(ctx, sessions, mgr, c.terminal && !*jsonOut, c.statusEvery)
}

// forwarder sets up and holds the sessions of one forward (or demo).
type forwarder struct {
	api          string
	token        string
	tlsConfig    *tls.Config
	proxy        func(*url.URL) (*url.URL, error) // nil: the environment's
	sprite       string
	mappings     []sprites.PortMapping
	checkTargets bool          // probe every target at start, not only the API
	timeout      time.Duration // bound on the start-up checks; 0: none
	verbose      bool
	con          *console
	resumes      resumeCounter // the tunnels' resumes, for the status line and -v
}

// where describes the forward for error messages.
func (f *forwarder) where(target string) where {
	return where{api: redactURL(f.api), sprite: f.sprite, target: target, hasToken: f.token != "", timeout: f.timeout}
}

// streamWhere describes a stream opened once forwarding, for error
// messages: --timeout bounds only the start-up checks, so a stream's
// timeout is not blamed on it.
func (f *forwarder) streamWhere(target string) where {
	w := f.where(target)
	w.timeout = 0
	return w
}

// start checks that the API, the token, the sprite and (unless told not
// to) every target work, then starts one session per mapping, all or
// nothing. The sessions live until ctx ends or the manager closes them.
func (f *forwarder) start(ctx context.Context) ([]*sprites.ProxySession, *sprites.ProxyManager, error) {
	d := &websocket.Dialer{BaseURL: f.api, Token: f.token, TLSConfig: f.tlsConfig, Proxy: f.proxy}
	if err := f.probe(ctx, d); err != nil {
		return nil, nil, err
	}

	// Once forwarding, a stream that fails closes only its own connection:
	// say why on stderr, since the local client will only see a reset.
	reporting := dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		conn, err := d.DialSprite(ctx, sprite, network, address)
		if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
			f.con.warn("a connection failed: " + explain(err, f.streamWhere(address)))
		}
		if err != nil {
			return nil, err
		}
		return f.resumes.track(conn, sprite, address), nil
	})
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	logger := newLogger(f.con, level)
	if f.verbose {
		f.resumes.logger = logger
	}
	client := sprites.New(f.token, sprites.WithDialer(reporting), sprites.WithLogger(logger))
	sessions, err := client.ProxyPorts(ctx, f.sprite, f.mappings)
	if err != nil {
		return nil, nil, err
	}
	mgr := sprites.NewProxyManager()
	for _, s := range sessions {
		mgr.AddSession(s)
	}
	return sessions, mgr, nil
}

// probe reports at start what would otherwise only show as reset
// connections later: a server that cannot be reached, a rejected token, an
// unknown sprite, and (with checkTargets) a target nothing listens on.
//
// With checkTargets, it opens a tunnel to each mapping's target and closes
// it at once: the service sees a connection that sends nothing. Without,
// it asks for a target that cannot exist (probeAddr): the server has then
// checked the token and the sprite before it upgrades, and any handshake
// reply (forbidden, unreachable) proves both good, while no service is
// touched.
func (f *forwarder) probe(ctx context.Context, d dialer.Dialer) error {
	ctx, cancel := withTimeout(ctx, f.timeout)
	defer cancel()
	if f.checkTargets {
		for i, m := range f.mappings {
			conn, err := d.DialSprite(ctx, f.sprite, "tcp", targetAddr(m))
			if err != nil {
				return &sprites.MappingError{Index: i, Mapping: m, Err: err}
			}
			conn.Close()
		}
		return nil
	}
	conn, err := d.DialSprite(ctx, f.sprite, "tcp", probeAddr)
	if err == nil {
		conn.Close()
		return nil
	}
	if _, ok := errors.AsType[*dialer.TargetError](err); ok {
		return nil
	}
	return err
}

// hold keeps the sessions forwarding until ctx ends (Ctrl-C: a clean stop,
// exit 0) or they all end by themselves (their listeners failed: exit 1).
// With status, it redraws a status line every interval.
func (f *forwarder) hold(ctx context.Context, sessions []*sprites.ProxySession, mgr *sprites.ProxyManager, status bool, every time.Duration) int {
	allDone := make(chan struct{})
	go func() {
		mgr.WaitAll()
		close(allDone)
	}()
	var tick <-chan time.Time
	if status {
		t := time.NewTicker(cmp.Or(every, time.Second))
		defer t.Stop()
		tick = t.C
		f.con.status(statusLine(sessions, f.resumes.total()))
	}
	for {
		select {
		case <-ctx.Done():
			mgr.CloseAll()
			<-allDone
			if status {
				f.con.summary(statusLine(sessions, f.resumes.total()))
			} else {
				f.con.done()
			}
			return exitOK
		case <-allDone:
			if ctx.Err() != nil {
				// Ctrl-C, the sessions ended by it before this loop saw
				// ctx end: the same clean stop, with its totals.
				if status {
					f.con.summary(statusLine(sessions, f.resumes.total()))
				} else {
					f.con.done()
				}
				return exitOK
			}
			f.con.done()
			f.con.warn("every session ended: the local listeners failed")
			return exitFail
		case <-tick:
			f.con.status(statusLine(sessions, f.resumes.total()))
		}
	}
}

// mappingJSON is one line of forward --json.
type mappingJSON struct {
	Local      string `json:"local"` // the address listened on, "127.0.0.1:54321" (::1 too, same port)
	LocalPort  int    `json:"local_port"`
	Sprite     string `json:"sprite"`
	RemoteHost string `json:"remote_host"` // as dialed inside the sprite, "localhost" by default
	RemotePort int    `json:"remote_port"`
}

// printMappings prints one line per session: "127.0.0.1:54321 -> db:5432",
// or a JSON object with asJSON.
func printMappings(w io.Writer, sprite string, sessions []*sprites.ProxySession, asJSON bool) error {
	enc := json.NewEncoder(w)
	for _, s := range sessions {
		local := fmt.Sprintf("127.0.0.1:%d", s.LocalPort)
		if a := s.LocalAddr(); a != nil {
			local = a.String()
		}
		m := sprites.PortMapping{LocalPort: s.LocalPort, RemotePort: s.RemotePort}
		if s.RemoteHost != "localhost" {
			m.RemoteHost = s.RemoteHost
		}
		var err error
		if asJSON {
			err = enc.Encode(mappingJSON{Local: local, LocalPort: s.LocalPort, Sprite: sprite, RemoteHost: s.RemoteHost, RemotePort: s.RemotePort})
		} else {
			_, err = fmt.Fprintf(w, "%s -> %s\n", local, remoteString(sprite, m))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkSpriteName accepts what fits in one path segment of the protocol
// (dialer.CheckSprite), with a message for people.
func checkSpriteName(name string) error {
	if dialer.CheckSprite(name) != nil {
		return fmt.Errorf("bad sprite name %q: expected 1-255 letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

// checkAPI accepts an http, https, ws or wss URL with a host.
func checkAPI(s string) error {
	if !strings.Contains(s, "://") {
		return fmt.Errorf("bad API URL %q: no scheme; expected https://%s (or http:// for a server without TLS)", redactURL(s), redactURL(s))
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bad API URL %q: expected e.g. https://sprites.example.com or http://127.0.0.1:8080", redactURL(s))
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
		return nil
	}
	return fmt.Errorf("bad API URL %q: the scheme must be http, https, ws or wss", redactURL(s))
}

// redactURL hides a password in a URL, for messages. A string that is not
// a URL is shown as typed, less anything before an '@' (user info).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			scheme, _, ok := strings.Cut(s[:i], "://")
			if ok {
				return scheme + "://xxxxx" + s[i:]
			}
			return "xxxxx" + s[i:]
		}
		return s
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	return u.String()
}

// loadCA returns a TLS config that trusts the system's roots and the
// certificates of the PEM file.
// what names where file came from in errors: "--tls-ca" or the variable.
func loadCA(what, file string) (*tls.Config, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in %s", what, file)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
