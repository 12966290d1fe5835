package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// newFlagSet returns a flag set for cmd that prints nothing by itself:
// parseFlags reports errors as one line, and -h prints the usage to stdout.
func newFlagSet(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("spriteproxy "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// errHelp is returned by parseFlags after it printed the usage for -h.
var errHelp = errors.New("help shown")

// parseFlags parses args with fs, allowing flags after positional arguments
// ("forward db 5432 --json"), as users type them. Everything after "--" is
// positional. It returns the positional arguments, errHelp once the usage is
// printed for -h, or an error of one line.
func (c *cli) parseFlags(fs *flag.FlagSet, args []string, synopsis string) ([]string, error) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(c.stdout)
			fmt.Fprintf(c.stdout, "Usage: %s\n\nFlags:\n", synopsis)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
			return nil, errHelp
		}
		if err != nil {
			return nil, fmt.Errorf("%v (see %s -h)", err, fs.Name())
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// clientFlags are the flags of the commands that reach an API: forward,
// connect and socks.
type clientFlags struct {
	api, token, tlsCA *string
	proxy             proxyFlags
	timeout           *time.Duration
}

// addClientFlags defines --api, --token, --tls-ca, --proxy, --no-proxy and
// --timeout (bounding what timeoutDoc says) on fs.
func addClientFlags(fs *flag.FlagSet, timeoutDoc string) *clientFlags {
	return &clientFlags{
		api:     fs.String("api", "", "the API's `URL` (default $"+envAPI+", else "+sprites.DefaultBaseURL+")"),
		token:   fs.String("token", "", "the bearer token `T` (default $"+envToken+")"),
		tlsCA:   fs.String("tls-ca", "", "PEM `FILE` of certificates to trust besides the system's, e.g. a self-signed server's (default $"+envCAFile+")"),
		proxy:   addProxyFlags(fs),
		timeout: fs.Duration("timeout", 15*time.Second, timeoutDoc+"; 0 means no limit"),
	}
}

// clientConfig is what clientFlags resolve to, with the environment.
type clientConfig struct {
	base      string // the API's URL
	token     string
	tlsConfig *tls.Config                      // nil: the system's roots
	proxy     func(*url.URL) (*url.URL, error) // nil: the environment's
	timeout   time.Duration                    // 0: no limit
}

// resolve checks the flags and fills in what they leave to the
// environment. Its errors are usage errors, of one line.
func (f *clientFlags) resolve(getenv func(string) string) (clientConfig, error) {
	cfg := clientConfig{
		base:    cmp.Or(*f.api, getenv(envAPI), sprites.DefaultBaseURL),
		token:   cmp.Or(*f.token, getenv(envToken)),
		timeout: *f.timeout,
	}
	if err := checkAPI(cfg.base); err != nil {
		return cfg, err
	}
	if cfg.timeout < 0 {
		return cfg, fmt.Errorf("--timeout %v: expected a duration of 0 (no limit) or more, e.g. 15s", cfg.timeout)
	}
	var err error
	if cfg.proxy, err = f.proxy.choose(); err != nil {
		return cfg, err
	}
	if file := *f.tlsCA; file != "" {
		cfg.tlsConfig, err = loadCA("--tls-ca", file)
	} else if file := getenv(envCAFile); file != "" {
		cfg.tlsConfig, err = loadCA(envCAFile, file)
	}
	return cfg, err
}

// withTimeout is ctx bounded by d, or not at all for 0.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// splitListen splits a listen address of flag flagName into host and
// port, with a hint for a bare port ("8443": did you mean ":8443"?).
func splitListen(flagName, addr string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		if n, perr := strconv.Atoi(addr); perr == nil && n >= 0 && n <= 65535 {
			return "", 0, fmt.Errorf("%s %s: expected HOST:PORT; for port %d on every address use :%d, on loopback only 127.0.0.1:%d", flagName, addr, n, n, n)
		}
		return "", 0, fmt.Errorf("%s %s: expected HOST:PORT, e.g. 127.0.0.1:8443", flagName, addr)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("%s %s: the port must be a number from 0 to 65535", flagName, addr)
	}
	return h, n, nil
}

// newLogger is the text logger of forward and socks, writing to con at
// level; an "err" attribute that is nil is left out, so that a clean end
// never logs err=<nil>.
func newLogger(con *console, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(con, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "err" && a.Value.Kind() == slog.KindAny && a.Value.Any() == nil {
				return slog.Attr{}
			}
			return a
		},
	}))
}
