// Command spriteproxy reaches TCP services inside sprites through encrypted
// WebSocket tunnels, and serves the sprite side of those tunnels.
//
//	spriteproxy serve   --listen ADDR [--tls-cert F --tls-key F] [--token-file F] [--allow RULE]... [--sprite NAME]...
//	spriteproxy forward [--api URL] [--token T] [--tls-ca F] [--json] SPRITE MAPPING...
//	spriteproxy connect [--api URL] [--token T] [--tls-ca F] SPRITE HOST:PORT
//	spriteproxy socks   [--listen ADDR] [--api URL] [--token T] [--tls-ca F] SPRITE
//	spriteproxy demo    [--keep] [--mib N]
//
// serve is the server of the Sprites v1 proxy protocol (PROTOCOL.md) on this
// machine's network; forward listens on local ports and tunnels every
// connection to a port inside a sprite, through serve or the hosted Sprites
// API; connect is one tunnel on stdin and stdout (an ssh ProxyCommand); socks is
// a local SOCKS5 proxy whose connections are tunnels into a sprite; demo
// runs both ends in one process, on loopback, and moves data through.
//
// Exit status: 0 on success and after Ctrl-C (SIGINT) or SIGTERM, 1 when
// something failed (a port in use, a rejected token, an unreachable server;
// for connect, a signal while its one stream is open, which cuts it), 2
// for a usage error (a bad flag or mapping).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // something the user can act on went wrong
	exitUsage = 2 // bad flags or arguments
)

// Environment variables read by the subcommands.
const (
	envToken = "SPRITEPROXY_TOKEN"
	envAPI   = "SPRITEPROXY_API"
	// envCAFile names a PEM file of certificates to trust, as --tls-ca
	// does; proxy.New reads it too (sprites.EnvCAFile).
	envCAFile = sprites.EnvCAFile
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, the default handling is back: a second
		// Ctrl-C ends a slow drain at once.
		<-ctx.Done()
		stop()
	}()
	c := &cli{
		stdin:    os.Stdin,
		stdout:   os.Stdout,
		stderr:   os.Stderr,
		getenv:   os.Getenv,
		terminal: isTerminal(os.Stdout) && os.Getenv("TERM") != "dumb",
		width: func() int {
			if w := termWidth(os.Stdout); w > 0 {
				return w
			}
			return columns(os.Getenv("COLUMNS"))
		},
	}
	os.Exit(c.run(ctx, os.Args[1:]))
}

// isTerminal reports whether f is a character device (a terminal), without
// a dependency: a pipe or a file is not one.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// columns parses $COLUMNS: a positive number, else 0 (unknown).
func columns(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// cli is one invocation of the command, with its surroundings made explicit
// so that tests run it in-process.
type cli struct {
	// stdin is connect's input; nil reads as empty.
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// terminal says stdout is a terminal: forward draws a live status line.
	terminal bool
	// width returns the terminal's width in columns now (it may change
	// between redraws), 0 if unknown: the terminal's own where the OS
	// tells it (termWidth), else $COLUMNS. Where it is unknown, the status
	// line is clipped by the terminal. Nil means unknown.
	width func() int
	// statusEvery is how often the status line is redrawn; 0 means 1 s.
	statusEvery time.Duration
}

const usage = `spriteproxy reaches TCP services inside sprites through WebSocket tunnels.

Usage:
  spriteproxy serve   [flags]                  serve the sprite side on this machine
  spriteproxy forward [flags] SPRITE MAPPING...  forward local ports into a sprite
  spriteproxy connect [flags] SPRITE HOST:PORT   one tunnel on stdin/stdout (ssh ProxyCommand)
  spriteproxy socks   [flags] SPRITE           a local SOCKS5 proxy into a sprite (curl, browsers)
  spriteproxy demo    [--keep] [--mib N]       see it work, all in one process on loopback

Run "spriteproxy COMMAND -h" for the flags of a command.
`

// run runs the command line args (without the program name) until it is
// done or ctx ends (a signal: a clean stop), and returns the exit status.
func (c *cli) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return c.serve(ctx, rest)
	case "forward":
		return c.forward(ctx, rest)
	case "connect":
		return c.connect(ctx, rest)
	case "socks":
		return c.socks(ctx, rest)
	case "demo":
		return c.demo(ctx, rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(c.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(c.stderr, "spriteproxy: unknown command %q: expected serve, forward, connect, socks or demo (spriteproxy -h)\n", cmd)
		return exitUsage
	}
}

// failf prints one line to stderr, prefixed by the command, and returns
// code.
func (c *cli) failf(code int, cmd, format string, args ...any) int {
	fmt.Fprintf(c.stderr, "spriteproxy %s: %s\n", cmd, fmt.Sprintf(format, args...))
	return code
}
