package netstack

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// blackhole makes h swallow every packet sent to it, as a host that
// vanished without a trace would: dials to it hang until their context
// ends. The returned channel receives a value for each packet swallowed.
func blackhole(h *Host) <-chan struct{} {
	s := sink(make(chan struct{}, 64))
	h.link.disp.Store(&dispatcher{s})
	return s
}

// sink is a stack.NetworkDispatcher that drops every packet, telling its
// channel (if it has room).
type sink chan struct{}

func (s sink) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	select {
	case s <- struct{}{}:
	default:
	}
}

func (s sink) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestDialInFlight checks a dial whose context ends while the SYN is
// unanswered: a deadline gives a timeout, a cancel gives context.Canceled,
// both from Host.DialContext and from Network.Dialer.
func TestDialInFlight(t *testing.T) {
	t.Parallel()
	n := NewNetwork(nil)
	defer n.Close()
	a, err := n.NewHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.NewHost("b")
	if err != nil {
		t.Fatal(err)
	}
	swallowed := blackhole(b)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = a.DialContext(ctx, "tcp", "b:80")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: got %v, want a timeout matching context.DeadlineExceeded", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("deadline: %#v is not a dial *net.OpError", err)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = n.Dialer().DialSprite(ctx, "a", "tcp", "b:80")
	if !errors.Is(err, dialer.ErrTargetTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Dialer deadline: got %v, want ErrTargetTimeout, a timeout", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err = a.DialContext(ctx, "tcp", "b:80"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: got %v, want context.Canceled", err)
	}

	// Closing the dialing host ends the dial too.
	errc := make(chan error, 1)
	go func() {
		_, err := a.DialContext(context.Background(), "tcp", "b:80")
		errc <- err
	}()
	for len(swallowed) > 0 { // forget the earlier dials' SYNs
		<-swallowed
	}
	<-swallowed // this dial's SYN: it is in flight
	a.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("host closed during dial: %v", err)
	}
}

// transfer sends size pseudo-random bytes from a to b on one connection and
// checks the SHA-256 on both sides.
func transfer(t *testing.T, a, b *Host, size int64, seed uint64) {
	t.Helper()
	l, err := b.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		sum [sha256.Size]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.CopyBuffer(h, c, make([]byte, 128<<10))
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	c, err := a.Dial("tcp", fmt.Sprintf("%s:%d", b.Name(), l.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size), h)
	if _, err := io.CopyBuffer(c, src, make([]byte, 128<<10)); err != nil {
		t.Fatal(err)
	}
	c.(*conn).CloseWrite()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != size || r.sum != [sha256.Size]byte(h.Sum(nil)) {
		t.Fatalf("received %d bytes with sum %x; sent %d with %x", r.n, r.sum, size, h.Sum(nil))
	}
}

// checkNoLoss fails if a link or a host's stack dropped a packet: under
// any load, the network must slow the sender down rather than lose what it
// sent. Retransmissions are only logged: a timer may still fire when the
// race detector starves a reader (zero-window probes, the retransmit timer),
// which is TCP doing its job, not a loss.
func checkNoLoss(t *testing.T, n *Network, hosts ...*Host) {
	t.Helper()
	if d := n.dropped.Load(); d != 0 {
		t.Errorf("links dropped %d packets", d)
	}
	for _, h := range hosts {
		s := h.stack.Stats()
		for what, v := range map[string]uint64{
			"dropped packets":      s.DroppedPackets.Value(),
			"TCP send errors":      s.TCP.SegmentSendErrors.Value(),
			"TCP checksum errors":  s.TCP.ChecksumErrors.Value(),
			"IP malformed packets": s.IP.MalformedPacketsReceived.Value(),
		} {
			if v != 0 {
				t.Errorf("host %s: %d %s", h.Name(), v, what)
			}
		}
		if r := s.TCP.Retransmits.Value(); r != 0 {
			t.Logf("host %s: %d retransmits (%d timer expiries)", h.Name(), r, s.TCP.Timeouts.Value())
		}
	}
}

// TestLargeTransfer moves 64 MiB one way and checks the bytes and that
// nothing was dropped or retransmitted.
func TestLargeTransfer(t *testing.T) {
	t.Parallel()
	n := NewNetwork(nil)
	defer n.Close()
	a, _ := n.NewHost("a")
	b, _ := n.NewHost("b")
	transfer(t, a, b, 64<<20, 1)
	checkNoLoss(t, n, a, b)
}

// TestConcurrentStreams runs several transfers at once, both ways and over
// loopback, sharing the hosts' stacks.
func TestConcurrentStreams(t *testing.T) {
	t.Parallel()
	n := NewNetwork(nil)
	defer n.Close()
	a, _ := n.NewHost("a")
	b, _ := n.NewHost("b")
	var wg sync.WaitGroup
	for i := range 8 {
		from, to := a, b
		switch i % 3 {
		case 1:
			from, to = b, a
		case 2:
			to = a // loopback inside a, by its own name
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			transfer(t, from, to, 8<<20, uint64(i))
		}()
	}
	wg.Wait()
	checkNoLoss(t, n, a, b)
}

// TestSmallMTU runs transfers with 1500-byte packets and 64 KiB buffers,
// where segmentation, window updates and zero windows happen all the time.
func TestSmallMTU(t *testing.T) {
	t.Parallel()
	n := NewNetwork(&Options{MTU: 1500, BufferSize: 64 << 10})
	defer n.Close()
	a, _ := n.NewHost("a")
	b, _ := n.NewHost("b")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transfer(t, a, b, 2<<20, uint64(i))
		}()
	}
	wg.Wait()
	checkNoLoss(t, n, a, b)
}

// TestOptions checks defaults and that nonsense options panic at
// construction.
func TestOptions(t *testing.T) {
	t.Parallel()
	o := (*Options)(nil).withDefaults()
	if o.MTU != 65536 || o.BufferSize != 4<<20 || o.IPv4Prefix.String() != "10.99.0.0/16" || o.IPv6Prefix.String() != "fd00:99::/64" {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range []Options{
		{MTU: 100},
		{MTU: 1 << 20},
		{BufferSize: 10},
		{IPv4Prefix: netip.MustParsePrefix("fd00::/64")},
		{IPv4Prefix: netip.MustParsePrefix("10.0.0.0/31")},
		{IPv6Prefix: netip.MustParsePrefix("10.0.0.0/8")},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewNetwork(%+v) did not panic", bad)
				}
			}()
			NewNetwork(&bad).Close()
		}()
	}
	// A custom prefix is where hosts get their addresses.
	n := NewNetwork(&Options{IPv4Prefix: netip.MustParsePrefix("192.168.50.0/24"), IPv6Prefix: netip.MustParsePrefix("fd12::/120")})
	defer n.Close()
	h, err := n.NewHost("h")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(h.Addrs()); got != "[192.168.50.2 fd12::2]" {
		t.Errorf("addresses %s", got)
	}
}
