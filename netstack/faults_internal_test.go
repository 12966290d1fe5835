package netstack

import (
	"testing"
	"time"
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
			if _, v := s.schedule(now, now, 1500); v == lost {
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
		at, v := s.schedule(now, now, 100)
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
		at, v := s.schedule(now, now, 1000)
		if want := now.Add(time.Duration(i+1) * time.Second); v != pass || !at.Equal(want) {
			t.Fatalf("packet %d: due +%v (%v), want +%v", i, at.Sub(now), v, want.Sub(now))
		}
	}
	if _, v := s.schedule(now, now, 1000); v != pass {
		t.Fatalf("a fourth packet with 3000 bytes waiting: %v", v)
	}
	if _, v := s.schedule(now, now, 1000); v != overflowed {
		t.Fatalf("a fifth packet past the queue: %v, want overflowed", v)
	}
}
