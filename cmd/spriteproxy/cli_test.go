package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spriteproxy/spriteproxy/internal/testcert"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

const testToken = "s3cret-test-token"

// The token never shows in what the command prints.
func noToken(t *testing.T, outs ...string) {
	t.Helper()
	for _, o := range outs {
		if strings.Contains(o, testToken) {
			t.Errorf("the token leaked: %q", o)
		}
	}
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, env())
	if code != exitUsage || !strings.Contains(stderr, "Usage:") {
		t.Errorf("no args: %d %q", code, stderr)
	}
	code, _, stderr = runCLI(t, env(), "frobnicate")
	if code != exitUsage {
		t.Errorf("unknown command: %d", code)
	}
	oneLine(t, stderr, `unknown command "frobnicate"`)
	code, stdout, _ := runCLI(t, env(), "help")
	if code != exitOK || !strings.Contains(stdout, "spriteproxy forward") {
		t.Errorf("help: %d %q", code, stdout)
	}
	// Every command and demo's flags are on the usage lines.
	for _, want := range []string{"spriteproxy socks   [flags] SPRITE", "spriteproxy demo    [--keep] [--mib N]"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help does not show %q:\n%s", want, stdout)
		}
	}
	for _, cmd := range []string{"serve", "forward", "connect", "socks", "demo"} {
		code, stdout, stderr := runCLI(t, env(), cmd, "-h")
		if code != exitOK || !strings.Contains(stdout, "Usage: spriteproxy "+cmd) || stderr != "" {
			t.Errorf("%s -h: %d %q %q", cmd, code, stdout, stderr)
		}
		// The token's placeholder is T, as in the README, not "-token token".
		if strings.Contains(stdout, "-token token") {
			t.Errorf("%s -h shows -token token:\n%s", cmd, stdout)
		}
		if cmd != "serve" && cmd != "demo" && !strings.Contains(stdout, "-token T") {
			t.Errorf("%s -h does not show -token T:\n%s", cmd, stdout)
		}
	}
}

