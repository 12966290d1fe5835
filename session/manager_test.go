package session

import (
	"context"
	"sync"
	"testing"
)

func TestManager(t *testing.T) {
	t.Parallel()
	echoAddr := startEcho(t)
	var m Manager
	var ss []*Session
	for range 3 {
		s := start(t, forward(t, echoAddr))
		roundTrip(t, dial(t, s.Addr()), "managed")
		m.Add(s)
		ss = append(ss, s)
	}
	m.Add(nil) // ignored

	waited := make(chan struct{})
	go func() {
		m.WaitAll()
		close(waited)
	}()

	m.CloseAll()
	for _, s := range ss {
		select {
		case <-s.Done():
		default:
			t.Fatal("a session is still running after CloseAll")
		}
		if st := s.Stats(); st.Active != 0 {
			t.Fatalf("Active = %d after CloseAll", st.Active)
		}
	}
	<-waited
	m.CloseAll() // nothing left: a no-op
	m.WaitAll()
}

// TestManagerWaitAll: WaitAll returns once every session ended, whatever
// ended it.
func TestManagerWaitAll(t *testing.T) {
	t.Parallel()
	echoAddr := startEcho(t)
	var m Manager
	ctx, cancel := context.WithCancel(t.Context())
	a, err := Start(ctx, forward(t, echoAddr))
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, forward(t, echoAddr))
	m.Add(a)
	m.Add(b)
	cancel()
	b.Close()
	m.WaitAll()
	if len(m.sessions) != 2 {
		t.Fatalf("%d sessions held, want 2", len(m.sessions))
	}
	// Ended sessions are forgotten on the next Add.
	c := start(t, forward(t, echoAddr))
	m.Add(c)
	if len(m.sessions) != 1 {
		t.Fatalf("%d sessions held after Add, want 1", len(m.sessions))
	}
	m.CloseAll()
}

// TestManagerConcurrent: Add, CloseAll and WaitAll from many goroutines.
func TestManagerConcurrent(t *testing.T) {
	t.Parallel()
	echoAddr := startEcho(t)
	var m Manager
	var adders, waiters sync.WaitGroup
	for i := range 8 {
		adders.Go(func() {
			s, err := Start(t.Context(), forward(t, echoAddr))
			if err != nil {
				t.Error(err)
				return
			}
			m.Add(s)
			if i%2 == 0 {
				m.CloseAll()
			} else {
				// Waits for sessions that a CloseAll, perhaps the last one
				// below, closes.
				waiters.Go(m.WaitAll)
			}
		})
	}
	adders.Wait()
	m.CloseAll()
	waiters.Wait()
}
