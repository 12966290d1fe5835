package websocket

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// replicaAnswer sends req on a connection of its own to ts and returns
// the response's status and Sprite-Replica header (the 101 of an upgrade
// included: only its head is read).
func replicaAnswer(t *testing.T, ts *testServer, req string) (int, []string) {
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
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Values("Sprite-Replica")
}

// TestReplicaHeader: with ReplicaID set, the 101 and the health answers
// (200, and 503 once draining, HTTP/1.1 and 1.0) carry Sprite-Replica on
// both serving paths, over TLS or not; without it, none does.
func TestReplicaHeader(t *testing.T) {
	t.Parallel()
	upgrade := "GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + testToken + "\r\n\r\n"
	for _, m := range modes {
		for _, useTLS := range []bool{false, true} {
			for _, id := range []string{"r2", ""} {
				name := m.name + "/" + id
				if useTLS {
					name += "/tls"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					srv := newServer()
					srv.ReplicaID = id
					ts := startServerMode(t, srv, useTLS, m.direct)
					var want []string
					if id != "" {
						want = []string{id}
					}
					check := func(what string, wantStatus int, req string) {
						t.Helper()
						status, got := replicaAnswer(t, ts, req)
						if status != wantStatus || strings.Join(got, ",") != strings.Join(want, ",") {
							t.Errorf("%s: %d with Sprite-Replica %q, want %d with %q", what, status, got, wantStatus, want)
						}
					}
					check("upgrade", http.StatusSwitchingProtocols, upgrade)
					for _, v := range []string{"HTTP/1.1", "HTTP/1.0"} {
						check(v+" /healthz", 200, "GET /healthz?replica=r2 "+v+"\r\nHost: x\r\n\r\n")
						check(v+" /readyz", 200, "GET /readyz "+v+"\r\nHost: x\r\n\r\n")
					}
					ts.Drain()
					check("/healthz draining", 503, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				})
			}
		}
	}
}

// TestReplicaIDBad: a ReplicaID that cannot be a header value or query
// parameter as it is makes Serve fail with ErrBadReplicaID, and ServeHTTP
// answer 500 to upgrades and health checks alike, without the header.
func TestReplicaIDBad(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"r 1", "r1\r\nX-Evil: 1", "r/1", strings.Repeat("r", 65)} {
		srv := newServer()
		srv.ReplicaID = id
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(ln); !errors.Is(err, ErrBadReplicaID) {
			t.Errorf("Serve with ReplicaID %q: %v, want ErrBadReplicaID", id, err)
		}
		ln.Close()
	}
	srv := newServer()
	srv.ReplicaID = "r1\r\nX-Evil: 1"
	ts := startServerMode(t, srv, false, false)
	for _, req := range []string{"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + testToken + "\r\n\r\n"} {
		if status, got := replicaAnswer(t, ts, req); status != 500 || got != nil {
			t.Errorf("ServeHTTP with a bad ReplicaID: %d with Sprite-Replica %q, want 500 without", status, got)
		}
	}
}
