package benchmarks

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
)

// setupPaths are the rows of BenchmarkSetup.
var setupPaths = []path{pathTCP, pathRefSocket, pathSocketWS, pathSocketWSHTTP, pathSocketWSS, pathSocketWSFresh, pathSocketWSSFresh}

// BenchmarkSetup opens connections one after another: one op is a dial (a
// tunnel's handshakes included), a 1-byte echo from the target, and a
// Close. It reports conns/s and the process's CPU microseconds per
// connection (client, server and target together).
func BenchmarkSetup(b *testing.B) {
	for _, p := range setupPaths {
		b.Run(p.name, func(b *testing.B) { setup(b, p) })
	}
}

func setup(b *testing.B, p path) {
	fx := p.setup(b, rig.Echo)
	defer fx.Close()
	ctx := context.Background()
	one, got := []byte{'x'}, make([]byte, 1)
	b.ReportAllocs()
	cpu := rig.CPUTime()
	b.ResetTimer()
	for i := range b.N {
		c, err := fx.open(ctx)
		fx.check(b, err)
		one[0] = byte(i)
		if _, err := c.Write(one); err != nil {
			c.Close()
			fx.check(b, err)
		}
		if _, err := io.ReadFull(c, got); err != nil || got[0] != one[0] {
			c.Close()
			fx.check(b, fmt.Errorf("echo: got %q, %v; want %q", got, err, one))
		}
		c.Close()
	}
	b.StopTimer()
	used := rig.CPUTime() - cpu
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-us/conn")
}
