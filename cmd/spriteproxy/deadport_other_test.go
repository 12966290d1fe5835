//go:build !unix

package main

import "testing"

// deadPort returns a loopback port that nothing listens on now (a port
// picked and released: without a bound socket to hold it, a parallel test
// could take it meanwhile).
func deadPort(t *testing.T) int { return freePort(t) }
