package rig

import (
	"hash/crc32"
	"math/rand/v2"
	"sync"
)

// PrefixSize is how many bytes each stream sends, before it is timed, that
// the receiving end checks against a checksum.
const PrefixSize = 2 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var payload = sync.OnceValues(func() ([]byte, uint32) {
	p := make([]byte, PrefixSize)
	r := rand.New(rand.NewPCG(6, 6))
	for i := 0; i+8 <= len(p); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return p, crc32.Checksum(p, castagnoli)
})

// Payload returns PrefixSize deterministic pseudo-random bytes, shared:
// callers must not change them. Streams send all of it as their checked
// prefix, then slices of it as the timed payload.
func Payload() []byte {
	p, _ := payload()
	return p
}

// PrefixSum is the CRC-32C of Payload.
func PrefixSum() uint32 {
	_, s := payload()
	return s
}

// Checksum is the CRC-32C used to check a prefix: update it with Update.
type Checksum struct{ sum uint32 }

// Update adds p to the checksum.
func (c *Checksum) Update(p []byte) { c.sum = crc32.Update(c.sum, castagnoli, p) }

// Sum returns the checksum of everything added.
func (c *Checksum) Sum() uint32 { return c.sum }
