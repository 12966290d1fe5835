//go:build cork_nogather

package cork

const gatherWrites = false
