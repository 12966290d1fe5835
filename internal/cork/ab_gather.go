//go:build !cork_nogather

package cork

// gatherWrites turns write gathering on; build with -tags cork_nogather for
// the A/B measurement without it (Begin and End then only keep the
// deadline rules, and each record goes out with a write of its own).
const gatherWrites = true
