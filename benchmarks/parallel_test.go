package benchmarks

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
)

// parallelPaths are the rows of BenchmarkParallel.
var parallelPaths = []path{pathTCP, pathRefSocket, pathSocketWS}

// parallelSize is the write size of BenchmarkParallel.
const parallelSize = 32 << 10

// BenchmarkParallel moves bytes over 8 and over 64 streams at once, each
// written by its own goroutine in 32 KiB writes: one op is one Write on any
// stream, so MB/s is the aggregate. The time runs until every stream's end
// has reached its target.
func BenchmarkParallel(b *testing.B) {
	for _, p := range parallelPaths {
		for _, k := range []int{8, 64} {
			b.Run(fmt.Sprintf("%s/%dstreams", p.name, k), func(b *testing.B) { parallel(b, p, k) })
		}
	}
}

func parallel(b *testing.B, p path, k int) {
	fx := p.setup(b, nil)
	defer fx.Close()
	streams := make([]*stream, 0, k)
	for range k {
		s, err := openStream(fx, parallelSize)
		if err != nil {
			for _, s := range streams {
				s.abort()
			}
			fx.check(b, err)
		}
		streams = append(streams, s)
	}
	buf := rig.Payload()[:parallelSize]
	b.SetBytes(parallelSize)
	b.ReportAllocs()
	cpu := rig.CPUTime()
	b.ResetTimer()
	var left atomic.Int64
	left.Store(int64(b.N))
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			for left.Add(-1) >= 0 {
				if _, err := s.w.Write(buf); err != nil {
					errs[i] = err
					s.abort()
					return
				}
				n++
			}
			errs[i] = s.finish(n * parallelSize)
		}()
	}
	wg.Wait()
	b.StopTimer()
	fx.check(b, errors.Join(errs...))
	reportCPU(b, rig.CPUTime()-cpu, int64(b.N)*parallelSize)
}
