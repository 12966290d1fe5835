package netstack_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/netstack"
)

// connPair returns a conn dialed from a to b and the conn b accepted.
func connPair(t *testing.T, a, b *netstack.Host) (ac, bc net.Conn) {
	t.Helper()
	l := listen(t, b, "tcp", ":7000")
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ac, err := a.DialContext(ctx, "tcp", b.Name()+":7000")
	if err != nil {
		t.Fatal(err)
	}
	bc = <-accepted
	if bc == nil {
		ac.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { ac.Close(); bc.Close() })
	return ac, bc
}

// faultyPair is a network with hosts a and b (MTU mtu, 0 for the default)
// and a connection between them.
func faultyPair(t *testing.T, mtu int) (a, b *netstack.Host, ac, bc net.Conn) {
	t.Helper()
	n := netstack.NewNetwork(&netstack.Options{MTU: mtu})
	t.Cleanup(func() { n.Close() })
	a, b = newHost(t, n, "a"), newHost(t, n, "b")
	ac, bc = connPair(t, a, b)
	return a, b, ac, bc
}

// roundTrip writes one byte on c and reads the byte peer echoes back.
func roundTrip(t *testing.T, c, peer net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	go func() {
		b := make([]byte, 1)
		if _, err := io.ReadFull(peer, b); err == nil {
			peer.Write(b)
		}
	}()
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// TestConditionsLatency checks that a host's latency is paid on the way
// out and on the way in: a round trip takes at least twice the latency
// (the clock bounds it only from below), and a dial pays it too.
func TestConditionsLatency(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	const latency = 20 * time.Millisecond
	a.SetConditions(netstack.Conditions{Latency: latency, Jitter: 5 * time.Millisecond})
	if got := a.Conditions(); got.Latency != latency {
		t.Fatalf("Conditions() = %+v", got)
	}
	start := time.Now()
	ac, bc := connPair(t, a, b)
	if d := time.Since(start); d < 2*latency {
		t.Errorf("dial took %v, less than the round trip of %v", d, 2*latency)
	}
	if d := roundTrip(t, ac, bc); d < 2*latency {
		t.Errorf("round trip took %v, want at least %v", d, 2*latency)
	}
	if a.FaultStats().Delayed == 0 {
		t.Error("FaultStats.Delayed = 0")
	}

	// Back to a perfect link: the stream carries on.
	a.SetConditions(netstack.Conditions{})
	roundTrip(t, ac, bc)
}

// copyChecked sends size random bytes from c to peer and checks they
// arrive intact, returning how long it took.
func copyChecked(t *testing.T, c, peer net.Conn, size int) time.Duration {
	t.Helper()
	want := make([]byte, size)
	rand.Read(want)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(peer)
	d := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, not the %d sent", len(got), len(want))
	}
	return d
}

// TestConditionsLoss checks that a lossy link drops packets and TCP still
// delivers the stream intact.
func TestConditionsLoss(t *testing.T) {
	t.Parallel()
	a, _, ac, bc := faultyPair(t, 1500)
	a.SetConditions(netstack.Conditions{Loss: 0.05, Seed: 1})
	copyChecked(t, ac, bc, 256<<10)
	if a.FaultStats().Lost == 0 {
		t.Error("FaultStats.Lost = 0 after 256 KiB through 5% loss")
	}
}

// TestConditionsBandwidth checks that a capped link carries no more than
// its rate (a lower bound on the time, never an upper one) and delivers
// everything.
func TestConditionsBandwidth(t *testing.T) {
	t.Parallel()
	a, _, ac, bc := faultyPair(t, 1500)
	const rate, size = 2 << 20, 512 << 10
	a.SetConditions(netstack.Conditions{Bandwidth: rate})
	d := copyChecked(t, ac, bc, size)
	if floor := time.Duration(float64(size) / rate * 0.9 * float64(time.Second)); d < floor {
		t.Errorf("%d bytes at %d B/s took %v, want at least %v", size, rate, d, floor)
	}
}

