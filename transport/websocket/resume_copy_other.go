//go:build !unix

package websocket

import (
	"io"
	"syscall"
)

// rawReadConn is nil off Unix: CopyFrom reads every source with Read.
func rawReadConn(io.Reader) syscall.RawConn { return nil }

// fillPolled is not used off Unix (rawReadConn is nil).
func (r *ResumableConn) fillPolled(io.Reader, syscall.RawConn) (filled, bool) {
	panic("websocket: fillPolled without a raw conn")
}
