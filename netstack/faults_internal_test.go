package netstack

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TestStageLoss checks that Loss drops about the share it is given, and
// the same packets for the same seed.
func TestStageLoss(t *testing.T) {
	t.Parallel()
	const packets = 20000
	drops := func(loss float64, seed uint64) []int {
		var s stage
		s.set(Conditions{Loss: loss, Seed: seed}, 1)
		now := time.Now()
		var lostAt []int
		for i := range packets {
			if _, v := s.schedule(now, 1500); v == lost {
				lostAt = append(lostAt, i)
			}
		}
		return lostAt
	}
	for _, loss := range []float64{0, 0.01, 0.1, 0.5, 1} {
		got := float64(len(drops(loss, 7))) / packets
		if got < loss*0.8 || got > loss*1.2 {
			t.Errorf("Loss %v dropped %.4f of the packets", loss, got)
		}
	}
	a, b := drops(0.1, 3), drops(0.1, 3)
	if len(a) != len(b) {
		t.Fatalf("the same seed dropped %d then %d packets", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("the same seed dropped packet %d then %d", a[i], b[i])
		}
	}
}

// TestStageSchedule checks the release times a stage gives: latency
// added, jitter never reordering, and a capped link spacing packets by
// their size and dropping past its queue.
func TestStageSchedule(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var s stage
	s.set(Conditions{Latency: 10 * time.Millisecond, Jitter: 50 * time.Millisecond, Seed: 1}, 1)
	last := now
	for i := range 1000 {
		at, v := s.schedule(now, 100)
		if v != pass {
			t.Fatalf("packet %d dropped", i)
		}
		if at.Before(now.Add(10*time.Millisecond)) || at.Before(last) {
			t.Fatalf("packet %d due at +%v, after one due at +%v", i, at.Sub(now), last.Sub(now))
		}
		last = at
	}

	s.set(Conditions{Bandwidth: 1000, Queue: 3000}, 1) // 1 ms per byte
	for i := range 3 {
		at, v := s.schedule(now, 1000)
		if want := now.Add(time.Duration(i+1) * time.Second); v != pass || !at.Equal(want) {
			t.Fatalf("packet %d: due +%v (%v), want +%v", i, at.Sub(now), v, want.Sub(now))
		}
	}
	if _, v := s.schedule(now, 1000); v != pass {
		t.Fatalf("a fourth packet with 3000 bytes waiting: %v", v)
	}
	if _, v := s.schedule(now, 1000); v != overflowed {
		t.Fatalf("a fifth packet past the queue: %v, want overflowed", v)
	}
}

// TestStageSetKeepsOrder checks that new conditions never release a
// packet before one held under the old: a packet due in 100 ms, then
// SetConditions lowering the latency to nothing, and the next packets
// are still due after it.
func TestStageSetKeepsOrder(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var s stage
	s.set(Conditions{Latency: 100 * time.Millisecond}, 1)
	first, v := s.schedule(now, 100)
	if v != pass {
		t.Fatalf("first packet: %v", v)
	}
	for _, c := range []Conditions{{Latency: time.Millisecond}, {}} {
		s.set(c, 1)
		at, v := s.schedule(now.Add(time.Millisecond), 100)
		if v != pass || at.Before(first) {
			t.Fatalf("after set(%+v): a packet due at +%v (%v), before one due at +%v",
				c, at.Sub(now), v, first.Sub(now))
		}
	}
}

// TestStageQueueFromArrival checks that a capped stage measures its queue
// from when a packet reaches it, not from when it was sent: a packet that
// spent 50 ms on the sender's link finds an empty queue, not 50 ms of
// bytes waiting.
func TestStageQueueFromArrival(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var s stage
	s.set(Conditions{Bandwidth: 1000, Queue: 10}, 2) // 10 ms of queue
	for i := range 5 {
		arrival := now.Add(50*time.Millisecond + time.Duration(i)*time.Second)
		if at, v := s.schedule(arrival, 100); v != pass || !at.Equal(arrival.Add(100*time.Millisecond)) {
			t.Fatalf("packet %d arriving at +%v: due +%v (%v), want +%v",
				i, arrival.Sub(now), at.Sub(now), v, arrival.Add(100*time.Millisecond).Sub(now))
		}
	}
}

