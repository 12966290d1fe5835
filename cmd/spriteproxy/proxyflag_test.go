package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// forward and connect with --proxy: a proxy's 407 is one line that names
// the proxy (without its password) and says what to do, exit 1; bad proxy
// flags are usage errors.
func TestProxyFlags(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		fmt.Fprint(c, "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
	})
	proxyURL := "http://alice:pw-secret@" + ln.Addr().String()
	env := func(k string) string {
		if k == envToken {
			return testToken
		}
		return ""
	}
	for _, args := range [][]string{
		{"forward", "--api", "https://sprites.test:8443", "--proxy", proxyURL, "box", "0:22"},
		{"connect", "--api", "https://sprites.test:8443", "--proxy", proxyURL, "box", "localhost:22"},
	} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCLI(t, env, args...)
			if code != exitFail || stdout != "" || strings.Count(stderr, "\n") != 1 ||
				!strings.Contains(stderr, "proxy http://alice:xxxxx@"+ln.Addr().String()) || !strings.Contains(stderr, "407") {
				t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			if strings.Contains(stderr, "pw-secret") {
				t.Errorf("the proxy's password leaked: %q", stderr)
			}
			noToken(t, stdout, stderr)
		})
	}
	for _, bad := range [][]string{
		{"connect", "--proxy", "http://p:1", "--no-proxy", "box", "localhost:22"},
		{"connect", "--proxy", "socks5://p:1", "box", "localhost:22"},
		{"forward", "--proxy", "p:1", "box", "0:22"},
	} {
		code, _, stderr := runCLI(t, env, bad...)
		if code != exitUsage || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one line", bad, code, stderr)
		}
	}
}
