package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// fakeListener accepts what its accept function returns, until closed.
type fakeListener struct {
	accept    func() (net.Conn, error)
	closed    chan struct{}
	closeOnce sync.Once
}

func newFakeListener(accept func() (net.Conn, error)) *fakeListener {
	return &fakeListener{accept: accept, closed: make(chan struct{})}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	return l.accept()
}

func (l *fakeListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 7} }

type tempError struct{}

func (tempError) Error() string   { return "too many open files" }
func (tempError) Temporary() bool { return true }
func (tempError) Timeout() bool   { return false }

// TestListenerFails: a temporary accept error is retried; a permanent one
// ends the session, and Err says why.
func TestListenerFails(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var n atomic.Int32
	served := make(chan struct{})
	//lint:ignore S1021 the listener's func refers to fl, so it is declared first
	var fl *fakeListener
	fl = newFakeListener(func() (net.Conn, error) {
		switch n.Add(1) {
		case 1:
			return nil, tempError{}
		case 2:
			client, server := net.Pipe()
			go func() {
				defer close(served)
				defer client.Close()
				io.ReadAll(client) // ends when the failed stream closes its side
			}()
			return server, nil
		default:
			<-served // let the stream finish first
			return nil, boom
		}
	})
	cfg := Config{
		// Every stream fails: only the accept errors matter here.
		Dialer: dialer.Func(func(context.Context, string, string, string) (net.Conn, error) {
			return nil, dialer.ErrTargetRefused
		}),
		RemotePort: 1,
		LocalHost:  "fake",
		Logger:     slog.New(slog.DiscardHandler),
		Listen: func(_ context.Context, network, address string) (net.Listener, error) {
			if network != "tcp" || address != "fake:0" {
				t.Errorf("Listen(%q, %q), want (tcp, fake:0)", network, address)
			}
			return fl, nil
		},
	}
	s, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Wait()
	if !errors.Is(s.Err(), boom) {
		t.Fatalf("Err() = %v, want boom", s.Err())
	}
	if st := s.Stats(); st.Accepted != 1 || st.Failed != 1 {
		t.Fatalf("Stats = %+v, want 1 accepted and failed", st)
	}
	s.Close()
}
