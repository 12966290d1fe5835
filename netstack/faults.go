package netstack

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Conditions are the faults of a host's link to the network: what a packet
// meets on its way out of the host, and again on its way in. A packet
// between two hosts crosses the sender's link, then the receiver's, so
// that a host given a Latency of 25 ms is 50 ms of round trip away from
// every host without conditions of its own. The zero value is a perfect
// link: packets are handed over at once, as they are without conditions.
//
// Loopback traffic inside a host never crosses its link.
type Conditions struct {
	// Latency is the one-way delay added to every packet, in each
	// direction.
	Latency time.Duration

	// Jitter adds a further delay drawn uniformly from [0, Jitter) to each
	// packet. A packet is never released before the one ahead of it on
	// the same link, so jitter delays but does not reorder.
	Jitter time.Duration

	// Bandwidth caps the link at this many bytes per second in each
	// direction (IP packets, headers included); zero means no cap. Packets
	// wait their turn; once Queue bytes are waiting, further packets are
	// dropped, as a router's tail drop does.
	Bandwidth int64

	// Queue is how many bytes a capped link holds before it drops. Zero
	// means 1 MiB. It has no meaning without Bandwidth.
	Queue int

	// Loss is the share of packets dropped, from 0 to 1, drawn in each
	// direction.
	Loss float64

	// Seed seeds the draws of Loss and Jitter, so that a run can be
	// repeated packet for packet (as far as the stacks send the same
	// packets). Each SetConditions starts the draws again.
	Seed uint64
}

const defaultQueue = 1 << 20

// zero reports whether c is a perfect link.
func (c Conditions) zero() bool { return c == Conditions{Seed: c.Seed} }

// FaultStats counts what a host's link did to packets under its faults.
type FaultStats struct {
	// Lost is the packets dropped by Loss.
	Lost uint64
	// Overflowed is the packets dropped because a capped link's queue was
	// full.
	Overflowed uint64
	// Partitioned is the packets dropped because a partition was on.
	Partitioned uint64
	// Delayed is the packets held back by Latency, Jitter or Bandwidth.
	Delayed uint64
	// Reset is the connections Cut reset.
	Reset uint64
}

// SetConditions gives h's link c from now on, in both directions; the
// zero Conditions makes it perfect again. Packets already held back keep
// the time they were given.
func (h *Host) SetConditions(c Conditions) {
	if c.Loss < 0 || c.Loss > 1 || c.Latency < 0 || c.Jitter < 0 || c.Bandwidth < 0 || c.Queue < 0 {
		panic("netstack: Conditions with a negative value or a Loss outside 0-1")
	}
	l := h.link
	l.faultMu.Lock()
	defer l.faultMu.Unlock()
	l.egress.set(c, 1)
	l.ingress.set(c, 2)
	l.updateFaultyLocked()
}

// Conditions returns the conditions set by SetConditions.
func (h *Host) Conditions() Conditions {
	h.link.egress.mu.Lock()
	defer h.link.egress.mu.Unlock()
	return h.link.egress.c
}

// Partition drops every packet to or from h's link for d from now, as a
// cable pulled out would: connections see nothing at all, so only their
// timeouts (read deadlines, keep-alives, retransmission limits) notice,
// and once d has passed they carry on where they stopped. Packets held
// back by Conditions that come due during the partition are dropped too.
// A new Partition replaces the one under way; Partition(0) ends it now.
func (h *Host) Partition(d time.Duration) {
	l := h.link
	l.faultMu.Lock()
	defer l.faultMu.Unlock()
	if d <= 0 {
		l.partitionEnd.Store(0)
	} else {
		l.partitionEnd.Store(time.Now().Add(d).UnixNano())
	}
	l.updateFaultyLocked()
}

