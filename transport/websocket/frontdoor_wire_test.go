package websocket

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// rawExchange sends req on a new connection to ts and returns all the
// server answers until it closes.
func rawExchange(t *testing.T, ts *testServer, req string) []byte {
	t.Helper()
	host := ts.URL[strings.Index(ts.URL, "://")+3:]
	var c net.Conn
	var err error
	if ts.ClientTLS != nil {
		c, err = tls.Dial("tcp", host, ts.ClientTLS)
	} else {
		c, err = net.Dial("tcp", host)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil && len(got) == 0 {
		t.Fatalf("no answer: %v", err)
	}
	return got
}

var (
	dateLine   = regexp.MustCompile(`(?m)^Date: [^\r]*\r$`)
	statusLine = regexp.MustCompile(`(?m)^HTTP/1\.\d \d{3} `)
)

// TestFrontDoorWire: the bytes a non-Go client sees for each refusal are
// the same on ServeHTTP and Serve, over plain TCP and TLS: exactly one
// response, one Content-Type (application/json), the headers PROTOCOL.md
// lists, and Connection: close.
func TestFrontDoorWire(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	upgrade := "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n"
	auth := "Authorization: Bearer " + testToken + "\r\n"
	get := "GET /v1/sprites/s/proxy HTTP/1.1\r\n"
	cases := []struct {
		name, req string
		status    string // the status line
		headers   []string
	}{
		{"no token", get + upgrade + "\r\n", "HTTP/1.1 401 Unauthorized", nil},
		{"bad token", get + upgrade + "Authorization: Bearer nope\r\n\r\n", "HTTP/1.1 401 Unauthorized", nil},
		{"two Authorization headers", get + upgrade + auth + auth + "\r\n", "HTTP/1.1 400 Bad Request", nil},
		{"unknown endpoint", "GET /v1/sprites/s/control HTTP/1.1\r\n" + upgrade + auth + "\r\n", "HTTP/1.1 404 Not Found", nil},
		{"unknown sprite", "GET /v1/sprites/other/proxy HTTP/1.1\r\n" + upgrade + auth + "\r\n", "HTTP/1.1 404 Not Found", nil},
		{"POST", "POST /v1/sprites/s/proxy HTTP/1.1\r\n" + upgrade + auth + "Content-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed", []string{"Allow: GET"}},
		{"no upgrade", get + "Host: x\r\n" + auth + "\r\n", "HTTP/1.1 400 Bad Request", nil},
		{"wrong version", get + strings.Replace(upgrade, "Version: 13", "Version: 8", 1) + auth + "\r\n", "HTTP/1.1 426 Upgrade Required", []string{"Sec-Websocket-Version: 13"}},
		{"origin", get + upgrade + auth + "Origin: https://evil.example\r\n\r\n", "HTTP/1.1 403 Forbidden", nil},
		{"HTTP/1.0", "GET /v1/sprites/s/proxy HTTP/1.0\r\n" + upgrade + auth + "\r\n", "HTTP/1.0 505 HTTP Version Not Supported", nil},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported", nil},
		{"over the cap", get + upgrade + "Authorization: Bearer capped\r\n\r\n", "HTTP/1.1 429 Too Many Requests", []string{"Retry-After: 1"}},
	}
	for _, useTLS := range []bool{false, true} {
		tr := "plain"
		if useTLS {
			tr = "tls"
		}
		var servers [2]*testServer
		for i, m := range modes {
			srv := &Server{
				AllowedOrigins:     []string{"https://app.example"},
				MaxTunnelsPerToken: 1,
				Sprites:            &HostNetwork{Names: []string{"s"}},
				Auth: AuthFunc(func(_ context.Context, token, _ string) error {
					if token != testToken && token != "capped" {
						return dialer.ErrUnauthorized
					}
					return nil
				}),
			}
			servers[i] = startServerMode(t, srv, useTLS, m.direct)
			// "capped" holds its one tunnel.
			d := servers[i].dialer()
			d.Token, d.DisableReuse = "capped", true
			c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
		for _, tc := range cases {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				var answers [2][]byte
				for i := range modes {
					got := rawExchange(t, servers[i], tc.req)
					answers[i] = dateLine.ReplaceAll(got, []byte("Date: X\r"))
				}
				if !bytes.Equal(answers[0], answers[1]) {
					t.Fatalf("the paths answer differently:\nServeHTTP: %q\nServe:     %q", answers[0], answers[1])
				}
				a := string(answers[0])
				if !strings.HasPrefix(a, tc.status+"\r\n") {
					t.Fatalf("answer %q, want status %q", a, tc.status)
				}
				if n := len(statusLine.FindAllString(a, -1)); n != 1 {
					t.Fatalf("%d responses in %q, want one", n, a)
				}
				if n := strings.Count(strings.ToLower(a), "content-type:"); n != 1 || !strings.Contains(a, "\r\nContent-Type: application/json\r\n") {
					t.Fatalf("answer %q: want exactly one Content-Type: application/json", a)
				}
				for _, h := range append(tc.headers, "Connection: close") {
					if !strings.Contains(a, "\r\n"+h+"\r\n") {
						t.Fatalf("answer %q lacks %q", a, h)
					}
				}
				if !strings.Contains(a, "\r\n\r\n{\"error\":") {
					t.Fatalf("answer %q has no JSON body", a)
				}
			})
		}
	}
}

// TestServeMalformedOnce: a header line Serve cannot parse (no colon, or
// an obs-fold continuation) gets exactly one answer, a 400 in JSON, where
// gobwas/ws's and ours used to both go out. (Behind ServeHTTP, net/http
// parses the request: it answers a line without a colon with its own 400,
// and joins an obs-fold line to the header before, as RFC 9112 §5.2 lets
// it.)
func TestServeMalformedOnce(t *testing.T) {
	t.Parallel()
	ts := startServerMode(t, newServer(), false, true)
	for name, req := range map[string]string{
		"no colon": "GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nBadLine\r\n\r\n",
		"obs-fold": "GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := string(rawExchange(t, ts, req))
			if n := len(statusLine.FindAllString(a, -1)); n != 1 || !strings.HasPrefix(a, "HTTP/1.1 400 Bad Request\r\n") {
				t.Fatalf("answer %q: want exactly one 400", a)
			}
			if n := strings.Count(strings.ToLower(a), "content-type:"); n != 1 || !strings.Contains(a, "\r\nContent-Type: application/json\r\n") {
				t.Fatalf("answer %q: want exactly one Content-Type: application/json", a)
			}
		})
	}
}
