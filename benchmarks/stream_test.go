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

// streamTimeout bounds each wait of a stream, so that a broken path fails
// the benchmark instead of hanging it.
const streamTimeout = 2 * time.Minute

// sinkBufferSize is what the receiving end asks of each Read.
const sinkBufferSize = 256 << 10

// sinkResult is what the receiving end of a stream saw.
type sinkResult struct {
	n        int64 // bytes received
	prefixOK bool  // the first rig.PrefixSize bytes had the expected checksum
	err      error // a read error other than io.EOF
}

// stream is one writer → target stream whose receiving end runs.
type stream struct {
	w     net.Conn
	ready chan struct{} // closed when the prefix has arrived and been checked
	res   chan sinkResult
}

// openStream opens a stream over fx, starts its receiving end, sends the
// checked prefix in writes of size bytes, and waits until it has arrived.
// It is what runs before a benchmark's timer starts.
func openStream(fx *fixture, size int) (*stream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
	defer cancel()
	w, err := fx.open(ctx)
	if err != nil {
		return nil, err
	}
	var r net.Conn
	select {
	case r = <-fx.target.Accepted():
	case <-ctx.Done():
		w.Close()
		return nil, fmt.Errorf("the stream never reached the target: %w", ctx.Err())
	}
	s := &stream{w: w, ready: make(chan struct{}), res: make(chan sinkResult, 1)}
	go drain(r, s.ready, s.res)
	p := rig.Payload()
	for off := 0; off < len(p); off += size {
		if _, err := w.Write(p[off:min(off+size, len(p))]); err != nil {
			w.Close()
			return nil, err
		}
	}
	select {
	case <-s.ready:
		return s, nil
	case res := <-s.res:
		w.Close()
		return nil, fmt.Errorf("the stream ended before its prefix arrived: %d bytes, %v", res.n, res.err)
	case <-ctx.Done():
		w.Close()
		return nil, fmt.Errorf("the prefix never arrived: %w", ctx.Err())
	}
}

// drain reads r to its end, checking the prefix and counting the rest,
// then closes r and sends what it saw.
func drain(r net.Conn, ready chan<- struct{}, res chan<- sinkResult) {
	defer r.Close()
	buf := make([]byte, sinkBufferSize)
	var (
		sum    rig.Checksum
		out    sinkResult
		primed bool
	)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if !primed {
				sum.Update(buf[:min(int64(n), rig.PrefixSize-out.n)])
			}
			out.n += int64(n)
			if !primed && out.n >= rig.PrefixSize {
				primed = true
				out.prefixOK = sum.Sum() == rig.PrefixSum()
				close(ready)
			}
		}
		if err != nil {
			if err != io.EOF {
				out.err = err
			}
			break
		}
	}
	res <- out
}

// finish ends the stream's write side (CloseWrite where the conn has it,
// Close otherwise), waits for the receiving end to see the end of stream,
// and checks that it got the prefix intact and want bytes after it.
func (s *stream) finish(want int64) error {
	defer s.w.Close()
	if cw, ok := s.w.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return err
		}
	} else if err := s.w.Close(); err != nil {
		return err
	}
	timeout := time.NewTimer(streamTimeout)
	defer timeout.Stop()
	select {
	case res := <-s.res:
		switch {
		case res.err != nil:
			return fmt.Errorf("receiving end: %w", res.err)
		case !res.prefixOK:
			return fmt.Errorf("the first %d bytes arrived changed (checksum mismatch)", rig.PrefixSize)
		case res.n != rig.PrefixSize+want:
			return fmt.Errorf("%d bytes arrived, want %d", res.n-rig.PrefixSize, want)
		}
		return nil
	case <-timeout.C:
		return fmt.Errorf("the end of stream never arrived")
	}
}

// abort closes the stream without checks, for error paths.
func (s *stream) abort() {
	s.w.Close()
	select {
	case <-s.res:
	case <-time.After(streamTimeout):
	}
}

// sizeName is 1KiB, 32KiB, 1MiB.
func sizeName(size int) string {
	if size >= 1<<20 {
		return fmt.Sprintf("%dMiB", size>>20)
	}
	return fmt.Sprintf("%dKiB", size>>10)
}

// reportCPU adds cpu-s/GiB for bytes moved in cpu.
func reportCPU(b *testing.B, cpu time.Duration, bytes int64) {
	if bytes > 0 {
		b.ReportMetric(cpu.Seconds()/(float64(bytes)/(1<<30)), "cpu-s/GiB")
	}
}
