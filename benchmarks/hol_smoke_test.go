package benchmarks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/mux"
)

// TestHOLPaths runs every path of the multiplexing rows over a 10 ms link
// with 1 % loss: an echo stream and a bulk stream at once, the bulk whole
// at the sink, the echo intact; then a mux stream to a port where nothing
// listens is refused with ErrReset, and its sibling still echoes.
func TestHOLPaths(t *testing.T) {
	t.Parallel()
	for _, p := range []holPath{holTCP, holSocketWS, holSocketWSS, holMuxTCP, holMuxWS, holMuxWSS} {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			w := newHolRig(t, 10*time.Millisecond, 0.01, holMuxWindow)
			defer w.Close()
			open := p.build(t, w)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ec, err := open(ctx, w.echo.Port())
			if err != nil {
				t.Fatal(err)
			}
			defer ec.Close()
			bc, err := open(ctx, w.sink.Port())
			if err != nil {
				t.Fatal(err)
			}
			defer bc.Close()
			const size = 1 << 20 // four mux windows
			wrote := make(chan error, 1)
			go func() {
				_, err := bc.Write(make([]byte, size))
				if err == nil {
					err = bc.CloseWrite()
				}
				wrote <- err
			}()
			msg := bytes.Repeat([]byte{7}, holEchoSize)
			for range 5 {
				if _, err := ec.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, holEchoSize)
				if _, err := io.ReadFull(ec, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("echo %v, want %v", got, msg)
				}
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-w.sunk:
				if r.err != nil || r.n != size {
					t.Fatalf("the sink read %d bytes (%v), want %d", r.n, r.err, size)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the bulk stream did not end within 30 s")
			}
			if !strings.HasPrefix(p.name, "mux-") {
				return
			}
			ln, err := w.sprite.Listen("tcp", ":0")
			if err != nil {
				t.Fatal(err)
			}
			closed := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			rc, err := open(ctx, closed)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, mux.ErrReset) {
				t.Fatalf("a stream to a closed port read %v, want mux.ErrReset", err)
			}
			if err := echoByte(ec, 9); err != nil {
				t.Fatalf("the sibling after a refusal: %v", err)
			}
		})
	}
}
