package websocket

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	gorilla "github.com/gorilla/websocket"
	"github.com/spriteproxy/spriteproxy/internal/testcert"
)

// gorillaPlainServer is a plain v1 proxy server built on gorilla/websocket,
// as the hosted API and other third-party servers are: no extension, the
// target's bytes copied as binary messages, and the client's close frame
// answered at once (gorilla's default close handler), after which the
// tunnel and its target are closed whatever the target was still sending.
func gorillaPlainServer(t *testing.T, useTLS bool) (url string, clientTLS *tls.Config) {
	t.Helper()
	up := gorilla.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var wg sync.WaitGroup
	h := func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		var req struct {
			Host string `json:"host"`
			Port int    `json:"port"`
		}
		if err := conn.ReadJSON(&req); err != nil {
			return
		}
		target, err := net.Dial("tcp", net.JoinHostPort(req.Host, strconv.Itoa(req.Port)))
		if err != nil {
			return
		}
		defer target.Close()
		rep, _ := json.Marshal(map[string]string{"status": "connected", "target": target.RemoteAddr().String()})
		if conn.WriteMessage(gorilla.TextMessage, rep) != nil {
			return
		}
		wg.Add(1)
		go func() { // target → WebSocket
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := target.Read(buf)
				if n > 0 && conn.WriteMessage(gorilla.BinaryMessage, buf[:n]) != nil {
					return
				}
				if err != nil {
					conn.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, ""), time.Now().Add(time.Second))
					return
				}
			}
		}()
		for { // WebSocket → target, until the client's close frame
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				break
			}
			if typ == gorilla.BinaryMessage {
				if _, err := target.Write(msg); err != nil {
					break
				}
			}
		}
		target.Close()
		conn.Close()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url = "http://" + ln.Addr().String()
	if useTLS {
		pair, err := testcert.New()
		if err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, pair.ServerConfig())
		url = "https://" + ln.Addr().String()
		clientTLS = pair.ClientConfig()
	}
	hs := &http.Server{Handler: http.HandlerFunc(h)}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close(); <-done; wg.Wait() })
	return url, clientTLS
}

// TestCloseWriteAgainstPlainServerKeepsReply (issue 12, defect 6): against
// a plain v1 server, CloseWrite must not cut the reply still in flight.
// The whole 1 MiB written before CloseWrite comes back through the
// target's echo, then the stream ends cleanly.
func TestCloseWriteAgainstPlainServerKeepsReply(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcp", true: "tls"}[useTLS], func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			url, clientTLS := gorillaPlainServer(t, useTLS)
			d := &Dialer{BaseURL: url, Token: testToken, TLSConfig: clientTLS}
			c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			wc := c.(*Conn)
			if wc.HalfClose() {
				t.Fatal("half_close negotiated with a plain server")
			}
			msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
			werr := make(chan error, 1)
			go func() {
				if _, err := wc.Write(msg); err != nil {
					werr <- err
					return
				}
				werr <- wc.CloseWrite()
			}()
			got, err := io.ReadAll(wc)
			if err != nil {
				t.Fatalf("read %d bytes, then %v; want the whole echo and a clean EOF", len(got), err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("write or CloseWrite: %v", err)
			}
			if len(got) != len(msg) || !bytes.Equal(got, msg) {
				t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
			}
		})
	}
}

// TestLingerEndsDespitePings: a plain server that pings while it has
// nothing more to send is silent all the same; the client's linger ends,
// its close frame goes out, and the stream ends cleanly once the server
// answers it: under Read, and under CopyTo (whose read that brings only
// control frames gives its pooled buffer back and waits on, from when the
// wait began).
func TestLingerEndsDespitePings(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"Read", "CopyTo"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			lingerDespitePings(t, via == "CopyTo")
		})
	}
}

func lingerDespitePings(t *testing.T, copyTo bool) {
	url := rawUpgraded(t, `{"status":"connected","target":"127.0.0.1:9"}`, func(conn net.Conn) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var wmu sync.Mutex
		wg.Add(1)
		go func() { // a ping every 20 ms, far under the linger
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				wmu.Lock()
				err := wsutil.WriteServerMessage(conn, ws.OpPing, nil)
				wmu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		defer wg.Wait()
		defer close(stop)
		for {
			_, op, err := wsutil.ReadClientData(conn)
			if err != nil {
				return
			}
			if op == ws.OpClose {
				return
			}
		}
	})
	d := &Dialer{BaseURL: url, Token: testToken, HalfCloseLinger: 200 * time.Millisecond}
	c, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.(*Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	end := make(chan error, 1)
	go func() {
		var err error
		if copyTo {
			_, err = c.(*Conn).CopyTo(io.Discard, nil)
		} else {
			_, err = io.ReadAll(c)
		}
		end <- err
	}()
	select {
	case err := <-end:
		if err != nil {
			t.Fatalf("after the linger: %v, want a clean EOF", err)
		}
	case <-testCtx(t).Done():
		t.Fatal("the linger never ended while the server pinged")
	}
}
