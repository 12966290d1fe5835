package benchmarks

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
)

// TestWANPaths runs every WAN path once over a 10 ms link: a tunnel
// echoes a byte, a fresh row costs the server a connection and a reused
// one none, and a bulk stream arrives whole through 1 % loss.
func TestWANPaths(t *testing.T) {
	t.Parallel()
	for _, p := range wanFirstBytePaths {
		modes := []bool{false}
		if p.reuse && p.name != "tcp" {
			modes = append(modes, true)
		}
		for _, reused := range modes {
			t.Run(fmt.Sprintf("%s/reused=%v", p.name, reused), func(t *testing.T) {
				t.Parallel()
				w := newWAN(t, 10*time.Millisecond, 0, rig.Echo)
				defer w.Close()
				open := p.build(t, w, reused)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				conns := []int64{}
				for i := range 3 {
					before := w.accepts.Load()
					c, err := open(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if err := echoByte(c, byte(i)); err != nil {
						c.Close()
						t.Fatal(err)
					}
					c.Close()
					w.settle(t)
					conns = append(conns, w.accepts.Load()-before)
				}
				switch {
				case p.name == "tcp":
				case p.name[:4] == "ref-":
					// The /control probe and /proxy, each on its own connection.
					for _, n := range conns {
						if n != 2 {
							t.Errorf("server connections per tunnel %v, want 2 each", conns)
						}
					}
				case reused:
					if conns[0] != 1 || conns[1] != 0 || conns[2] != 0 {
						t.Errorf("server connections per tunnel %v, want [1 0 0]", conns)
					}
				default:
					for _, n := range conns {
						if n != 1 {
							t.Errorf("server connections per tunnel %v, want 1 each", conns)
						}
					}
				}
			})
		}
	}
	for _, p := range []wanPath{wanTCP, wanSocketWS, wanPortWS} {
		t.Run("bulk/"+p.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan int64, 1)
			w := newWAN(t, 10*time.Millisecond, 0.01, func(c net.Conn) {
				n, _ := io.Copy(io.Discard, c)
				got <- n
			})
			defer w.Close()
			c, err := p.build(t, w, true)(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const size = 256 << 10
			if _, err := c.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			select {
			case n := <-got:
				if n != size {
					t.Fatalf("target read %d bytes, want %d", n, size)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the stream did not end within 30 s")
			}
			// The stream must have met the loss it is meant to survive. It
			// cannot miss it by chance: the client sends some 180 packets
			// or more, and Seed 1's draws on its way out drop the 58th.
			if lost := w.client.FaultStats().Lost; lost == 0 {
				t.Error("FaultStats().Lost = 0: the 1 % loss was not applied")
			}
		})
	}
}
