package proxy_test

import (
	"net"
	"sync"
	"testing"

	"github.com/spriteproxy/spriteproxy/proxy"
)

// TestZeroValues: a ProxySession not made by ProxyPort, and nil sessions
// given to a manager, are harmless.
func TestZeroValues(t *testing.T) {
	t.Parallel()
	var ps proxy.ProxySession
	if err := ps.Close(); err != nil {
		t.Fatal(err)
	}
	ps.Wait()
	if ps.LocalAddr() != nil || ps.Stats() != (proxy.Stats{}) {
		t.Fatal("a zero ProxySession reports a listener or counts")
	}
	pm := proxy.NewProxyManager()
	pm.AddSession(nil)
	pm.AddSession(&ps)
	pm.WaitAll()
	pm.CloseAll()
}

func TestProxyManager(t *testing.T) {
	t.Parallel()
	srv, c := server(t)
	srv.Serve(80, echo)
	pm := proxy.NewProxyManager()
	var sessions []*proxy.ProxySession
	var conns []net.Conn
	for range 3 {
		ps := proxyPort(t, c, 80)
		conn := dial(t, "tcp4", ps)
		roundTrip(t, conn, "managed")
		pm.AddSession(ps)
		sessions = append(sessions, ps)
		conns = append(conns, conn)
	}
	waited := make(chan struct{})
	go func() {
		pm.WaitAll()
		close(waited)
	}()
	pm.CloseAll()
	<-waited
	for i, ps := range sessions {
		if st := ps.Stats(); st.Active != 0 {
			t.Errorf("session %d: Active = %d after CloseAll", i, st.Active)
		}
		assertClosed(t, conns[i])
	}
}

// TestProxyManagerConcurrent: AddSession, CloseAll and WaitAll at once.
func TestProxyManagerConcurrent(t *testing.T) {
	t.Parallel()
	srv, c := server(t)
	srv.Serve(80, echo)
	pm := proxy.NewProxyManager()
	var adders, waiters sync.WaitGroup
	for i := range 8 {
		adders.Go(func() {
			ps, err := c.ProxyPort(t.Context(), testSprite, 0, 80)
			if err != nil {
				t.Error(err)
				return
			}
			pm.AddSession(ps)
			if i%2 == 0 {
				pm.CloseAll()
			} else {
				waiters.Go(pm.WaitAll)
			}
		})
	}
	adders.Wait()
	pm.CloseAll()
	waiters.Wait()
}
