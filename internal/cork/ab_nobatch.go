//go:build cork_nobatch

package cork

const batchReads = false