// Cut resets every TCP connection of h that crosses its link, at once, as
// a load balancer or a NAT that forgets its mappings does: both ends see
// syscall.ECONNRESET (errors.Is) on their next or blocked Read or Write.
// Connections inside the host (to loopback or to its own addresses),
// listeners and connections already closed (TIME_WAIT) are left alone;
// new connections may be made straight away. The resets reach the peers
// at once, whatever the Conditions or a partition. It returns how many
// connections it reset that an owner may still see: connections being
// dialed, waiting to be accepted or open. Those whose owner has closed
// them but whose peer has not finished (FIN_WAIT, LAST_ACK) are reset
// too, for the peer's sake, but not counted.
func (h *Host) Cut() int {
	l := h.link
	l.faultMu.Lock()
	l.cutting.Add(1)
	l.updateFaultyLocked()
	l.faultMu.Unlock()
	defer func() {
		l.faultMu.Lock()
		l.cutting.Add(-1)
		l.updateFaultyLocked()
		l.faultMu.Unlock()
	}()
	h.pruneCut()
	var closed map[tcpip.Endpoint]struct{} // endpoints their owner closed
	n := 0
	for _, ep := range h.stack.RegisteredEndpoints() {
		tep, ok := ep.(*tcp.Endpoint)
		if !ok {
			continue
		}
		ti, ok := tep.Info().(*stack.TransportEndpointInfo)
		if !ok || ti.ID.RemoteAddress.BitLen() == 0 || ti.ID.RemoteAddress.Unspecified() {
			continue // a listener, or not connected
		}
		if r := netipAddr(ti.ID.RemoteAddress); r.IsLoopback() || slices.Contains(h.addrs, r) {
			continue // inside the host
		}
		if !resettable(tcp.EndpointState(tep.State())) {
			continue
		}
		if closed == nil {
			// gVisor keeps the endpoints their owner closed, until they
			// are done, as dangling; no conn will ever forget those.
			closed = make(map[tcpip.Endpoint]struct{})
			for _, d := range tcpip.GetDanglingEndpoints() {
				closed[d] = struct{}{}
			}
		}
		if _, ok := closed[tep]; ok {
			tep.Abort()
			continue
		}
		h.cut.Store(cutKey(tep), struct{}{})
		tep.Abort()
		n++
	}
	l.stats.reset.Add(uint64(n))
	return n
}

// cutKey is ep's key in h.cut: a weak pointer, so that an endpoint no
// conn will ever forget (one reset while being dialed, or waiting in the
// accept queue of a listener since closed) is not kept alive by it.
func cutKey(ep *tcp.Endpoint) weak.Pointer[tcp.Endpoint] { return weak.Make(ep) }

// pruneCut drops from h.cut the endpoints that are gone.
func (h *Host) pruneCut() {
	h.cut.Range(func(k, _ any) bool {
		if k.(weak.Pointer[tcp.Endpoint]).Value() == nil {
			h.cut.Delete(k)
		}
		return true
	})
}

// resettable reports whether a connection in state st has a peer that a
// reset can reach and an owner that may still see it.
func resettable(st tcp.EndpointState) bool {
	switch st {
	case tcp.StateEstablished, tcp.StateSynSent, tcp.StateSynRecv, tcp.StateFinWait1, tcp.StateFinWait2,
		tcp.StateCloseWait, tcp.StateLastAck, tcp.StateClosing:
		return true
	}
	return false
}

// FaultStats returns what h's link has done to packets so far.
func (h *Host) FaultStats() FaultStats {
	s := &h.link.stats
	return FaultStats{
		Lost:        s.lost.Load(),
		Overflowed:  s.overflowed.Load(),
		Partitioned: s.partitioned.Load(),
		Delayed:     s.delayed.Load(),
		Reset:       s.reset.Load(),
	}
}

// wasCut reports whether Cut reset ep.
func (h *Host) wasCut(ep tcpip.Endpoint) bool {
	tep, ok := ep.(*tcp.Endpoint)
	if !ok {
		return false
	}
	_, ok = h.cut.Load(cutKey(tep))
	return ok
}

// forget drops ep from the endpoints Cut reset, once its conn is closed.
func (h *Host) forget(ep tcpip.Endpoint) {
	if tep, ok := ep.(*tcp.Endpoint); ok {
		h.cut.Delete(cutKey(tep))
	}
}

