package websocket

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testlog"
)

// rawExchange sends req on a new connection to ts and returns all the
// server answers until it closes.
func rawExchange(t *testing.T, ts *testServer, req string) []byte {
	t.Helper()
	got, _ := rawExchangeFrom(t, ts, req)
	return got
}

// rawExchangeFrom is rawExchange; it also returns the connection's local
// address, by which the server's log names the client.
func rawExchangeFrom(t *testing.T, ts *testServer, req string) ([]byte, string) {
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
	return got, c.LocalAddr().String()
}

// refusedRecord returns the attributes of rec's "request refused" record
// for the client at local, or nil.
func refusedRecord(rec *testlog.Recorder, local string) map[string]string {
	for _, r := range rec.Records() {
		if r.Message != "request refused" {
			continue
		}
		attrs := make(map[string]string)
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		if attrs["client"] == local {
			return attrs
		}
	}
	return nil
}

// noToken fails t if any record of rec holds one of tokens.
func noToken(t *testing.T, rec *testlog.Recorder, tokens ...string) {
	t.Helper()
	for _, r := range rec.Records() {
		text := r.Message
		r.Attrs(func(a slog.Attr) bool {
			text += " " + a.Key + "=" + a.Value.String()
			return true
		})
		for _, tok := range tokens {
			if strings.Contains(text, tok) {
				t.Errorf("a log record holds the token %q: %s", tok, text)
			}
		}
	}
}

var (
	dateLine   = regexp.MustCompile(`(?m)^Date: [^\r]*\r$`)
	statusLine = regexp.MustCompile(`(?m)^HTTP/1\.\d \d{3} `)
)

// TestFrontDoorWire: the bytes a non-Go client sees for each refusal are
// the same on ServeHTTP and Serve, over plain TCP and TLS: exactly one
// response, one Content-Type (application/json), the headers PROTOCOL.md
// lists, and Connection: close. Each refusal is logged with its status
// and path, and no log record holds a token.
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
		{"token not allowed for the sprite", "GET /v1/sprites/locked/proxy HTTP/1.1\r\n" + upgrade + auth + "\r\n", "HTTP/1.1 403 Forbidden", nil},
		{"sprite lookup failed", "GET /v1/sprites/broken/proxy HTTP/1.1\r\n" + upgrade + auth + "\r\n", "HTTP/1.1 502 Bad Gateway", nil},
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
		var recs [2]*testlog.Recorder
		for i, m := range modes {
			recs[i] = &testlog.Recorder{}
			srv := &Server{
				AllowedOrigins:     []string{"https://app.example"},
				MaxTunnelsPerToken: 1,
				Sprites: ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
					switch name {
					case "s", "locked":
						return hostDialer, nil
					case "broken":
						return nil, errors.New("sprite registry down")
					}
					return nil, dialer.ErrUnknownSprite
				}),
				Auth: AuthFunc(func(_ context.Context, token, sprite string) error {
					if token != testToken && token != "capped" {
						return dialer.ErrUnauthorized
					}
					if sprite == "locked" {
						return dialer.ErrForbidden
					}
					return nil
				}),
				Logger: slog.New(recs[i]),
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
			rec := recs[i]
			t.Cleanup(func() { noToken(t, rec, testToken, "capped", "nope") })
		}
		for _, tc := range cases {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				var answers [2][]byte
				path := strings.Fields(tc.req)[1]
				for i, m := range modes {
					got, local := rawExchangeFrom(t, servers[i], tc.req)
					answers[i] = dateLine.ReplaceAll(got, []byte("Date: X\r"))
					status := strings.Fields(tc.status)[1]
					if a := refusedRecord(recs[i], local); a == nil || a["status"] != status || a["path"] != path || a["reason"] == "" {
						t.Errorf("%s logged %v for the refusal, want status %s, path %s and a reason", m.name, a, status, path)
					}
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

// TestMalformedOnce: a header line the server cannot parse (no colon, or
// an obs-fold continuation) gets exactly one answer, a 400, on both paths
// and over plain and TLS, where gobwas/ws's and ours used to both go out
// on Serve. On Serve it is the JSON answer; behind ServeHTTP, net/http
// parses the request and answers a line without a colon with its own
// plain-text 400, and joins an obs-fold line to the header before it, as
// RFC 9112 §5.2 lets it (the request then lacks the upgrade: our 400).
func TestMalformedOnce(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		for _, m := range modes {
			name := m.name
			if useTLS {
				name += "/tls"
			}
			ts := startServerMode(t, newServer(), useTLS, m.direct)
			for req, r := range map[string]string{
				"no colon": "GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nBadLine\r\n\r\n",
				"obs-fold": "GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
			} {
				t.Run(name+"/"+req, func(t *testing.T) {
					t.Parallel()
					a := string(rawExchange(t, ts, r))
					if n := len(statusLine.FindAllString(a, -1)); n != 1 || !strings.HasPrefix(a, "HTTP/1.1 400 Bad Request\r\n") {
						t.Fatalf("answer %q: want exactly one 400", a)
					}
					if !m.direct {
						return
					}
					if n := strings.Count(strings.ToLower(a), "content-type:"); n != 1 || !strings.Contains(a, "\r\nContent-Type: application/json\r\n") {
						t.Fatalf("answer %q: want exactly one Content-Type: application/json", a)
					}
				})
			}
		}
	}
}

// TestServerCapWire: over the server's tunnel cap, both paths answer the
// same 503 with Retry-After, over plain and TLS.
func TestServerCapWire(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	for _, useTLS := range []bool{false, true} {
		name := "plain"
		if useTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var answers [2]string
			for i, m := range modes {
				srv := newServer()
				srv.MaxTunnels = 1
				ts := startServerMode(t, srv, useTLS, m.direct)
				c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, a := rawUpgrade(t, ts, testToken)
				wantRefusal(t, a, "HTTP/1.1 503 Service Unavailable", "server is at its limit of 1 tunnels")
				answers[i] = dateLine.ReplaceAllString(a, "Date: X\r")
			}
			if answers[0] != answers[1] {
				t.Fatalf("the paths answer differently:\nServeHTTP: %q\nServe:     %q", answers[0], answers[1])
			}
		})
	}
}
