//go:build race

package proxytest

// streamSize is what each direction of the resume tests' bulk transfers
// carries: less under the race detector, which slows netstack's copies
// several times over; .ci/run's tests without -race carry the full 64 MiB.
const streamSize = 16 << 20
