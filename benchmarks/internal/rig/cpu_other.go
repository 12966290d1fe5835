//go:build !unix

package rig

import "time"

// CPUTime is unknown here: getrusage is a Unix call.
func CPUTime() time.Duration { return 0 }
