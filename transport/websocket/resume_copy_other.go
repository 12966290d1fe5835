//go:build !unix

package websocket

import "io"

// isSocket is false off Unix: CopyFrom reads every source with Read.
func isSocket(io.Reader) bool { return false }

// fillPolled is not used off Unix (isSocket is false).
func (r *ResumableConn) fillPolled(io.Reader) (filled, bool) {
	panic("websocket: fillPolled off Unix")
}