// faultStats are a link's counters.
type faultStats struct {
	lost, overflowed, partitioned, delayed, reset atomic.Uint64
}

// stage is one direction of a link under Conditions.
type stage struct {
	mu   sync.Mutex
	c    Conditions
	rng  *rand.Rand
	free time.Time // when a capped link has sent what it holds
	last time.Time // when the last packet was released
}

func (s *stage) set(c Conditions, stream uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c = c
	s.rng = rand.New(rand.NewPCG(c.Seed, stream))
	// free and last are kept: packets already held keep their place, and
	// no packet sent under the new conditions may overtake them.
}

func (s *stage) perfect() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.zero()
}

// verdict is what a stage did with a packet.
type verdict int

const (
	pass verdict = iota
	lost
	overflowed
)

// schedule takes a packet of size bytes that reaches the stage at t, and
// returns when it leaves, or why it was dropped.
func (s *stage) schedule(t time.Time, size int) (time.Time, verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.c
	if c.Loss > 0 && s.rng.Float64() < c.Loss {
		return t, lost
	}
	if c.Bandwidth > 0 {
		start := t
		if s.free.After(start) {
			start = s.free
		}
		queue := c.Queue
		if queue == 0 {
			queue = defaultQueue
		}
		// The bytes still waiting ahead of the packet when it reaches the
		// stage, at the link's rate. It is measured from t, not now: on the
		// receiving side t already holds the sender's delays, which are no
		// queue of this link's.
		if waiting := float64(start.Sub(t)) / float64(time.Second) * float64(c.Bandwidth); waiting > float64(queue) {
			return t, overflowed
		}
		s.free = start.Add(time.Duration(float64(size) / float64(c.Bandwidth) * float64(time.Second)))
		t = s.free
	}
	t = t.Add(c.Latency)
	if c.Jitter > 0 {
		t = t.Add(time.Duration(s.rng.Int64N(int64(c.Jitter))))
	}
	if t.Before(s.last) {
		t = s.last
	}
	s.last = t
	return t, pass
}

// updateFaultyLocked caches whether l has anything but a perfect link, so
// that the packet path of a perfect link takes no lock. l.faultMu must be
// held, so that two changes cannot store their findings out of order.
func (l *link) updateFaultyLocked() {
	l.faulty.Store(!l.egress.perfect() || !l.ingress.perfect() || l.partitionEnd.Load() != 0 || l.cutting.Load() > 0)
}

// partitioned reports whether a partition is on at now.
func (l *link) partitioned(now time.Time) bool {
	end := l.partitionEnd.Load()
	return end != 0 && now.UnixNano() < end
}

// dropPartitioned reports whether a partition of l is on at now, counting
// the packet dropped.
func (l *link) dropPartitioned(now time.Time) bool {
	if l.partitioned(now) {
		l.stats.partitioned.Add(1)
		return true
	}
	return false
}

// count counts a packet one of l's stages dropped, and reports whether it
// passed.
func (l *link) count(v verdict) bool {
	switch v {
	case lost:
		l.stats.lost.Add(1)
	case overflowed:
		l.stats.overflowed.Add(1)
	}
	return v == pass
}

// sendFaulty sends pkt from l to peer through both links' faults.
func (l *link) sendFaulty(pkt *stack.PacketBuffer, peer *link) {
	if l.cutting.Load() > 0 && isReset(pkt) {
		if !peer.deliver(pkt) {
			l.net.dropped.Add(1)
		}
		return
	}
	now := time.Now()
	if l.dropPartitioned(now) || peer.dropPartitioned(now) {
		return
	}
	size := pkt.Size()
	at, v := l.egress.schedule(now, size)
	if !l.count(v) {
		return
	}
	if at, v = peer.ingress.schedule(at, size); !peer.count(v) {
		return
	}
	if !at.After(now) && peer.delay.pending.Load() == 0 {
		if !peer.deliver(pkt) {
			l.net.dropped.Add(1)
		}
		return
	}
	if at.After(now) {
		l.stats.delayed.Add(1)
	}
	in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: pkt.ToBuffer()})
	if !peer.delay.push(held{at: at, proto: pkt.NetworkProtocolNumber, pkt: in, from: l}) {
		in.DecRef()
		l.net.dropped.Add(1)
	}
}