// TestCutSkipsTimeWait checks that Cut leaves a connection already closed
// (its end in TIME_WAIT) alone: it is neither counted nor remembered as
// cut, since no conn's Close would forget it.
func TestCutSkipsTimeWait(t *testing.T) {
	t.Parallel()
	n := NewNetwork(nil)
	defer n.Close()
	a, _ := n.NewHost("a")
	b, _ := n.NewHost("b")
	l, err := b.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	ac, err := a.Dial("tcp", "b:7")
	if err != nil {
		t.Fatal(err)
	}
	bc := <-accepted
	if bc == nil {
		t.Fatal("accept failed")
	}
	ac.Close()
	if _, err := io.ReadAll(bc); err != nil {
		t.Fatal(err)
	}
	bc.Close()
	// a's end reaches TIME_WAIT once its stack has taken b's FIN, which
	// nothing signals: look, a bounded number of times.
	timeWait := func() bool {
		for _, ep := range a.stack.RegisteredEndpoints() {
			if st, ok := ep.(interface{ State() uint32 }); ok && tcp.EndpointState(st.State()) == tcp.StateTimeWait {
				return true
			}
		}
		return false
	}
	for i := 0; !timeWait(); i++ {
		if i == 10000 {
			t.Fatal("a's end never reached TIME_WAIT")
		}
		time.Sleep(time.Millisecond)
	}
	if got := a.Cut(); got != 0 {
		t.Errorf("Cut() = %d with only a TIME_WAIT connection, want 0", got)
	}
	empty := true
	a.cut.Range(func(any, any) bool { empty = false; return false })
	if !empty {
		t.Error("Cut remembered a TIME_WAIT endpoint as cut")
	}
}

// TestCutForgets checks that Cut remembers only the endpoints a conn may
// still see, so that h.cut is empty once every conn is closed: an open
// conn and one waiting in the accept queue are counted and remembered
// until their conns close; one its owner already closed (FIN_WAIT) is
// reset but neither counted nor remembered.
func TestCutForgets(t *testing.T) {
	t.Parallel()
	n := NewNetwork(nil)
	defer n.Close()
	a, _ := n.NewHost("a")
	b, _ := n.NewHost("b")
	bl, err := b.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for range 2 {
			c, err := bl.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	open, err := a.Dial("tcp", "b:7")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	closed, err := a.Dial("tcp", "b:7")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if c := <-accepted; c != nil {
			defer c.Close()
		}
	}
	closed.Close() // a's end in FIN_WAIT: b's has not closed

	// One in a's accept queue: wait, a bounded number of times, for a's
	// end to leave SYN-RCVD, which nothing signals.
	al, err := a.Listen("tcp", ":8")
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close()
	bc, err := b.Dial("tcp", "a:8")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	queued := func() bool {
		for _, ep := range a.stack.RegisteredEndpoints() {
			ti := ep.(*tcp.Endpoint).Info().(*stack.TransportEndpointInfo)
			if ti.ID.LocalPort == 8 && tcp.EndpointState(ep.(*tcp.Endpoint).State()) == tcp.StateEstablished {
				return true
			}
		}
		return false
	}
	for i := 0; !queued(); i++ {
		if i == 10000 {
			t.Fatal("a's end of the queued connection never got established")
		}
		time.Sleep(time.Millisecond)
	}

	if got := a.Cut(); got != 2 {
		t.Errorf("Cut() = %d, want 2 (the open conn and the queued one)", got)
	}
	if got := a.FaultStats().Reset; got != 2 {
		t.Errorf("FaultStats.Reset = %d, want 2", got)
	}
	ac, err := al.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Read on the conn accepted after the Cut: %v, want ECONNRESET", err)
	}
	if _, err := open.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Read on the open conn after the Cut: %v, want ECONNRESET", err)
	}
	ac.Close()
	open.Close()
	left := 0
	a.cut.Range(func(any, any) bool { left++; return true })
	if left != 0 {
		t.Errorf("h.cut still holds %d endpoints once every conn is closed", left)
	}
}

// TestLiftedConditionsKeepOrder checks that packets sent once the
// conditions are lifted go behind those still held, instead of straight
// in past them: with a packet into a held for an hour, the zero
// Conditions, and a second write, a's delay line holds both.
func TestLiftedConditionsKeepOrder(t *testing.T) {
	t.Parallel()
	n := NewNetwork(nil)
	defer n.Close()
	a, _ := n.NewHost("a")
	b, _ := n.NewHost("b")
	l, err := a.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	bc, err := b.Dial("tcp", "a:7")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	if ac := <-accepted; ac != nil {
		defer ac.Close()
	}
	a.SetConditions(Conditions{Latency: time.Hour})
	if _, err := bc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// The stacks send from goroutines of their own, which nothing
	// signals: look, a bounded number of times.
	waitHeld := func(want int64) bool {
		for i := 0; i < 5000; i++ {
			if a.link.delay.pending.Load() >= want {
				return true
			}
			time.Sleep(time.Millisecond)
		}
		return false
	}
	if !waitHeld(1) {
		t.Fatal("the first write was never held")
	}
	a.SetConditions(Conditions{})
	if _, err := bc.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if !waitHeld(2) {
		t.Fatal("a packet sent after the conditions were lifted went past the one held")
	}
}
