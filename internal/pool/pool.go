// Package pool holds the byte buffers that data is copied through.
//
// A buffer is borrowed only while data moves and returned as soon as a copy
// step ends, so that an idle tunnel holds none. Every buffer has Headroom
// spare bytes in front of Size payload bytes, so that a WebSocket frame
// header can be written in front of data read straight into it and the frame
// leaves in one write.
package pool

import "sync"

const (
	// Size is the payload capacity of a buffer: the largest frame a copy
	// loop sends, and the most it asks one Read for.
	Size = 256 << 10
	// Headroom is the room in front of the payload: the largest WebSocket
	// frame header (2 + 8 length + 4 mask bytes).
	Headroom = 14
)

var buffers = sync.Pool{New: func() any {
	b := make([]byte, Headroom+Size)
	return &b
}}

// Get borrows a buffer of len Headroom+Size.
func Get() *[]byte { return buffers.Get().(*[]byte) }

// Put returns a buffer that Get gave; b must not be used afterwards.
func Put(b *[]byte) { buffers.Put(b) }
