package mux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair is a client and a server session on the two ends of a pipe.
func pair(t *testing.T, window int) (*Session, *Session) {
	t.Helper()
	a, b := net.Pipe()
	c, s := Client(a, window), Server(b, window)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// within fails the test if f has not returned within a minute: a hang is
// the failure these tests look for.
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s: still blocked after a minute", what)
	}
}

// TestStreamsBothWays: bytes cross each way on two streams at once, in
// order, the address arrives, and a FIN reads as io.EOF after the data.
func TestStreamsBothWays(t *testing.T) {
	t.Parallel()
	c, s := pair(t, 1<<20)
	serverDone := make(chan error, 2)
	go func() {
		for range 2 {
			st, err := s.Accept()
			if err != nil {
				serverDone <- err
				return
			}
			go func() {
				// Echo until EOF, then end our side.
				_, err := io.Copy(st, st)
				if err == nil {
					err = st.CloseWrite()
				}
				serverDone <- err
			}()
		}
	}()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB: several windows
	for _, addr := range []string{"one:1", "two:2"} {
		st, err := c.Open(addr)
		if err != nil {
			t.Fatal(err)
		}
		if st.Addr() != addr {
			t.Fatalf("Addr %q, want %q", st.Addr(), addr)
		}
		var got []byte
		within(t, "echo of 3 MiB", func() error {
			readDone := make(chan error, 1)
			go func() {
				var err error
				got, err = io.ReadAll(st)
				readDone <- err
			}()
			if _, err := st.Write(payload); err != nil {
				return err
			}
			if err := st.CloseWrite(); err != nil {
				return err
			}
			return <-readDone
		})
		if !bytes.Equal(got, payload) {
			t.Fatalf("echo of %d bytes came back as %d bytes, or changed", len(payload), len(got))
		}
		st.Close()
	}
	for range 2 {
		if err := <-serverDone; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlowReaderHoldsOnlyItsStream: a stream whose reader reads nothing
// takes its window and no more, its writer waits, and a sibling stream on
// the same session goes on echoing.
func TestSlowReaderHoldsOnlyItsStream(t *testing.T) {
	t.Parallel()
	c, s := pair(t, InitialWindow)
	stuck, err := c.Open("stuck")
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan int, 1)
	go func() {
		n, _ := stuck.Write(make([]byte, 4*InitialWindow))
		wrote <- n
	}()
	stuckPeer, err := s.Accept() // accepted, never read
	if err != nil {
		t.Fatal(err)
	}
	sib, err := c.Open("sibling")
	if err != nil {
		t.Fatal(err)
	}
	sibPeer, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		within(t, "sibling's echo", func() error {
			if _, err := sib.Write([]byte{byte(i)}); err != nil {
				return err
			}
			b := make([]byte, 1)
			if _, err := io.ReadFull(sibPeer, b); err != nil {
				return err
			}
			if _, err := sibPeer.Write(b); err != nil {
				return err
			}
			_, err := io.ReadFull(sib, b)
			return err
		})
	}
	stuckPeer.mu.Lock()
	held := len(stuckPeer.buf) - stuckPeer.off
	stuckPeer.mu.Unlock()
	if held > InitialWindow {
		t.Errorf("the unread stream holds %d bytes, over its %d-byte window", held, InitialWindow)
	}
	select {
	case n := <-wrote:
		t.Fatalf("Write of 4 windows to a reader that reads nothing returned (%d bytes)", n)
	default:
	}
	// Reading lets the writer finish.
	within(t, "reading the stuck stream", func() error {
		_, err := io.ReadFull(stuckPeer, make([]byte, 4*InitialWindow))
		return err
	})
	if n := <-wrote; n != 4*InitialWindow {
		t.Fatalf("Write returned %d, want %d", n, 4*InitialWindow)
	}
}

// TestSessionLossFailsItsStreams: when the connection goes, every stream
// fails with ErrSessionClosed, in Read and Write, never a clean EOF.
func TestSessionLossFailsItsStreams(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	c, s := Client(a, 0), Server(b, 0)
	defer c.Close()
	st, err := c.Open("x")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		readErr <- err
	}()
	b.Close() // the server's end of the connection, gone
	s.Close()
	within(t, "Read on a lost session", func() error {
		err := <-readErr
		if !errors.Is(err, ErrSessionClosed) {
			return errors.New("Read: " + errorText(err) + ", want ErrSessionClosed")
		}
		return nil
	})
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("the peer's Read: %v, want ErrSessionClosed", err)
	}
	within(t, "Write on a lost session", func() error {
		if _, err := st.Write([]byte("x")); !errors.Is(err, ErrSessionClosed) {
			return errors.New("Write: " + errorText(err) + ", want ErrSessionClosed")
		}
		return nil
	})
	if _, err := c.Open("y"); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("Open on a lost session: %v, want ErrSessionClosed", err)
	}
}

func errorText(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// TestOverrunIsProtocolError: a peer that sends past the credit it was
// given ends the session with ErrProtocol instead of growing the buffer.
func TestOverrunIsProtocolError(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	s := Server(b, 0)
	defer s.Close()
	defer a.Close()
	frame := func(typ byte, id uint32, payload []byte) []byte {
		h := make([]byte, headerSize, headerSize+len(payload))
		h[0] = typ
		binary.BigEndian.PutUint32(h[1:5], id)
		binary.BigEndian.PutUint32(h[5:9], uint32(len(payload)))
		return append(h, payload...)
	}
	go io.Copy(io.Discard, a) // whatever the server sends back
	within(t, "writing a window and one frame more", func() error {
		if _, err := a.Write(frame(frameSyn, 1, []byte("x"))); err != nil {
			return err
		}
		chunk := make([]byte, MaxFrame)
		for range InitialWindow/MaxFrame + 1 {
			if _, err := a.Write(frame(frameData, 1, chunk)); err != nil {
				return nil // the server hung up: checked below
			}
		}
		return nil
	})
	within(t, "the session's end", func() error {
		<-s.readDone
		if err := s.Err(); !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrSessionClosed) {
			return errors.New("Err: " + errorText(err) + ", want ErrSessionClosed and ErrProtocol")
		}
		return nil
	})
}

// TestRefusedOpen: a stream the server resets fails with ErrReset.
func TestRefusedOpen(t *testing.T) {
	t.Parallel()
	c, s := pair(t, 0)
	st, err := c.Open("nowhere")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Reset(); err != nil {
		t.Fatal(err)
	}
	within(t, "Read of a refused stream", func() error {
		if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
			return errors.New("Read: " + errorText(err) + ", want ErrReset")
		}
		return nil
	})
}
