package proxy_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/proxy"
)

// logBuffer is a slog destination that tests read while the client runs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func debugLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// optimisticLine is what the transport logs for a tunnel returned before
// the server's reply.
const optimisticLine = "tunnel requested optimistically"

// TestOptimisticPortRefused: once the client knows the server takes the
// optimistic extension, a ProxyPort's tunnel to a closed port is returned
// before the refusal, which then resets the local connection as a failed
// dial does, and is counted as failed.
func TestOptimisticPortRefused(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	srv, c := server(t, proxy.WithLogger(debugLogger(&logs)))
	srv.Serve(6100, echo)
	live := proxyPort(t, c, 6100)
	roundTrip(t, dial(t, "tcp4", live), "warm") // the server's features are known from here on

	dead := proxyPort(t, c, 6101)
	before := logs.count(optimisticLine)
	assertReset(t, dead)
	if st := dead.Stats(); st.Failed != 1 || st.Accepted != 1 {
		t.Fatalf("Stats = %+v, want 1 accepted, 1 failed", st)
	}
	if logs.count(optimisticLine) == before {
		t.Fatal("the refused tunnel was not optimistic")
	}
	if n := logs.count("stream dial failed"); n != 1 {
		t.Errorf("%d \"stream dial failed\" lines, want 1", n)
	}
	// The session lives on, and so does the connection's reuse.
	assertReset(t, dead)
	if st := dead.Stats(); st.Failed != 2 {
		t.Fatalf("Stats = %+v, want 2 failed", st)
	}
	roundTrip(t, dial(t, "tcp4", live), "after")
	if st := live.Stats(); st.Failed != 0 {
		t.Fatalf("live Stats = %+v, want none failed", st)
	}
}

// TestOptimisticPortData: through an optimistic tunnel on a reused
// connection, more than the bytes sent before the reply (64 KiB) arrive
// intact, both ways.
func TestOptimisticPortData(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	srv, c := server(t, proxy.WithLogger(debugLogger(&logs)))
	srv.Serve(6200, echo)
	ps := proxyPort(t, c, 6200)
	roundTrip(t, dial(t, "tcp4", ps), "warm")

	before := logs.count(optimisticLine)
	conn := dial(t, "tcp4", ps)
	msg := make([]byte, 300<<10)
	for i := range msg {
		msg[i] = byte(i*7 + i>>9)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(msg)
		if err == nil {
			err = conn.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: %d bytes back, want the %d sent", len(got), len(msg))
	}
	if logs.count(optimisticLine) == before {
		t.Fatal("the tunnel was not optimistic")
	}
}

// TestWithoutOptimistic: with the option, ProxyPort's tunnels wait for
// the server's reply.
func TestWithoutOptimistic(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	srv, c := server(t, proxy.WithLogger(debugLogger(&logs)), proxy.WithoutOptimistic())
	srv.Serve(6300, echo)
	ps := proxyPort(t, c, 6300)
	for range 3 {
		roundTrip(t, dial(t, "tcp4", ps), "plain")
	}
	if n := logs.count(optimisticLine); n != 0 {
		t.Fatalf("%d optimistic tunnels with WithoutOptimistic", n)
	}
}

// TestSocketNotOptimistic: ProxySocket's dial returns the typed refusal
// itself, also once the client knows the server takes the optimistic
// extension (a ProxyPort of the same client has used it).
func TestSocketNotOptimistic(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	srv, c := server(t, proxy.WithLogger(debugLogger(&logs)))
	srv.Serve(6400, echo)
	ps := proxyPort(t, c, 6400)
	roundTrip(t, dial(t, "tcp4", ps), "warm")
	roundTrip(t, dial(t, "tcp4", ps), "optimistic")
	sp := c.Sprite(testSprite)
	conn, err := sp.ProxySocket(t.Context(), "tcp", "localhost:6400")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, conn, "socket")
	conn.Close() // its connection is left idle: the next dial reuses it
	before := logs.count(optimisticLine)
	_, err = sp.ProxySocket(t.Context(), "tcp", "localhost:6401")
	if !errors.Is(err, dialer.ErrTargetRefused) {
		t.Fatalf("ProxySocket to a closed port: %v, want dialer.ErrTargetRefused", err)
	}
	if _, ok := errors.AsType[*dialer.TargetError](err); !ok {
		t.Fatalf("ProxySocket's error %v is no *dialer.TargetError", err)
	}
	if n := logs.count(optimisticLine); n != before {
		t.Fatal("a ProxySocket tunnel was optimistic")
	}
}
