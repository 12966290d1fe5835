package websocket

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// startTinyproxy runs Debian's tinyproxy on a free loopback port with
// Basic credentials alice:s3cret and returns its address. Without
// tinyproxy installed the test is skipped, unless SPRITEPROXY_REAL_SERVICES
// is 1 (.ci/run installs it), where it fails.
func startTinyproxy(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		if os.Getenv("SPRITEPROXY_REAL_SERVICES") == "1" {
			t.Fatal("tinyproxy not found: install Debian's tinyproxy (see .ci/run)")
		}
		t.Skip("tinyproxy not installed (apt-get install tinyproxy); .ci/run runs this test")
	}
	// tinyproxy cannot listen on port 0: take a free port and hand it on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "tinyproxy.conf")
	text := fmt.Sprintf("Port %s\nListen 127.0.0.1\nLogLevel Info\nBasicAuth alice s3cret\nMaxClients 50\n", port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", conf)
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	drained := make(chan struct{})
	var log strings.Builder
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(logs)
		waiting := true
		for sc.Scan() {
			if waiting {
				log.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), "listening on fd") {
					close(ready)
					waiting = false
				}
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-drained
		cmd.Wait()
	})
	select {
	case <-ready:
	case <-drained:
		t.Fatalf("tinyproxy exited before listening:\n%s", log.String()) // drained: log is no longer written
	case <-time.After(30 * time.Second):
		t.Fatal("tinyproxy did not start listening within 30s")
	}
	return addr
}

// fixedProxy is a Dialer.Proxy that always names u. (ProxyFromEnvironment
// would skip the loopback test servers, as net/http does.)
func fixedProxy(u string) func(*url.URL) (*url.URL, error) {
	return func(*url.URL) (*url.URL, error) { return url.Parse(u) }
}

// Through a real tinyproxy: a tunnel with the proxy URL's credentials
// works over ws and wss; without them, or with a wrong password, the dial
// fails with a *ProxyError that says 407 (401 for the wrong password) and names the proxy, not the
// server, and no password.
func TestProxyTinyproxy(t *testing.T) {
	t.Parallel()
	proxyAddr := startTinyproxy(t)
	tg := startTarget(t, echo)
	for _, useTLS := range []bool{false, true} {
		ts := startServer(t, newServer(), useTLS)
		name := map[bool]string{false: "ws", true: "wss"}[useTLS]
		t.Run(name+"/ok", func(t *testing.T) {
			t.Parallel()
			d := ts.dialer()
			d.Proxy = fixedProxy("http://alice:s3cret@" + proxyAddr)
			c, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("through the proxy")); err != nil {
				t.Fatal(err)
			}
			c.(*Conn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "through the proxy" {
				t.Fatalf("echo: %q, %v", got, err)
			}
		})
		for _, creds := range []string{"", "alice:wrong@"} {
			t.Run(name+"/407/"+strings.TrimSuffix(creds, "@"), func(t *testing.T) {
				t.Parallel()
				d := ts.dialer()
				d.Proxy = fixedProxy("http://" + creds + proxyAddr)
				c, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
				if err == nil {
					c.Close()
					t.Fatal("dial through a proxy that wants credentials worked without them")
				}
				pe, ok := errors.AsType[*ProxyError](err)
				// tinyproxy asks for credentials with 407 and answers
				// wrong ones with 401.
				if !ok || (pe.StatusCode != http.StatusProxyAuthRequired && pe.StatusCode != http.StatusUnauthorized) {
					t.Fatalf("err %v (%T), want a *ProxyError with 407 or 401", err, err)
				}
				if !strings.Contains(err.Error(), proxyAddr) || strings.Contains(err.Error(), "wrong") {
					t.Errorf("error does not name the proxy, or shows its password: %v", err)
				}
			})
		}
	}
}

// An in-process proxy that answers 403 or 502: a *ProxyError with that
// status; one that is not there: a *ProxyError wrapping the dial's error.
func TestProxyRefuses(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newServer(), false)
	for _, code := range []int{http.StatusForbidden, http.StatusBadGateway} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			testnet.Serve(t, ln, func(c net.Conn) {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil || req.Method != http.MethodConnect {
					t.Errorf("proxy got %v, %v", req, err)
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n", code, http.StatusText(code))
			})
			d := ts.dialer()
			d.Proxy = fixedProxy("http://" + ln.Addr().String())
			_, err = d.DialSprite(testCtx(t), "box", "tcp", "localhost:1")
			pe, ok := errors.AsType[*ProxyError](err)
			if !ok || pe.StatusCode != code || pe.Proxy != "http://"+ln.Addr().String() {
				t.Fatalf("err %v, want a *ProxyError with %d naming the proxy", err, code)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		d := ts.dialer()
		d.Proxy = fixedProxy(fmt.Sprintf("http://127.0.0.1:%d", closedPort(t)))
		_, err := d.DialSprite(testCtx(t), "box", "tcp", "localhost:1")
		pe, ok := errors.AsType[*ProxyError](err)
		if !ok || pe.StatusCode != 0 || pe.Err == nil {
			t.Fatalf("err %v, want a *ProxyError with the dial's error", err)
		}
	})
}

// NoProxy and a nil URL dial directly.
func TestNoProxy(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newServer(), false)
	tg := startTarget(t, echo)
	d := ts.dialer()
	d.Proxy = NoProxy
	c, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
