package pump

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// TestResetMidStreamNeverCleanEOF: the remote side of a pump is reset at
// a random point of a stream towards the local side, whatever the local
// application did with its own side before (nothing, a request and its
// end, its end alone): the local application reads an error, never a
// clean end of stream, on both copy paths (splice and the buffered loop).
func TestResetMidStreamNeverCleanEOF(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	const rounds = 40
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	for i := range rounds {
		app, local := testnet.TCPPair(t)
		remote, far := testnet.TCPPair(t)
		var a, b net.Conn = local, remote
		if i%2 == 1 {
			a, b = lingerNoSplice{noSplice{local}}, lingerNoSplice{noSplice{remote}}
		}
		done := make(chan error, 1)
		go func() { done <- Run(context.Background(), a, b, nil) }()

		switch rng.IntN(3) {
		case 0:
		case 1:
			app.Write([]byte("GET"))
			app.(*net.TCPConn).CloseWrite()
		case 2:
			app.(*net.TCPConn).CloseWrite()
		}
		// The far end sends part of the stream, then is reset.
		cut := 1 + rng.IntN(size-1)
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			far.Write(make([]byte, cut))
			far.(*net.TCPConn).SetLinger(0)
			far.Close()
		}()
		app.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, app)
		<-wrote
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round %d: the read hung after %d bytes", i, n)
		}
		if err == nil {
			t.Errorf("round %d (cut after %d bytes): the application read a clean end of stream after %d bytes", i, cut, n)
		}
		if err := <-done; err == nil {
			t.Errorf("round %d: Run = nil, want the reset", i)
		}
	}
}

// lingerNoSplice is noSplice that can still be reset.
type lingerNoSplice struct{ noSplice }

func (l lingerNoSplice) SetLinger(sec int) error {
	return l.noSplice.Conn.(*net.TCPConn).SetLinger(sec)
}
