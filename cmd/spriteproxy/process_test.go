package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testcert"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// process is a command run as a real process.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *output
	done           chan struct{} // closed once it has exited
}

// startProcess runs name with args, with the environment of the test less
// SPRITEPROXY_* plus env. The process is killed at the end of the test if
// it is still running.
func startProcess(t *testing.T, env []string, name string, args ...string) *process {
	t.Helper()
	return runProcess(t, exec.Command(name, args...), env, "SPRITEPROXY_", func(p *process) { p.cmd.Process.Kill() })
}

// runProcess starts cmd with the test's environment less the variables
// whose names begin with one of drop, plus env; kill ends it at the end of
// the test if it is still running.
func runProcess(t *testing.T, cmd *exec.Cmd, env []string, drop string, kill func(*process), more ...string) *process {
	t.Helper()
	p := &process{cmd: cmd, stdout: newOutput(), stderr: newOutput(), done: make(chan struct{})}
	prefixes := append([]string{drop}, more...)
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(prefixes, func(pre string) bool { return strings.HasPrefix(kv, pre) }) {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			kill(p)
			<-p.done
		}
	})
	return p
}

// signal sends sig and returns the exit status, waiting at most timeout.
func (p *process) signal(t *testing.T, sig os.Signal, timeout time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return p.wait(t, timeout)
}

// wait returns the exit status once the process has exited, waiting at
// most timeout.
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v; stderr:\n%s", p.cmd.Args, timeout, p.stderr.String())
		return -1
	}
}

// tlsFiles writes a throw-away certificate and its key into dir.
func tlsFiles(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	pair, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pair.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pair.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// serveProcess runs "spriteproxy serve" with TLS and a token file on a free
// loopback port, for the sprite "box", and returns it, its https URL and
// the CA file that trusts it.
func serveProcess(t *testing.T, bin string, extra ...string) (p *process, api, caFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := tlsFiles(t, dir)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile,
		"--token-file", tokenFile, "--sprite", "box"}, extra...)
	p = startProcess(t, nil, bin, args...)
	m := p.stderr.waitFor(t, serveAddrRE, 30*time.Second)
	if !strings.Contains(p.stderr.String(), "tls=on") {
		t.Errorf("start line does not say tls=on: %s", p.stderr.String())
	}
	return p, "https://" + m[1], certFile
}

// serve and forward as separate processes over loopback with TLS: --json
// output parsed, data through, SIGINT and SIGTERM end both with status 0.
func TestProcessServeForwardTLS(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	srv, api, ca := serveProcess(t, bin)
	port := echoService(t)

	fwd := startProcess(t, []string{envToken + "=" + testToken, envAPI + "=" + api},
		bin, "forward", "--tls-ca", ca, "--json", "box", fmt.Sprintf("0:%d", port), "0:"+strconv.Itoa(port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\{.*\})\n(\{.*\})\n`), 30*time.Second)
	for _, line := range m[1:] {
		var mj mappingJSON
		if err := json.Unmarshal([]byte(line), &mj); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if mj.Sprite != "box" || mj.RemotePort != port || mj.RemoteHost != "localhost" || mj.LocalPort == 0 {
			t.Errorf("mapping %+v", mj)
		}
		roundTrip(t, mj.Local, 4<<20)
	}

	if code := fwd.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("forward exit %d after SIGINT; stderr:\n%s", code, fwd.stderr.String())
	}
	if s := fwd.stderr.String(); s != "" {
		t.Errorf("forward stderr: %q", s)
	}
	if code := srv.signal(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("serve exit %d after SIGTERM; stderr:\n%s", code, srv.stderr.String())
	}
	if s := srv.stderr.String(); !strings.Contains(s, "msg=stopped") {
		t.Errorf("serve stderr:\n%s", s)
	}
	noToken(t, fwd.stdout.String(), srv.stderr.String())
}

// The errors of real processes: one line, status 1 or 2, and the signal
// ends serve with a tunnel open.
func TestProcessErrors(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	srv, api, ca := serveProcess(t, bin)
	port := echoService(t)

	for _, tt := range []struct {
		env  []string
		args []string
		code int
		say  string
	}{
		{[]string{envToken + "=wrong"}, []string{"--api", api, "--tls-ca", ca, "box", strconv.Itoa(port)}, 1, "token rejected"},
		{[]string{envToken + "=" + testToken}, []string{"--api", api, "--tls-ca", ca, "other", "0:" + strconv.Itoa(port)}, 1, `unknown sprite "other" (404`},
		{[]string{envToken + "=" + testToken}, []string{"--api", api, "box", "0:" + strconv.Itoa(port)}, 1, "--tls-ca"},
		{[]string{envToken + "=" + testToken}, []string{"--api", api, "box", "0:[::1:80"}, 2, "bad mapping"},
	} {
		p := startProcess(t, tt.env, bin, append([]string{"forward"}, tt.args...)...)
		if code := p.wait(t, 30*time.Second); code != tt.code {
			t.Errorf("%v: exit %d, want %d", tt.args, code, tt.code)
		}
		oneLine(t, p.stderr.String(), tt.say)
		noToken(t, p.stderr.String())
	}

	// Ctrl-C on serve with a tunnel open: it drains, then exits 0.
	fwd := startProcess(t, []string{envToken + "=" + testToken},
		bin, "forward", "--api", api, "--tls-ca", ca, "box", "0:"+strconv.Itoa(port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> box:\d+\n`), 30*time.Second)
	c, err := net.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("x"))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite() // the tunnel ends once the echo has ended too
	if code := srv.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("serve exit %d; stderr:\n%s", code, srv.stderr.String())
	}
	if code := fwd.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("forward exit %d; stderr:\n%s", code, fwd.stderr.String())
	}
}

