package pump

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testcert"
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

		mode := rng.IntN(3)
		switch mode {
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
			t.Errorf("round %d (mode %d, cut after %d bytes): the application read a clean end of stream after %d bytes; Run = %v", i, mode, cut, n, <-done)
			continue
		}
		if err := <-done; err == nil {
			t.Errorf("round %d (mode %d): Run = nil, want the reset", i, mode)
		}
	}
}

// lingerNoSplice is noSplice that can still be reset.
type lingerNoSplice struct{ noSplice }

func (l lingerNoSplice) SetLinger(sec int) error {
	return l.noSplice.Conn.(*net.TCPConn).SetLinger(sec)
}

func (l lingerNoSplice) SyscallConn() (syscall.RawConn, error) {
	return l.noSplice.Conn.(*net.TCPConn).SyscallConn()
}

// TestCutResetsUnderTLS: a local conn that is TLS over TCP (a session's
// listener may be a tls.Listener) is reset under its TLS when the pair is
// cut. Closing it as it is sent close_notify, which its peer reads as a
// clean end of stream, a cut stream reading as a complete one; this test
// failed so before cut unwrapped it.
func TestCutResetsUnderTLS(t *testing.T) {
	t.Parallel()
	pair, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	appRaw, localRaw := testnet.TCPPair(t)
	cfg := pair.ClientConfig()
	cfg.ServerName = "localhost"
	app := tls.Client(appRaw, cfg)
	local := tls.Server(localRaw, pair.ServerConfig())
	remote, far := testnet.TCPPair(t)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), local, remote, nil) }()
	app.SetDeadline(time.Now().Add(10 * time.Second))
	if err := app.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, err := far.Write([]byte("part")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(app, buf); err != nil {
		t.Fatal(err)
	}
	far.(*net.TCPConn).SetLinger(0)
	far.Close()
	if _, err := io.Copy(io.Discard, app); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the application read %v after the cut, want the reset", err)
	}
	if err := <-done; err == nil {
		t.Error("Run = nil, want the reset")
	}
	app.Close()
}

// TestResetTakenByWriteNeverCleanEOF: Linux reports a peer's reset to one
// call only; when a write to the socket takes it, the next read returns 0
// as for a FIN. The pump must still pass the cut on as a reset: before it
// asked the socket's state, the local application read a clean end of
// stream (TestResetMidStreamNeverCleanEOF caught it about once in 80 runs,
// with bytes lost).
func TestResetTakenByWriteNeverCleanEOF(t *testing.T) {
	t.Parallel()
	for _, splice := range []bool{true, false} {
		app, local := testnet.TCPPair(t)
		remote, far := testnet.TCPPair(t)
		far.(*net.TCPConn).SetLinger(0)
		far.Close()
		// Write until the reset arrives and the write takes it.
		remote.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := remote.Write([]byte{0}); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("no reset reached the socket")
				}
				break
			}
		}
		remote.SetWriteDeadline(time.Time{})
		var a, b net.Conn = local, remote
		if !splice {
			a, b = lingerNoSplice{noSplice{local}}, lingerNoSplice{noSplice{remote}}
		}
		done := make(chan error, 1)
		go func() { done <- Run(context.Background(), a, b, nil) }()
		app.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, app)
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("splice %v: the application read %v, want the reset", splice, err)
			app.Close() // (ends the other direction, which waits on the application)
		}
		if err := <-done; !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("splice %v: Run = %v, want ECONNRESET", splice, err)
		}
	}
}
