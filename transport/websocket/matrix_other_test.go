//go:build !linux

package websocket

// canCountSockets says whether caseSockets works here: it reads
// /proc/self/fd, which only linux has.
const canCountSockets = false

func caseSockets([]int) (int, error) { return 0, nil }
