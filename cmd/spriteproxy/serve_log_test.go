package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// serve -v logs every request it refuses, /control's 404 included, with
// its status, the path and the reason, and never a token: neither the
// server's nor one a client sent. Each refusal kind is sent as raw bytes
// and its line found by the client's address.
func TestServeLogsRefusals(t *testing.T) {
	t.Parallel()
	const token = "s3cret-server-token"
	const wrong = "wr0ng-client-token"
	echo := echoService(t)
	srv, addr := startServe(t, env(envToken, token), "-v", "--sprite", "s", "--max-tunnels-per-token", "1")
	t.Cleanup(func() { srv.stop(t) })

	// One tunnel holds the token's only slot, for the 429.
	d := &websocket.Dialer{BaseURL: "http://" + addr, Token: token, DisableReuse: true}
	held, err := d.DialSprite(testContext(t), "s", "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(echo)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })

	const upgrade = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	auth := "Authorization: Bearer " + token + "\r\n"
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\n" }
	const proxy = "/v1/sprites/s/proxy"
	cases := []struct {
		name, req string
		status    int
		path      string
		reason    string // in the logged reason
	}{
		{"HTTP/1.0", "GET " + proxy + " HTTP/1.0\r\n" + upgrade + auth + "\r\n", 505, proxy, "HTTP/1.1"},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "*", "HTTP/2"},
		{"POST", "POST " + proxy + " HTTP/1.1\r\n" + upgrade + auth + "\r\n", 405, proxy, "GET"},
		{"/control", get("/v1/sprites/s/control") + upgrade + auth + "\r\n", 404, "/v1/sprites/s/control", "no such endpoint"},
		{"unknown path", get("/elsewhere?token="+wrong) + upgrade + auth + "\r\n", 404, "/elsewhere", "no such endpoint"},
		{"not an upgrade", get(proxy) + "Host: x\r\n" + auth + "\r\n", 400, proxy, `bad \"Upgrade\" header`},
		{"wrong version", get(proxy) + strings.Replace(upgrade, "Version: 13", "Version: 8", 1) + auth + "\r\n", 426, proxy, `bad \"Sec-WebSocket-Version\" header`},
		{"two Authorization", get(proxy) + upgrade + auth + "Authorization: Bearer " + wrong + "\r\n\r\n", 400, proxy, "more than one Authorization"},
		{"Origin", get(proxy) + upgrade + auth + "Origin: https://evil.example\r\n\r\n", 403, proxy, "origin not allowed"},
		{"no token", get(proxy) + upgrade + "\r\n", 401, proxy, "bad or missing token"},
		{"bad token", get(proxy) + upgrade + "Authorization: Bearer " + wrong + "\r\n\r\n", 401, proxy, "bad or missing token"},
		{"unknown sprite", get("/v1/sprites/other/proxy") + upgrade + auth + "\r\n", 404, "/v1/sprites/other/proxy", "unknown sprite"},
		{"over the token's cap", get(proxy) + upgrade + auth + "\r\n", 429, proxy, "limit of 1 tunnels"},
		{"no colon", get(proxy) + "Host: x\r\nAuthorization Bearer " + wrong + "\r\n\r\n", 400, proxy, "malformed"},
		{"obs-fold", get(proxy) + upgrade + "X-A: b\r\n " + wrong + "\r\n\r\n", 400, proxy, "malformed"},
		{"too large", get(proxy) + "X-A: " + strings.Repeat("a", 17<<10) + "\r\n\r\n", 431, proxy, "16 KiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			local := exchange(t, addr, nil, tc.req)
			line := srv.stderr.waitFor(t, refusedLine(local), 10*time.Second)
			if line[1] != strconv.Itoa(tc.status) || line[2] != tc.path || !strings.Contains(line[3], tc.reason) {
				t.Errorf("logged %q, want status %d, path %q and a reason with %q", line[0], tc.status, tc.path, tc.reason)
			}
		})
	}
	t.Run("TLS to a plain server", func(t *testing.T) {
		t.Parallel()
		local := exchange(t, addr, &tls.Config{InsecureSkipVerify: true}, "")
		line := srv.stderr.waitFor(t, refusedLine(local), 10*time.Second)
		if line[1] != "400" || !strings.Contains(line[3], "TLS") {
			t.Errorf("logged %q, want a 400 that names TLS", line[0])
		}
	})
	// Plain HTTP to a TLS server: the 400 that says so is logged too.
	t.Run("HTTP to a TLS server", func(t *testing.T) {
		t.Parallel()
		certFile, keyFile := tlsFiles(t, t.TempDir())
		srv3, addr3 := startServe(t, env(envToken, token), "-v", "--tls-cert", certFile, "--tls-key", keyFile)
		defer srv3.stop(t)
		local := exchange(t, addr3, nil, get(proxy)+upgrade+auth+"\r\n")
		line := srv3.stderr.waitFor(t, refusedLine(local), 10*time.Second)
		if line[1] != "400" || !strings.Contains(line[3], "HTTPS") {
			t.Errorf("logged %q, want a 400 that names HTTPS", line[0])
		}
		if strings.Contains(srv3.stderr.String(), token) {
			t.Errorf("the log holds the token:\n%s", srv3.stderr.String())
		}
	})
	// Refusals after the upgrade: a bad first message, a target the
	// policy forbids (on a server of their own, where the token has a
	// slot).
	srv2, addr2 := startServe(t, env(envToken, token), "-v")
	t.Cleanup(func() { srv2.stop(t) })
	for name, tc := range map[string]struct{ msg, why string }{
		"bad first message": {`{"host":"127.0.0.1"}`, "port"},
		"forbidden target":  {`{"host":"10.0.0.1","port":22}`, "not allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", addr2)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, get(proxy)+upgrade+"Authorization: Bearer "+token+"\r\n\r\n")
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 101 ") {
				t.Fatalf("answer %q (%v), want 101", line, err)
			}
			for line, err := br.ReadString('\n'); line != "\r\n"; line, err = br.ReadString('\n') {
				if err != nil {
					t.Fatal(err)
				}
			}
			wsutil.WriteClientText(c, []byte(tc.msg))
			if _, err := wsutil.ReadServerText(struct {
				io.Reader
				io.Writer
			}{br, c}); err != nil {
				t.Fatal(err)
			}
			re := regexp.MustCompile(`msg="tunnel refused" sprite=s client=` + regexp.QuoteMeta(c.LocalAddr().String()) + ` err="?([^\n]*)`)
			if line := srv2.stderr.waitFor(t, re, 10*time.Second); !strings.Contains(line[1], tc.why) {
				t.Errorf("logged %q, want a reason with %q", line[0], tc.why)
			}
		})
	}
	t.Cleanup(func() {
		if log := srv.stderr.String() + srv2.stderr.String(); strings.Contains(log, token) || strings.Contains(log, wrong) {
			t.Errorf("the log holds a token:\n%s", log)
		}
	})
}

// refusedLine matches serve's log line for a refused request from the
// client at local: the status, the path and the reason.
func refusedLine(local string) *regexp.Regexp {
	return regexp.MustCompile(`msg="request refused" status=(\d+) sprite=\S* path="?([^" ]*)"? client=` + regexp.QuoteMeta(local) + ` reason="?([^\n]*)`)
}

// exchange sends req to addr on a new connection (TLS with cfg, if not
// nil), reads the answer to its end, and returns the connection's local
// address.
func exchange(t *testing.T, addr string, cfg *tls.Config, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if cfg != nil {
		tls.Client(c, cfg).Handshake() // the server answers in plain HTTP
		return c.LocalAddr().String()
	}
	io.WriteString(c, req)
	io.Copy(io.Discard, c)
	return c.LocalAddr().String()
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