// TestConditionsCapBehindDelay checks that a receiver's cap counts as its
// queue only the bytes waiting on its own link, not the time packets spent
// on the sender's: behind a sender's latency, and behind a slower sender's
// cap, the receiver never overflows and the dial and the stream go
// through.
func TestConditionsCapBehindDelay(t *testing.T) {
	t.Parallel()
	t.Run("latency", func(t *testing.T) {
		t.Parallel()
		n := newNetwork(t)
		a, b := newHost(t, n, "a"), newHost(t, n, "b")
		b.SetConditions(netstack.Conditions{Latency: 50 * time.Millisecond})
		a.SetConditions(netstack.Conditions{Bandwidth: 50 << 20})
		ac, bc := connPair(t, a, b) // b's SYN-ACK crosses a's cap
		copyChecked(t, bc, ac, 64<<10)
		if got := a.FaultStats().Overflowed; got != 0 {
			t.Errorf("the capped receiver's Overflowed = %d, want 0", got)
		}
	})
	t.Run("caps", func(t *testing.T) {
		t.Parallel()
		n := netstack.NewNetwork(&netstack.Options{MTU: 1500})
		t.Cleanup(func() { n.Close() })
		a, b := newHost(t, n, "a"), newHost(t, n, "b")
		a.SetConditions(netstack.Conditions{Bandwidth: 1 << 20, Queue: 256 << 10})
		b.SetConditions(netstack.Conditions{Bandwidth: 8 << 20, Queue: 256 << 10})
		ac, bc := connPair(t, a, b)
		copyChecked(t, ac, bc, 256<<10)
		if got := b.FaultStats().Overflowed; got != 0 {
			t.Errorf("the faster receiver's Overflowed = %d, want 0", got)
		}
	})
}

// TestCut checks that Cut resets the host's connections across its link,
// both ends seeing ECONNRESET, blocked calls included, and leaves loopback
// connections and new connections alone.
func TestCut(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	ac, bc := connPair(t, a, b)
	loA, loB := connPair(t, a, a) // a to its own address: not across its link

	errs := make(chan error, 2)
	for _, c := range []net.Conn{ac, bc} {
		go func() {
			_, err := c.Read(make([]byte, 1))
			errs <- err
		}()
	}
	a.SetConditions(netstack.Conditions{Latency: time.Hour}) // the resets do not wait for it
	if got := a.Cut(); got != 1 {
		t.Fatalf("Cut() = %d, want 1", got)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("blocked Read after Cut: %v, want ECONNRESET", err)
		}
	}
	for _, c := range []net.Conn{ac, bc} {
		if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Errorf("Write after Cut: %v, want ECONNRESET or EPIPE", err)
		}
	}
	if got := a.FaultStats().Reset; got < 1 {
		t.Errorf("FaultStats.Reset = %d", got)
	}
	a.SetConditions(netstack.Conditions{})
	roundTrip(t, loA, loB)
	ac2, bc2 := connPair(t, a, b)
	roundTrip(t, ac2, bc2)
}

// TestPartition checks that a partition makes reads time out with
// nothing else to see, and that the stream carries on intact once it
// heals, by itself or by Partition(0).
func TestPartition(t *testing.T) {
	t.Parallel()
	a, b, ac, bc := faultyPair(t, 0)

	a.Partition(time.Hour)
	if _, err := bc.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	ac.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 16)
	if _, err := ac.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read during the partition: %v, want a timeout", err)
	}
	if a.FaultStats().Partitioned == 0 {
		t.Error("FaultStats.Partitioned = 0")
	}
	a.Partition(0)
	ac.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(ac, buf[:6]); err != nil || string(buf[:6]) != "during" {
		t.Fatalf("Read after healing: %q, %v", buf[:6], err)
	}

	// One that ends by itself, on the other host.
	before := b.FaultStats().Partitioned
	b.Partition(150 * time.Millisecond)
	if _, err := ac.Write([]byte("later")); err != nil {
		t.Fatal(err)
	}
	bc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(bc, buf[:5]); err != nil || string(buf[:5]) != "later" {
		t.Fatalf("Read after the partition ended: %q, %v", buf[:5], err)
	}
	// The write went out during the partition (it is far shorter than
	// the retransmission timeout's first try), so something was dropped.
	if b.FaultStats().Partitioned == before {
		t.Error("the partition that ended by itself dropped nothing")
	}
	roundTrip(t, ac, bc)
}

// TestCloseDropsHeld checks that closing a network with packets held back
// returns at once and leaves no goroutine (TestMain's goleak).
func TestCloseDropsHeld(t *testing.T) {
	t.Parallel()
	n := netstack.NewNetwork(nil)
	a, _ := n.NewHost("a")
	b, _ := n.NewHost("b")
	ac, _ := connPair(t, a, b)
	a.SetConditions(netstack.Conditions{Latency: time.Hour})
	if _, err := ac.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if a.FaultStats().Delayed == 0 {
		t.Error("nothing was held back")
	}
}

// TestSetLingerZero checks that Close after SetLinger(0) resets the
// connection, as on a kernel socket: the peer sees ECONNRESET, not an end
// of stream. Relays (ProxyPort's sessions) pass a broken stream on so.
func TestSetLingerZero(t *testing.T) {
	t.Parallel()
	_, _, ac, bc := faultyPair(t, 0)
	l, ok := ac.(interface{ SetLinger(int) error })
	if !ok {
		t.Fatal("conn has no SetLinger")
	}
	if err := l.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	ac.Close()
	bc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(bc); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer of a conn closed with SetLinger(0): %v, want ECONNRESET", err)
	}
	if err := l.SetLinger(0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetLinger after Close: %v, want net.ErrClosed", err)
	}
}
