package reference

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startEcho serves an echo on loopback until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) { io.Copy(c, c) })
	return ln.Addr().String()
}

// startServer serves a reference Server on loopback until the test ends.
func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Token: "tok"}
	hs := &http.Server{Handler: srv}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		<-done
	})
	return srv, "http://" + ln.Addr().String()
}

// roundTrip writes size random bytes in chunks of chunk through c and
// checks that the same bytes come back.
func roundTrip(t *testing.T, c net.Conn, size, chunk int) {
	t.Helper()
	want := make([]byte, size)
	rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		for p := want; len(p) > 0; {
			n := min(chunk, len(p))
			if _, err := c.Write(p[:n]); err != nil {
				errc <- err
				return
			}
			p = p[n:]
		}
		errc <- nil
	}()
	got := make([]byte, size)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes came back changed")
	}
}

func TestTunnel(t *testing.T) {
	echo := startEcho(t)
	srv, url := startServer(t)
	d := &Dialer{BaseURL: url, Token: "tok"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, "s", echo)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != echo {
		t.Errorf("RemoteAddr %q, want %q", got, echo)
	}
	if srv.Live() != 1 {
		t.Errorf("Live %d, want 1", srv.Live())
	}
	roundTrip(t, c, 3<<20+17, 100<<10)
	roundTrip(t, c, 1, 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRefusals(t *testing.T) {
	_, url := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := (&Dialer{BaseURL: url, Token: "bad"}).Dial(ctx, "s", "127.0.0.1:1"); err == nil {
		t.Error("a bad token was accepted")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if _, err := (&Dialer{BaseURL: url, Token: "tok"}).Dial(ctx, "s", closed); err == nil {
		t.Error("a dial of a closed port succeeded")
	}
}

func TestForwarder(t *testing.T) {
	echo := startEcho(t)
	_, url := startServer(t)
	d := &Dialer{BaseURL: url, Token: "tok"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := Forward(ln, func(ctx context.Context) (net.Conn, error) { return d.Dial(ctx, "s", echo) })
	defer f.Close()
	for range 3 {
		c, err := net.Dial("tcp", f.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, 1<<20, 32<<10)
		c.Close()
	}
}
