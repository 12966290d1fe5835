//go:build unix

package main

import (
	"syscall"
	"time"
)

// childrenCPU is the CPU time used by the processes this one has waited
// for, and their descendants (getrusage RUSAGE_CHILDREN).
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
