package dialer_test

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// A Func plugs any function in as a Dialer, here one that reaches nothing
// but says so the way every transport does.
func ExampleFunc() {
	var d dialer.Dialer = dialer.Func(func(ctx context.Context, sprite, network, address string) (net.Conn, error) {
		if _, _, err := dialer.SplitAddress(network, address); err != nil {
			return nil, dialer.OpError(network, sprite, address, err)
		}
		return nil, dialer.OpError(network, sprite, address, &dialer.TargetError{Code: dialer.CodeConnectionRefused})
	})

	_, err := d.DialSprite(context.Background(), "db", "tcp", "localhost:5432")
	fmt.Println(err)
	fmt.Println(errors.Is(err, dialer.ErrTargetRefused))

	_, err = d.DialSprite(context.Background(), "db", "udp", "localhost:53")
	fmt.Println(errors.Is(err, dialer.ErrUnsupportedNetwork))
	// Output:
	// dial tcp db/localhost:5432: connection refused by target
	// true
	// true
}
