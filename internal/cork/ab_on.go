//go:build !cork_nobatch

package cork

// batchReads turns read batching on; build with -tags cork_nobatch for the
// A/B measurement without it.
const batchReads = true
