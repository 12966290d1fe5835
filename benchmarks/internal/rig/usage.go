package rig

import (
	"runtime"
	"runtime/debug"
)

// Mem is the process's memory at one moment.
type Mem struct {
	HeapAlloc  uint64 // bytes of live heap objects after a GC
	StackInuse uint64 // bytes of goroutine stacks
	RSS        uint64 // resident set size (VmRSS), 0 where unknown
	Goroutines int
}

// ReadMem collects garbage (twice, so that sync.Pool's victims go too),
// returns freed memory to the OS, and reads the heap, the stacks, the
// goroutine count and the resident set.
func ReadMem() Mem {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Mem{HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse, RSS: rss(), Goroutines: runtime.NumGoroutine()}
}

// Mallocs returns the number of heap objects allocated so far, by every
// goroutine of the process. It stops the world briefly.
func Mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}
