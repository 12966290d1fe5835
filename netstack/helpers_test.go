package netstack_test

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"github.com/spriteproxy/spriteproxy/netstack"
)

// newNetwork returns a Network closed when the test ends.
func newNetwork(t testing.TB) *netstack.Network {
	t.Helper()
	n := netstack.NewNetwork(nil)
	t.Cleanup(func() { n.Close() })
	return n
}

func newHost(t testing.TB, n *netstack.Network, name string) *netstack.Host {
	t.Helper()
	h, err := n.NewHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func listen(t testing.TB, h *netstack.Host, network, addr string) net.Listener {
	t.Helper()
	l, err := h.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs handle for each conn accepted on l (testnet.Serve: conns
// closed after, everything torn down when the test ends).
func serve(t testing.TB, l net.Listener, handle func(net.Conn)) {
	testnet.Serve(t, l, handle)
}

// echo copies what it reads back until EOF, then half-closes.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(interface{ CloseWrite() error }).CloseWrite()
}

// port returns l's port.
func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// stream is n pseudo-random bytes from seed, fast to make and to check.
func stream(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
}

// digest is the SHA-256 of what r yields, and how many bytes it yielded.
func digest(r io.Reader) ([sha256.Size]byte, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 64<<10))
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}
