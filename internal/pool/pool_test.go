package pool

import (
	"bytes"
	"errors"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestReadTCP(t *testing.T) {
	t.Parallel()
	a, b := testnet.TCPPair(t)
	a.Write([]byte("hello"))
	bp, n, err := Read(b)
	if err != nil || string((*bp)[Headroom:Headroom+n]) != "hello" {
		t.Fatalf("Read = %q, %v", (*bp)[Headroom:Headroom+n], err)
	}
	Put(bp)

	// A deadline ends a wait with no buffer held, as a timeout net.Error.
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	bp, n, err = Read(b)
	var ne net.Error
	if bp != nil || n != 0 || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline = %v, %d, %v", bp, n, err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("error %v is not a read *net.OpError", err)
	}
	b.SetReadDeadline(time.Time{})

	// End of stream.
	a.(*net.TCPConn).CloseWrite()
	if bp, n, err = Read(b); bp != nil || n != 0 || err != io.EOF {
		t.Fatalf("Read at EOF = %v, %d, %v", bp, n, err)
	}

	// A closed conn.
	b.Close()
	if _, _, err = Read(b); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read of a closed conn = %v", err)
	}
}

func TestReadOther(t *testing.T) {
	t.Parallel()
	r := bytes.NewReader([]byte("abc"))
	bp, n, err := Read(r)
	if err != nil || string((*bp)[Headroom:Headroom+n]) != "abc" {
		t.Fatalf("Read = %d, %v", n, err)
	}
	Put(bp)
	if bp, n, err = Read(r); bp != nil || n != 0 || err != io.EOF {
		t.Fatalf("Read at EOF = %v, %d, %v", bp, n, err)
	}
}
