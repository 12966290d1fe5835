//go:build !linux

package pump

// wasReset is known only on Linux, where a reset can be reported to
// another call than the read that then sees end of stream.
func wasReset(any) bool { return false }