// forward -v logs each connection, and a clean end with no err=<nil>.
func TestForwardVerbose(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	port := echoService(t)
	fwd := start(t, env(envToken, testToken), "forward", "-v", "--api", "http://"+addr, "box", fmt.Sprintf("0:%d", port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
	roundTrip(t, m[1], 1000)
	fwd.stderr.waitFor(t, regexp.MustCompile(`msg="stream closed".* sent=1000 received=1000`), 10*time.Second)
	if code := fwd.stop(t); code != exitOK {
		t.Errorf("exit %d", code)
	}
	if s := fwd.stderr.String(); strings.Contains(s, "err=<nil>") {
		t.Errorf("-v logged err=<nil>:\n%s", s)
	}
}

// forward through an in-process serve: --json lines name the real ports,
// data goes through each mapping, and a stop is a clean exit.
func TestForwardThroughServe(t *testing.T) {
	t.Parallel()
	srv, addr := startServe(t, env(envToken, testToken))
	port := echoService(t)

	fwd := start(t, env(envToken, testToken, envAPI, "http://"+addr),
		"forward", "--json", "box", fmt.Sprintf("0:%d", port), fmt.Sprintf("0:127.0.0.1:%d", port), "--no-target-check")
	lines := fwd.stdout.waitFor(t, regexp.MustCompile(`(?s)^(\{.*\}\n)(\{.*\}\n)$`), 10*time.Second)
	for i, line := range lines[1:] {
		var m mappingJSON
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
		wantHost := []string{"localhost", "127.0.0.1"}[i]
		if m.Sprite != "box" || m.RemotePort != port || m.RemoteHost != wantHost || m.LocalPort == 0 ||
			m.Local != "127.0.0.1:"+strconv.Itoa(m.LocalPort) {
			t.Errorf("line %d: %+v", i, m)
		}
		roundTrip(t, m.Local, 100<<10)
		roundTrip(t, fmt.Sprintf("[::1]:%d", m.LocalPort), 1000)
	}
	if code := fwd.stop(t); code != exitOK {
		t.Errorf("forward exit %d; stderr:\n%s", code, fwd.stderr.String())
	}
	if s := fwd.stderr.String(); s != "" {
		t.Errorf("forward said: %q", s)
	}
	if code := srv.stop(t); code != exitOK {
		t.Errorf("serve exit %d", code)
	}
	srv.stderr.waitFor(t, regexp.MustCompile(`msg=stopped`), time.Second)
	noToken(t, srv.stderr.String(), fwd.stdout.String())
}

// The text output is one "LOCAL -> SPRITE:PORT" line per mapping.
func TestForwardTextOutput(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	port := echoService(t)
	port6 := echoServiceOn(t, "[::1]:0")
	fwd := start(t, env(envToken, testToken), "forward", "--api", "http://"+addr, "box",
		fmt.Sprintf("0:%d", port), fmt.Sprintf("0:[::1]:%d", port6))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^127\.0\.0\.1:(\d+) -> box:(\d+)\n127\.0\.0\.1:(\d+) -> box:\[::1\]:(\d+)\n$`), 10*time.Second)
	if m[2] != strconv.Itoa(port) || m[4] != strconv.Itoa(port6) {
		t.Errorf("got %q", m[0])
	}
	roundTrip(t, "127.0.0.1:"+m[1], 10000)
	roundTrip(t, "127.0.0.1:"+m[3], 10000)
	if code := fwd.stop(t); code != exitOK {
		t.Errorf("exit %d", code)
	}
}

// Every error a user can act on is one line on stderr and a non-zero exit,
// with nothing on stdout and nothing left running.
func TestForwardErrors(t *testing.T) {
	t.Parallel()
	pair, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pair.CertPEM, 0o600)
	os.WriteFile(keyFile, pair.KeyPEM, 0o600)
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)

	_, plain := startServe(t, env(envToken, testToken), "--sprite", "box")
	_, secure := startServe(t, env(envToken, testToken), "--sprite", "box", "--tls-cert", certFile, "--tls-key", keyFile)
	port := echoService(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() }) // after the parallel subtests
	busyPort := busy.Addr().(*net.TCPAddr).Port
	dead := testnet.HoldPort(t, 0)

	api := "http://" + plain
	good := fmt.Sprintf("0:%d", port)
	tests := []struct {
		name string
		env  func(string) string
		args []string
		code int
		say  []string
	}{
		{"token rejected", env(envToken, "wrong"), []string{"--api", api, "box", good},
			exitFail, []string{"token rejected by " + api + " (401)", "--token or SPRITEPROXY_TOKEN"}},
		{"no token", env(), []string{"--api", api, "box", good},
			exitFail, []string{"(401)", "no token was given"}},
		{"unknown sprite", env(envToken, testToken), []string{"--api", api, "nobox", good},
			exitFail, []string{`unknown sprite "nobox" (404`}},
		{"unknown sprite without target check", env(envToken, testToken), []string{"--api", api, "--no-target-check", "nobox", good},
			exitFail, []string{`unknown sprite "nobox" (404`}},
		{"server unreachable", env(envToken, testToken), []string{"--api", fmt.Sprintf("http://127.0.0.1:%d", dead), "box", good},
			exitFail, []string{"server unreachable", "connection refused"}},
		{"target refused", env(envToken, testToken), []string{"--api", api, "box", fmt.Sprintf("0:%d", dead)},
			exitFail, []string{"target refused", fmt.Sprintf(`localhost:%d inside sprite "box"`, dead)}},
		{"target forbidden", env(envToken, testToken), []string{"--api", api, "box", "0:10.1.2.3:5432"},
			exitFail, []string{"target not allowed", "10.1.2.3:5432", "--allow"}},
		{"port in use", env(envToken, testToken), []string{"--api", api, "box", good, fmt.Sprintf("%d:%d", busyPort, port)},
			exitFail, []string{fmt.Sprintf("local port %d is already in use (mapping 2", busyPort)}},
		{"self-signed without --tls-ca", env(envToken, testToken), []string{"--api", "https://" + secure, "box", good},
			exitFail, []string{"unknown authority", "--tls-ca"}},
		{"plain http to a TLS server", env(envToken, testToken), []string{"--api", "https://" + plain, "box", good},
			exitFail, []string{"does not speak TLS"}},
		{"bad mapping", env(envToken, testToken), []string{"--api", api, "box", good, "0:fdf::1:80"},
			exitUsage, []string{`bad mapping "0:fdf::1:80" (argument 3)`, "in brackets"}},
		{"no mapping", env(envToken, testToken), []string{"--api", api, "box"},
			exitUsage, []string{"expected SPRITE MAPPING"}},
		{"bad sprite name", env(envToken, testToken), []string{"--api", api, "a/b", good},
			exitUsage, []string{`bad sprite name "a/b"`}},
		{"bad api", env(envToken, testToken), []string{"--api", "ftp://x", "box", good},
			exitUsage, []string{"bad API URL", "http, https, ws or wss"}},
		{"bad flag", env(envToken, testToken), []string{"--frob", "box", good},
			exitUsage, []string{"flag provided but not defined: -frob"}},
		{"tls-ca not PEM", env(envToken, testToken), []string{"--api", api, "--tls-ca", notPEM, "box", good},
			exitUsage, []string{"no PEM certificate"}},
		{"CA file not PEM", env(envToken, testToken, envCAFile, notPEM), []string{"--api", api, "box", good},
			exitUsage, []string{"SPRITEPROXY_CA_FILE: no PEM certificate in " + notPEM}},
		{"api without a scheme", env(envToken, testToken), []string{"--api", "127.0.0.1:8443", "box", good},
			exitUsage, []string{`bad API URL "127.0.0.1:8443": no scheme; expected https://127.0.0.1:8443`}},
		{"api not a URL", env(envToken, testToken), []string{"--api", "http://u:secret@[::1", "box", good},
			exitUsage, []string{`bad API URL "http://xxxxx@[::1"`}},
		{"http to a TLS server", env(envToken, testToken), []string{"--api", "http://" + secure, "box", good},
			exitFail, []string{"http://" + secure + " is a TLS server: use https://" + secure, "(mapping 1)"}},
		{"http to a TLS server without target check", env(envToken, testToken), []string{"--api", "http://" + secure, "--no-target-check", "box", good},
			exitFail, []string{"is a TLS server: use https://" + secure}},
		{"timeout too short", env(envToken, testToken), []string{"--api", "https://" + secure, "--tls-ca", certFile, "--timeout", "1ns", "box", good},
			exitFail, []string{"within --timeout 1ns: raise --timeout (0 means no limit)"}},
		{"negative timeout", env(envToken, testToken), []string{"--api", api, "--timeout", "-1s", "box", good},
			exitUsage, []string{"--timeout -1s: expected a duration of 0 (no limit) or more"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCLI(t, tt.env, append([]string{"forward"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			oneLine(t, stderr, append([]string{"spriteproxy forward: "}, tt.say...)...)
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
			noToken(t, stdout, stderr)
		})
	}

	// --timeout 0 is no limit, not an instant failure.
	t.Run("timeout 0", func(t *testing.T) {
		t.Parallel()
		fwd := start(t, env(envToken, testToken), "forward", "--api", api, "--timeout", "0", "box", good)
		fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
		if code := fwd.stop(t); code != exitOK {
			t.Errorf("exit %d: %s", code, fwd.stderr.String())
		}
	})

	// SPRITEPROXY_CA_FILE is --tls-ca from the environment.
	t.Run("CA file", func(t *testing.T) {
		t.Parallel()
		fwd := start(t, env(envToken, testToken, envCAFile, certFile), "forward", "--api", "https://"+secure, "box", good)
		m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
		roundTrip(t, m[1], 1<<10)
		if code := fwd.stop(t); code != exitOK {
			t.Errorf("exit %d: %s", code, fwd.stderr.String())
		}
	})

	// With TLS and the right CA, the same server works.
	t.Run("tls-ca", func(t *testing.T) {
		t.Parallel()
		fwd := start(t, env(envToken, testToken), "forward", "--api", "https://"+secure, "--tls-ca", certFile, "box", good)
		m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
		roundTrip(t, m[1], 1<<20)
		if code := fwd.stop(t); code != exitOK {
			t.Errorf("exit %d: %s", code, fwd.stderr.String())
		}
	})
}

// With --no-target-check, forward starts though the target is down, and
// says why each connection to it fails.
func TestForwardReportsFailedConnections(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	dead := testnet.HoldPort(t, 0)
	fwd := start(t, env(envToken, testToken), "forward", "--api", "http://"+addr, "--no-target-check", "box", fmt.Sprintf("0:%d", dead))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
	// The failed stream is reset: either the read fails, or, when the reset
	// beats the connect's completion, the dial itself.
	c, err := net.Dial("tcp", m[1])
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	if err == nil {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("read %d bytes from a connection to a dead target", n)
		}
		c.Close()
	}
	fwd.stderr.waitFor(t, regexp.MustCompile(`spriteproxy forward: a connection failed: target refused: nothing listens on localhost:\d+ inside sprite "box"\n`), 10*time.Second)
	if code := fwd.stop(t); code != exitOK {
		t.Errorf("exit %d", code)
	}
}

// On a terminal, forward redraws a status line with the counters, with
// wrapping off (a wrapped line could not be wiped), and on Ctrl-C replaces
// it with one line of totals.
func TestForwardStatusLine(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	port := echoService(t)
	fwd := startCLI(t, &cli{getenv: env(envToken, testToken), terminal: true, statusEvery: 5 * time.Millisecond},
		"forward", "--api", "http://"+addr, "box", fmt.Sprintf("0:%d", port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
	fwd.stdout.waitFor(t, regexp.MustCompile(`\r\x1b\[K\x1b\[\?7l0 open, 0 total · ↑ 0 B ↓ 0 B\x1b\[\?7h`), 10*time.Second)
	roundTrip(t, m[1], 3000)
	fwd.stdout.waitFor(t, regexp.MustCompile(`\r\x1b\[K\x1b\[\?7l0 open, 1 total · ↑ 2\.9 KiB ↓ 2\.9 KiB\x1b\[\?7h`), 10*time.Second)
	if code := fwd.stop(t); code != exitOK {
		t.Errorf("exit %d", code)
	}
	const summary = "\r\x1b[Kspriteproxy forward: stopped: 0 open, 1 total · ↑ 2.9 KiB ↓ 2.9 KiB\n"
	if out := fwd.stdout.String(); !strings.HasSuffix(out, summary) {
		t.Errorf("no summary line at the end, want %q: %q", summary, out[max(0, len(out)-120):])
	}

	// Not on a pipe.
	fwd = start(t, env(envToken, testToken), "forward", "--api", "http://"+addr, "box", fmt.Sprintf("0:%d", port))
	fwd.stdout.waitFor(t, regexp.MustCompile(`-> box:\d+\n`), 10*time.Second)
	fwd.stop(t)
	if out := fwd.stdout.String(); strings.Contains(out, "\r") {
		t.Errorf("status line on a pipe: %q", out)
	}
}

func TestServeUsage(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() }) // after the parallel subtests
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	tests := []struct {
		name string
		env  func(string) string
		args []string
		code int
		say  string
	}{
		{"no token", env(), nil, exitUsage, "no token: pass --token-file FILE or set SPRITEPROXY_TOKEN (or --insecure-no-auth"},
		{"empty token file", env(), []string{"--token-file", empty}, exitFail, "is empty"},
		{"missing token file", env(), []string{"--token-file", filepath.Join(dir, "nope")}, exitFail, "--token-file"},
		{"no auth and a token", env(), []string{"--token-file", empty, "--insecure-no-auth"}, exitUsage, "contradict"},
		{"cert without key", env(envToken, testToken), []string{"--tls-cert", empty}, exitUsage, "--tls-cert and --tls-key go together"},
		{"bad cert", env(envToken, testToken), []string{"--tls-cert", empty, "--tls-key", empty}, exitFail, "loading the TLS certificate"},
		{"bad allow", env(envToken, testToken), []string{"--allow", "10.0.0.0/99"}, exitUsage, `bad --allow "10.0.0.0/99"`},
		{"bad allow-origin", env(envToken, testToken), []string{"--allow-origin", "app.example/x"}, exitUsage, `bad --allow-origin "app.example/x"`},
		{"bad sprite", env(envToken, testToken), []string{"--sprite", "a b"}, exitUsage, `bad sprite name "a b"`},
		{"bad replica id", env(envToken, testToken), []string{"--replica-id", "r 1"}, exitUsage, `--replica-id: websocket: bad ReplicaID: "r 1" holds ' '`},
		{"address in use", env(envToken, testToken), []string{"--listen", busy.Addr().String()}, exitFail, "already in use"},
		{"port without colon", env(envToken, testToken), []string{"--listen", "8443"}, exitUsage, "--listen 8443: expected HOST:PORT; for port 8443 on every address use :8443, on loopback only 127.0.0.1:8443"},
		{"listen not an address", env(envToken, testToken), []string{"--listen", "nowhere"}, exitUsage, "--listen nowhere: expected HOST:PORT, e.g. 127.0.0.1:8443"},
		{"argument", env(envToken, testToken), []string{"extra"}, exitUsage, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCLI(t, tt.env, append([]string{"serve", "--listen", "127.0.0.1:0"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			oneLine(t, stderr, "spriteproxy serve: ", tt.say)
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
			noToken(t, stderr)
		})
	}
}

// serve logs one line at start with the address and TLS, and warns when a
// non-loopback address has no TLS or no authentication.
func TestServeStartLine(t *testing.T) {
	t.Parallel()
	srv, _ := startServe(t, env(envToken, testToken), "--allow", "10.0.0.0/8:5432", "--sprite", "a", "--sprite", "b")
	srv.stop(t)
	lines := strings.Split(strings.TrimSpace(srv.stderr.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want the start line and two at the stop, got:\n%s", srv.stderr.String())
	}
	for _, want := range []string{"addr=127.0.0.1:", "tls=off", "auth=token", "sprites=a,b", "targets=loopback,10.0.0.0/8:5432"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("start line %q does not say %q", lines[0], want)
		}
	}

	srv = start(t, env(), "serve", "--listen", "127.0.0.1:0", "--insecure-no-auth")
	srv.stderr.waitFor(t, serveAddrRE, 10*time.Second)
	srv.stop(t)
	if s := srv.stderr.String(); !strings.Contains(s, "auth=none") || strings.Contains(s, "WARN") {
		t.Errorf("no auth on loopback:\n%s", s)
	}
}

// Serving on an address other machines may reach warns about what is
// missing (tested without binding one).
func TestStartWarnings(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		addr      string
		tls, auth bool
		want      []string
	}{
		{"127.0.0.1:8080", false, false, nil},
		{"[::1]:8080", false, false, nil},
		{"10.0.0.1:8080", true, true, nil},
		{"0.0.0.0:8080", false, true, []string{"serving without TLS"}},
		{"[::]:8080", true, false, []string{"serving with no authentication"}},
		{"192.0.2.1:8080", false, false, []string{"serving without TLS", "serving with no authentication"}},
	} {
		ws := startWarnings(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tt.addr)), tt.tls, tt.auth)
		if len(ws) != len(tt.want) {
			t.Errorf("%s tls=%v auth=%v: %q", tt.addr, tt.tls, tt.auth, ws)
			continue
		}
		for i := range ws {
			if !strings.HasPrefix(ws[i], tt.want[i]) {
				t.Errorf("%s: %q, want %q", tt.addr, ws[i], tt.want[i])
			}
		}
	}
}

// A tunnel that stays open past the drain timeout is cut, and serve still
// exits 0.
func TestServeDrainTimeout(t *testing.T) {
	t.Parallel()
	srv, addr := startServe(t, env(envToken, testToken), "--drain-timeout", "50ms")
	port := echoService(t)
	fwd := start(t, env(envToken, testToken), "forward", "--api", "http://"+addr, "box", fmt.Sprintf("0:%d", port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
	c, err := net.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil { // the tunnel is up
		t.Fatal(err)
	}
	if code := srv.stop(t); code != exitOK {
		t.Errorf("serve exit %d", code)
	}
	s := srv.stderr.String()
	// tunnels=1, or 2 while the start-up check's own tunnel is still ending.
	if !regexp.MustCompile(`tunnels=[12] `).MatchString(s) || !strings.Contains(s, "drain timed out") {
		t.Errorf("serve said:\n%s", s)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection outlived the server")
	}
	fwd.stop(t)
}

func TestDemo(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, env(), "demo", "--mib", "2")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		`sprite "demo" runs an echo service on its port 7`,
		" -> demo:7\n",
		"sent 2 MiB to the echo service through the tunnel and read the same 2 MiB back",
		"MiB/s each way",
		"the bytes arrived intact",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo did not say %q:\n%s", want, stdout)
		}
	}
	if stderr != "" {
		t.Errorf("stderr: %q", stderr)
	}
}

// demo --keep forwards until stopped, and says how to connect.
func TestDemoKeep(t *testing.T) {
	t.Parallel()
	r := start(t, env(), "demo", "--keep", "--mib", "1")
	m := r.stdout.waitFor(t, regexp.MustCompile(`try it: nc 127\.0\.0\.1 (\d+) `), 30*time.Second)
	roundTrip(t, "127.0.0.1:"+m[1], 5000)
	if code := r.stop(t); code != exitOK {
		t.Errorf("exit %d: %s", code, r.stderr.String())
	}
}

// serve --raw-streams: forward's tunnels go unframed after the handshake
// (the library's client offers raw_stream), and bytes still arrive whole,
// half-close included (roundTrip closes its write side and reads to EOF).
func TestForwardRawStreams(t *testing.T) {
	t.Parallel()
	srv, addr := startServe(t, env(envToken, testToken), "--raw-streams", "-v")
	port := echoService(t)
	fwd := start(t, env(envToken, testToken, envAPI, "http://"+addr), "forward", "box", fmt.Sprintf("0:%d", port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
	roundTrip(t, m[1], 4<<20)
	srv.stderr.waitFor(t, regexp.MustCompile(`msg="tunnel open".* raw=true`), 10*time.Second)
	if code := fwd.stop(t); code != exitOK {
		t.Errorf("forward exit %d; stderr:\n%s", code, fwd.stderr.String())
	}
	if code := srv.stop(t); code != exitOK {
		t.Errorf("serve exit %d", code)
	}
}

// Connection reuse through the CLI: forward's tunnels, one after another,
// share a connection (serve logs reuse=true, and the first tunnel's end
// hands its connection on); serve --no-reuse turns it off.
func TestForwardReuse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"default", nil, `msg="tunnel closed".* reused=true`},
		{"no-reuse", []string{"--no-reuse"}, `msg="tunnel open".* reuse=false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, addr := startServe(t, env(envToken, testToken), append(tc.flags, "-v")...)
			port := echoService(t)
			fwd := start(t, env(envToken, testToken, envAPI, "http://"+addr), "forward", "box", fmt.Sprintf("0:%d", port))
			m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 10*time.Second)
			roundTrip(t, m[1], 64<<10)
			roundTrip(t, m[1], 64<<10)
			srv.stderr.waitFor(t, regexp.MustCompile(tc.want), 10*time.Second)
			if code := fwd.stop(t); code != exitOK {
				t.Errorf("forward exit %d; stderr:\n%s", code, fwd.stderr.String())
			}
			if code := srv.stop(t); code != exitOK {
				t.Errorf("serve exit %d", code)
			}
		})
	}
}

// serve refuses an upgrade from a browser (one with an Origin header) with
// 403, unless --allow-origin lists the origin.
func TestServeAllowOrigin(t *testing.T) {
	t.Parallel()
	srv, addr := startServe(t, env(), "--insecure-no-auth", "--allow-origin", "https://app.example", "--allow-origin", "http://localhost:3000")
	defer srv.stop(t)
	for origin, want := range map[string]string{
		"https://evil.example":  "HTTP/1.1 403 Forbidden\r\n",
		"null":                  "HTTP/1.1 403 Forbidden\r\n",
		"https://app.example":   "HTTP/1.1 101 Switching Protocols\r\n",
		"http://localhost:3000": "HTTP/1.1 101 Switching Protocols\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: "+origin+"\r\n\r\n")
		got := make([]byte, len(want))
		_, err = io.ReadFull(c, got)
		c.Close()
		if err != nil || string(got) != want {
			t.Errorf("Origin %s: answer %q (%v), want %q", origin, got, err, want)
		}
	}
}

// serve --replica-id ID: the 101 and /healthz carry Sprite-Replica: ID;
// without the flag, neither does.
func TestServeReplicaID(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"r2", ""} {
		args := []string{"--insecure-no-auth"}
		if id != "" {
			args = append(args, "--replica-id", id)
		}
		srv, addr := startServe(t, env(), args...)
		for _, req := range []string{"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
			"GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Header.Get("Sprite-Replica"); got != id || resp.StatusCode/100 > 2 {
				t.Errorf("--replica-id %q, %s: %s with Sprite-Replica %q", id, strings.Fields(req)[1], resp.Status, got)
			}
		}
		srv.stop(t)
	}
}

// On a terminal narrower than the status line, each redraw is fitted to
// the width (the terminal's, else $COLUMNS), so that it never wraps.
func TestForwardStatusLineFitsWidth(t *testing.T) {
	t.Parallel()
	_, addr := startServe(t, env(envToken, testToken))
	port := echoService(t)
	fwd := startCLI(t, &cli{getenv: env(envToken, testToken), terminal: true, width: func() int { return 20 }, statusEvery: 5 * time.Millisecond},
		"forward", "--api", "http://"+addr, "box", fmt.Sprintf("0:%d", port))
	fwd.stdout.waitFor(t, regexp.MustCompile(`\x1b\[\?7l0 open, 0 total\x1b\[\?7h`), 10*time.Second)
	if code := fwd.stop(t); code != exitOK {
		t.Errorf("exit %d", code)
	}
	draws := regexp.MustCompile(`\x1b\[\?7l(.*?)\x1b\[\?7h`).FindAllStringSubmatch(fwd.stdout.String(), -1)
	if len(draws) == 0 {
		t.Fatal("no status line drawn")
	}
	for _, d := range draws {
		if n := utf8.RuneCountInString(d[1]); n >= 20 {
			t.Fatalf("a status line of %d columns on a terminal of 20: %q", n, d[1])
		}
	}
}

func TestFit(t *testing.T) {
	t.Parallel()
	line := "12 open, 345 total · ↑ 1.5 MiB ↓ 2.5 MiB · 3 failed"
	for _, tc := range []struct {
		width int
		want  string
	}{
		{0, line},
		{80, line},
		{45, "12 open, 345 total · ↑ 1.5 MiB ↓ 2.5 MiB"},
		{30, "12 open, 345 total"},
		{10, "12 open,…"},
		{1, ""},
	} {
		if got := fit(line, tc.width); got != tc.want {
			t.Errorf("fit(%d) = %q, want %q", tc.width, got, tc.want)
		}
	}
}

// termWidth is 0 for what is not a terminal, so that a pipe falls back on
// $COLUMNS.
func TestTermWidthNotATerminal(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if n := termWidth(w); n != 0 {
		t.Errorf("termWidth of a pipe = %d, want 0", n)
	}
	if n := columns("42"); n != 42 {
		t.Errorf("columns(42) = %d", n)
	}
	if n := columns("wide"); n != 0 {
		t.Errorf("columns(wide) = %d", n)
	}
}
