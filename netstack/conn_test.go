package netstack_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/spriteproxy/spriteproxy/netstack"
	"golang.org/x/net/nettest"
)

// makePipe returns a nettest.MakePipe whose conns are dialed from host
// "client" to laddr on host "server" (the same host if both names match).
func makePipe(network, laddr, dialHost string, sameHost bool) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		n := netstack.NewNetwork(nil)
		defer func() {
			if err != nil {
				n.Close()
			}
		}()
		server, err := n.NewHost("server")
		if err != nil {
			return nil, nil, nil, err
		}
		client := server
		if !sameHost {
			if client, err = n.NewHost("client"); err != nil {
				return nil, nil, nil, err
			}
		}
		l, err := server.Listen(network, laddr)
		if err != nil {
			return nil, nil, nil, err
		}
		defer l.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := l.Accept()
			accepted <- c
		}()
		c1, err = client.Dial(network, net.JoinHostPort(dialHost, fmt.Sprint(port(l))))
		if err != nil {
			return nil, nil, nil, err
		}
		c2 = <-accepted
		if c2 == nil {
			c1.Close()
			return nil, nil, nil, fmt.Errorf("accept failed")
		}
		stop = func() {
			c1.Close()
			c2.Close()
			n.Close()
		}
		return c1, c2, stop, nil
	}
}

func TestConn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, network, laddr, dialHost string
		sameHost                       bool
	}{
		{"HostToHost", "tcp", ":0", "server", false},
		{"HostToHostIPv6", "tcp6", ":0", "server", false},
		{"LoopbackIPv4", "tcp", "127.0.0.1:0", "127.0.0.1", true},
		{"LoopbackIPv6", "tcp", "[::1]:0", "::1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nettest.TestConn(t, makePipe(tc.network, tc.laddr, tc.dialHost, tc.sameHost))
		})
	}
}
