//go:build !unix

package main

import "time"

// childrenCPU is unknown here.
func childrenCPU() time.Duration { return 0 }
