package session

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// resumingConn is a tunnel-like conn that says it was resumed n times, as
// a websocket.ResumableConn does.
type resumingConn struct {
	tunnelConn
	n *atomic.Int64
}

func (c resumingConn) Resumes() int { return int(c.n.Load()) }

// TestStatsResumes: Stats().Resumes sums the resumes of the streams'
// conns, those running (as they move) and those ended, and the stream's
// closing log line says how many it had; conns with no Resumes count 0.
func TestStatsResumes(t *testing.T) {
	t.Parallel()
	var counts [2]atomic.Int64
	var dials atomic.Int64
	cfg := forward(t, startEcho(t))
	var h logRecorder
	cfg.Logger = slog.New(&h)
	plain := tunnelDialer()
	cfg.Dialer = dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		c, err := plain.DialSprite(ctx, sprite, network, address)
		if err != nil {
			return nil, err
		}
		i := dials.Add(1) - 1
		if i >= int64(len(counts)) {
			return c, nil // a conn that does not count resumes
		}
		return resumingConn{c.(tunnelConn), &counts[i]}, nil
	})
	s := start(t, cfg)
	a := dial(t, s.Addr())
	roundTrip(t, a, "a")
	counts[0].Store(2)
	if st := s.Stats(); st.Resumes != 2 {
		t.Fatalf("Stats().Resumes = %d with a stream resumed twice, want 2", st.Resumes)
	}
	b := dial(t, s.Addr())
	roundTrip(t, b, "b")
	counts[1].Store(3)
	c := dial(t, s.Addr())
	roundTrip(t, c, "c") // no Resumes method
	if st := s.Stats(); st.Resumes != 5 {
		t.Fatalf("Stats().Resumes = %d, want 5 (2 + 3)", st.Resumes)
	}
	a.Close()
	b.Close()
	c.Close()
	s.Close()
	if st := s.Stats(); st.Resumes != 5 || st.Active != 0 {
		t.Fatalf("Stats() after Close = %+v, want 5 resumes, none active", st)
	}
	var logged []int64
	for _, r := range h.Records() {
		if r.Message != "stream closed" {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "resumes" {
				logged = append(logged, a.Value.Int64())
			}
			return true
		})
	}
	var sum int64
	for _, n := range logged {
		sum += n
	}
	if len(logged) != 3 || sum != 5 {
		t.Fatalf("stream closed lines' resumes: %v, want three summing to 5", logged)
	}
}
