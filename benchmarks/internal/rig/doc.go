// Package rig holds what the benchmarks of package benchmarks share with
// the helper processes they start: the tunnel servers under test (ours and
// the reference), target services on loopback, the payload and its
// checksum, and the process's CPU time and memory as the kernel and the Go
// runtime report them.
package rig
