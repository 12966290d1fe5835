//go:build unix

package rig

import (
	"syscall"
	"time"
)

// CPUTime returns the user plus system CPU time this process has used, all
// threads together (getrusage RUSAGE_SELF).
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
