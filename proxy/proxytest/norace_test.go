//go:build !race

package proxytest

// streamSize is what each direction of the resume tests' bulk transfers
// carries (race_test.go has less, for the race detector).
const streamSize = 64 << 20
