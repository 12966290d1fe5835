package websocket

import (
	"crypto/tls"
	"io"
	"testing"
)

// TestWSSSessionResumed: a fresh wss connection after the first resumes
// the TLS session (the Dialer keeps a session cache when its TLSConfig has
// none, and the server issues tickets), on both serving paths.
func TestWSSSessionResumed(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ts := startServerMode(t, newServer(), true, m.direct)
			tg := startTarget(t, echo)
			d := ts.dialer()
			d.DisableReuse = true // every tunnel a connection of its own
			if ts.ClientTLS.ClientSessionCache != nil {
				t.Fatal("the test's TLS config must leave the cache to the Dialer")
			}
			for i, want := range []bool{false, true, true} {
				nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				// A round trip on the tunnel, so that the server's ticket
				// (sent after the handshake) has been read.
				if _, err := nc.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(nc, make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				st := nc.(*Conn).NetConn().(*tls.Conn).ConnectionState()
				if st.DidResume != want {
					t.Errorf("connection %d: DidResume %v, want %v", i, st.DidResume, want)
				}
				nc.Close()
			}
		})
	}
}
