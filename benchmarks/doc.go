// Package benchmarks measures spriteproxy against the machine's own limit
// (loopback TCP, and a plain TCP relay) and against the reference Sprites
// SDK's way of building a tunnel (package internal/reference), in one run,
// so that every figure has its baseline beside it:
//
//	go test -run '^$' -bench . ./benchmarks/
//
// BenchmarkBulk moves one stream's bytes one way, in 1 KiB, 32 KiB and 1 MiB
// writes, over each path; BenchmarkParallel does the same with 8 and 64
// streams at once; BenchmarkSetup dials, echoes one byte and closes;
// BenchmarkIdleTunnel holds idle tunnels open in a client process and a
// server process of their own and weighs each; BenchmarkWAN times the
// first echoed byte of a tunnel and bulk throughput across a netstack link
// with a chosen RTT and loss, and (its hol and open16 rows) an echo beside
// a bulk stream and 16 concurrent opens, on a connection each or as
// streams of one multiplexed connection (package internal/mux). The
// throughput rows report CPU seconds per GiB moved (getrusage) beside
// bytes per second. The tunnels of spriteproxy's own run with the resume
// extension off (the benchmark server does not grant it) but on the paths
// named -resume, each measured right after its twin without it.
//
// go run ./benchmarks/cmd/report runs the set with repetitions and prints
// the table of medians, ratios and the targets of issues #6 and #16; README.md
// explains every row.
package benchmarks