// The quick start of README.md is internal/quickstart word for word, and it
// works against a server whose sprite has a web app on 8080 and a
// "database" on 5432: a TLS server with a certificate of its own, which
// the program trusts through SPRITEPROXY_CA_FILE with no code change (and
// without it, fails saying so).
func TestReadmeQuickStart(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("internal/quickstart/main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	program := src[bytes.Index(src, []byte("package main")):]
	if !bytes.Contains(readme, append(append([]byte("```go\n"), program...), "```"...)) {
		t.Error("README.md does not show internal/quickstart/main.go from \"package main\" on, in a ```go block")
	}

	_, qs := buildBinaries(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from inside")
	}))
	t.Cleanup(web.Close)
	db := echoService(t)
	srv := &websocket.Server{
		Auth: websocket.StaticToken(testToken),
		Sprites: websocket.ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
			if name != "my-sprite" {
				return nil, dialer.ErrUnknownSprite
			}
			return portMap{8080: web.Listener.Addr().String(), 5432: fmt.Sprintf("127.0.0.1:%d", db)}, nil
		}),
	}
	api := httptest.NewTLSServer(srv)
	t.Cleanup(func() {
		srv.Close()
		api.Close()
	})
	caFile := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	untrusted := startProcess(t, []string{envToken + "=" + testToken, envAPI + "=" + api.URL}, qs)
	if code := untrusted.wait(t, 30*time.Second); code != 1 || !strings.Contains(untrusted.stderr.String(), "certificate signed by unknown authority") {
		t.Errorf("without %s: exit %d, stderr %q; want 1 and an unknown authority", envCAFile, code, untrusted.stderr.String())
	}

	p := startProcess(t, []string{envToken + "=" + testToken, envAPI + "=" + api.URL, envCAFile + "=" + caFile}, qs)
	p.stdout.waitFor(t, regexp.MustCompile(`GET / inside the sprite: 200 OK: hello from inside\n`), 30*time.Second)
	m := p.stdout.waitFor(t, regexp.MustCompile(`forwarding 127\.0\.0\.1:(\d+) to my-sprite:5432: psql -h 127\.0\.0\.1 -p (\d+)\n`), 30*time.Second)
	if m[1] != m[2] {
		t.Errorf("LocalAddr and LocalPort differ: %q", m[0])
	}
	roundTrip(t, "127.0.0.1:"+m[1], 1000)
	if code := p.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("quick start exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

// portMap is a sprite's network for tests: each port inside the sprite is
// a service at a real address; other ports refuse.
type portMap map[int]string

func (m portMap) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	_, p, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(p)
	real, ok := m[port]
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", real)
}

// The server process killed mid-stream: a ProxySocket reading from it and
// a ProxyPort session's forwarded connection both end with an error at
// once (the kernel resets the dead process's sockets), not after a hang;
// the session itself stays up and reports the failure of new connections.
func TestProcessServerKilledMidStream(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	srv, api, ca := serveProcess(t, bin)
	port := echoService(t)
	tlsConf, err := loadCA("--tls-ca", ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sprite := proxy.New(testToken, proxy.WithBaseURL(api), proxy.WithTLSConfig(tlsConf)).Sprite("box")

	sock, err := sprite.ProxySocket(ctx, "tcp", "localhost:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	ps, err := sprite.ProxyPort(ctx, 0, port)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	local, err := net.Dial("tcp", ps.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	// Both streams are live: an echo each way.
	for _, c := range []net.Conn{sock, local} {
		c.Write([]byte("ping"))
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
	}

	srv.cmd.Process.Kill()
	srv.wait(t, 30*time.Second)
	for name, c := range map[string]net.Conn{"ProxySocket": sock, "ProxyPort": local} {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: still waiting after the server died", name)
		}
	}
	// The session outlives its broken stream: a new connection is accepted
	// and then fails (the server is gone), and the session is still open.
	again, err := net.Dial("tcp", ps.LocalAddr().String())
	if err == nil {
		again.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, again); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Error("a new connection hung with the server gone")
		}
		again.Close()
	}
	if st := ps.Stats(); st.Failed == 0 && err == nil {
		t.Errorf("stats %+v: no failed stream counted", st)
	}
}
