package websocket

import (
	"testing"
	"time"
)

// TestLockReadBy: a close waiting for the read side gets it as soon as the
// holder lets go (woken, not polling: with a far deadline the only way to
// succeed is the holder's unlockRead), and gives up at its deadline or
// when stopped while the holder keeps it.
func TestLockReadBy(t *testing.T) {
	t.Parallel()
	c, _ := connPair(t, true, Tuning{})

	c.rmu.Lock()
	got := make(chan bool, 1)
	go func() { got <- c.lockReadBy(time.Now().Add(time.Hour), nil) }()
	// Let the waiter register, or not: either way it must end up with
	// the lock once we let go.
	c.unlockRead()
	if !<-got {
		t.Fatal("lockReadBy gave up although the holder let go")
	}
	c.unlockRead()

	c.rmu.Lock()
	stop := make(chan struct{})
	go func() { got <- c.lockReadBy(time.Now().Add(time.Hour), stop) }()
	close(stop)
	if <-got {
		t.Fatal("lockReadBy took the lock from a holder that kept it")
	}
	if c.lockReadBy(time.Now().Add(-time.Second), nil) {
		t.Fatal("lockReadBy took the lock past its deadline from a holder that kept it")
	}
	c.unlockRead()
}
