package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
	xproxy "golang.org/x/net/proxy"
)

// startSocks runs socks in-process into sprite "box" of a serve on a free
// loopback port, and returns the run and the SOCKS5 listener's address.
func startSocks(t *testing.T, extra ...string) (*run, string) {
	t.Helper()
	_, api := startServe(t, env(envToken, testToken))
	args := append([]string{"socks", "--listen", "127.0.0.1:0", "--api", "http://" + api}, extra...)
	r := start(t, env(envToken, testToken), append(args, "box")...)
	m := r.stdout.waitFor(t, regexp.MustCompile(`^(\S+): SOCKS5 proxy into sprite "box"`), 10*time.Second)
	return r, m[1]
}

// socksDial dials addr inside the sprite through the SOCKS5 proxy at
// proxyAddr with golang.org/x/net/proxy's client.
func socksDial(t *testing.T, proxyAddr, addr string) (net.Conn, error) {
	t.Helper()
	d, err := xproxy.SOCKS5("tcp", proxyAddr, nil, xproxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.(xproxy.ContextDialer).DialContext(ctx, "tcp", addr)
}

// socks forwards each connection to the address asked for inside the
// sprite, says on stderr why one failed, and stops cleanly on Ctrl-C.
func TestSocks(t *testing.T) {
	t.Parallel()
	r, addr := startSocks(t, "-v")
	port := echoService(t)
	conn, err := socksDial(t, addr, fmt.Sprintf("localhost:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("through socks ", 1000)
	go io.WriteString(conn, msg)
	buf := make([]byte, len(msg))
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %v", err)
	}
	conn.Close()

	dead := testnet.HoldPort(t, 0)
	if _, err := socksDial(t, addr, fmt.Sprintf("localhost:%d", dead)); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("dial of a dead port: %v, want connection refused", err)
	}
	r.stderr.waitFor(t, regexp.MustCompile(`spriteproxy socks: a connection failed: target refused: nothing listens on localhost:\d+ inside sprite "box"\n`), 10*time.Second)
	r.stderr.waitFor(t, regexp.MustCompile(`msg="socks5 tunnel closed"`), 10*time.Second)
	if code := r.stop(t); code != exitOK {
		t.Errorf("exit %d: %s", code, r.stderr.String())
	}
	if strings.Contains(r.stderr.String(), "err=<nil>") {
		t.Errorf("-v logged err=<nil>:\n%s", r.stderr.String())
	}
	noToken(t, r.stdout.String(), r.stderr.String())
}

// socks refuses a listener that is not loopback, and checks the API, the
// token and the sprite before it listens.
func TestSocksErrors(t *testing.T) {
	t.Parallel()
	_, api := startServe(t, env(envToken, testToken), "--sprite", "box")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--listen", "0.0.0.0:1080", "box"}, exitUsage, "--listen 0.0.0.0:1080: the SOCKS5 proxy has no authentication, so it listens on loopback only"},
		{[]string{"--listen", "1080", "box"}, exitUsage, "--listen 1080: expected HOST:PORT; for port 1080 on every address use :1080, on loopback only 127.0.0.1:1080"},
		{[]string{"box", "extra"}, exitUsage, "expected one SPRITE"},
		{[]string{"--listen", "127.0.0.1:0", "boxx"}, exitFail, `unknown sprite "boxx"`},
	} {
		code, stdout, stderr := runCLI(t, env(envToken, testToken, envAPI, "http://"+api), append([]string{"socks"}, tc.args...)...)
		if code != tc.code || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q", tc.args, code, stdout)
		}
		oneLine(t, stderr, "spriteproxy socks: ", tc.want)
		noToken(t, stdout, stderr)
	}
}

// On a terminal, socks draws forward's status line with its counters, and
// Ctrl-C leaves one line of totals.
func TestSocksStatusLine(t *testing.T) {
	t.Parallel()
	_, api := startServe(t, env(envToken, testToken))
	r := startCLI(t, &cli{getenv: env(envToken, testToken), terminal: true, statusEvery: 5 * time.Millisecond},
		"socks", "--listen", "127.0.0.1:0", "--api", "http://"+api, "box")
	m := r.stdout.waitFor(t, regexp.MustCompile(`^(\S+): SOCKS5 proxy into sprite "box"`), 10*time.Second)
	port := echoService(t)
	conn, err := socksDial(t, m[1], fmt.Sprintf("localhost:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("0123456789"))
	if _, err := io.ReadFull(conn, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	r.stdout.waitFor(t, regexp.MustCompile(`\x1b\[\?7l0 open, 1 total · ↑ 10 B ↓ 10 B\x1b\[\?7h`), 10*time.Second)
	if code := r.stop(t); code != exitOK {
		t.Errorf("exit %d", code)
	}
	const summary = "\r\x1b[Kspriteproxy socks: stopped: 0 open, 1 total · ↑ 10 B ↓ 10 B\n"
	if out := r.stdout.String(); !strings.HasSuffix(out, summary) {
		t.Errorf("no summary line at the end, want %q: %q", summary, out[max(0, len(out)-120):])
	}
}

// TestSocksCurl: curl --socks5-hostname reaches an HTTP service inside the
// sprite by the name it has there, through spriteproxy socks. It needs
// curl, and runs with SPRITEPROXY_REAL_SERVICES=1 (.ci/run installs curl).
func TestSocksCurl(t *testing.T) {
	if os.Getenv("SPRITEPROXY_REAL_SERVICES") != "1" {
		t.Skip("set SPRITEPROXY_REAL_SERVICES=1 to run curl through spriteproxy socks (see .ci/run)")
	}
	t.Parallel()
	curl := lookPath(t, "curl")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s host=%s\n", r.Method, r.URL.Path, r.Host)
	}))
	defer web.Close()
	port := web.Listener.Addr().(*net.TCPAddr).Port
	_, addr := startSocks(t)

	url := fmt.Sprintf("http://localhost:%d/inside", port)
	out, err := exec.Command(curl, "-sS", "--max-time", "30", "--socks5-hostname", addr, url).CombinedOutput()
	if want := fmt.Sprintf("GET /inside host=localhost:%d\n", port); err != nil || string(out) != want {
		t.Fatalf("curl %s: %v: %q, want %q", url, err, out, want)
	}

	// A refused target is curl's proxy error, not a hang or an empty reply.
	dead := testnet.HoldPort(t, 0)
	cmd := exec.Command(curl, "-sS", "--max-time", "30", "--socks5-hostname", addr, fmt.Sprintf("http://localhost:%d/", dead))
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 97 {
		t.Fatalf("curl to a dead port: %v (%s), want exit 97 (proxy handshake error)", err, out)
	}
	if !strings.Contains(string(out), "(5)") && !strings.Contains(strings.ToLower(string(out)), "refused") {
		t.Errorf("curl to a dead port says %q, want reply 5 (connection refused)", out)
	}
}