// isReset reports whether pkt is a TCP segment with RST set.
func isReset(pkt *stack.PacketBuffer) bool {
	th := pkt.TransportHeader().Slice()
	return pkt.TransportProtocolNumber == header.TCPProtocolNumber && len(th) >= header.TCPMinimumSize &&
		header.TCP(th).Flags().Contains(header.TCPFlagRst)
}

// held is a packet held back on its way into a link.
type held struct {
	at    time.Time
	seq   uint64 // order of arrival, among packets due at the same time
	proto tcpip.NetworkProtocolNumber
	pkt   *stack.PacketBuffer // the inbound packet, owned by the queue
	from  *link
}

// heldQueue is a min-heap of held packets by due time.
type heldQueue []held

func (q heldQueue) Len() int { return len(q) }
func (q heldQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q heldQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *heldQueue) Push(x any)   { *q = append(*q, x.(held)) }
func (q *heldQueue) Pop() any {
	old := *q
	h := old[len(old)-1]
	old[len(old)-1] = held{}
	*q = old[:len(old)-1]
	return h
}

// delayLine holds the packets due into one link later, and releases them
// when they are due from a goroutine of its own, started by the first
// packet held and ended by stop (Host.Close).
type delayLine struct {
	to *link

	mu      sync.Mutex
	q       heldQueue // guarded by mu
	seq     uint64    // guarded by mu
	running bool      // the goroutine is started; guarded by mu
	stopped bool      // guarded by mu

	// pending counts the packets pushed and not yet released or dropped,
	// so that a packet sent while some are held goes behind them instead
	// of straight in (see link.WritePackets).
	pending atomic.Int64

	wake chan struct{} // a packet due sooner than the goroutine waits for
	quit chan struct{} // closed by stop
	done chan struct{} // closed when the goroutine has exited
}

func (d *delayLine) init(to *link) {
	d.to = to
	d.wake = make(chan struct{}, 1)
	d.quit = make(chan struct{})
	d.done = make(chan struct{})
}

// push holds h until it is due. It reports false, keeping nothing, once
// the line is stopped.
func (d *delayLine) push(h held) bool {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return false
	}
	d.seq++
	h.seq = d.seq
	heap.Push(&d.q, h)
	d.pending.Add(1)
	first := d.q[0].seq == h.seq
	if !d.running {
		d.running = true
		go d.run()
	}
	d.mu.Unlock()
	if first {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (d *delayLine) run() {
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []held
	for {
		d.mu.Lock()
		now := time.Now()
		for len(d.q) > 0 && !d.q[0].at.After(now) {
			due = append(due, heap.Pop(&d.q).(held))
		}
		wait := time.Duration(-1)
		if len(d.q) > 0 {
			wait = d.q[0].at.Sub(now)
		}
		d.mu.Unlock()
		for i, h := range due {
			d.release(h, now)
			due[i] = held{}
			d.pending.Add(-1)
		}
		due = due[:0]
		if wait >= 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-d.wake:
		case <-timer.C:
		case <-d.quit:
			return
		}
	}
}

// release delivers a due packet, unless a partition is on at either end.
func (d *delayLine) release(h held, now time.Time) {
	defer h.pkt.DecRef()
	if h.from.dropPartitioned(now) || d.to.dropPartitioned(now) {
		return
	}
	if !d.to.deliverInbound(h.proto, h.pkt) {
		d.to.net.dropped.Add(1)
	}
}

// stop ends the goroutine, waits for it, and drops every packet held.
func (d *delayLine) stop() {
	d.mu.Lock()
	d.stopped = true
	running := d.running
	d.mu.Unlock()
	close(d.quit)
	if running {
		<-d.done
	}
	d.mu.Lock()
	q := d.q
	d.q = nil
	d.mu.Unlock()
	for _, h := range q {
		h.pkt.DecRef()
		d.pending.Add(-1)
	}
}
