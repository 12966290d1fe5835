package benchmarks

import (
	"testing"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
)

// bulkPaths are the rows of BenchmarkBulk, baselines first.
var bulkPaths = allPaths

// bulkSizes are the write sizes of the sweep.
var bulkSizes = []int{1 << 10, 32 << 10, 1 << 20}

// BenchmarkBulk moves one stream's bytes one way, writer to target, in
// writes of each size: one op is one Write. The time runs from the first
// timed Write to the target's end of stream, so nothing left in buffers
// counts as moved. allocs/op is every allocation of the process (client,
// server and target) per Write, setup and teardown of the stream included;
// allocs/msg is the same in steady state only (from the first timed Write
// to the last, as a fraction); cpu-s/GiB is the process's CPU time
// (getrusage) per GiB moved.
func BenchmarkBulk(b *testing.B) {
	for _, p := range bulkPaths {
		for _, size := range bulkSizes {
			b.Run(p.name+"/"+sizeName(size), func(b *testing.B) { bulk(b, p, size) })
		}
	}
}

func bulk(b *testing.B, p path, size int) {
	fx := p.setup(b, nil)
	defer fx.Close()
	s, err := openStream(fx, size)
	fx.check(b, err)
	buf := rig.Payload()[:size]
	b.SetBytes(int64(size))
	b.ReportAllocs()
	cpu := rig.CPUTime()
	b.ResetTimer()
	mallocs := rig.Mallocs()
	for range b.N {
		if _, err := s.w.Write(buf); err != nil {
			s.abort()
			fx.check(b, err)
		}
	}
	mallocs = rig.Mallocs() - mallocs
	err = s.finish(int64(b.N) * int64(size))
	b.StopTimer()
	fx.check(b, err)
	reportCPU(b, rig.CPUTime()-cpu, int64(b.N)*int64(size))
	b.ReportMetric(float64(mallocs)/float64(b.N), "allocs/msg")
}
