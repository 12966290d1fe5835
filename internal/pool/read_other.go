//go:build !unix

package pool

import "io"

// readPolled has no fast path off Unix: Windows sockets complete reads into
// a buffer handed over before the wait (overlapped I/O), so there is no way
// to wait for readiness without one. Read borrows its buffer for the whole
// read instead.
func readPolled(io.Reader) (bp *[]byte, n int, ok bool, err error) {
	return nil, 0, false, nil
}
