package netstack_test

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// TestDialer checks Network.Dialer: sprite names are hosts, addresses are
// dialed from inside them, and errors match the dialer sentinels.
func TestDialer(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	db := newHost(t, n, "db")
	l := listen(t, db, "tcp", "127.0.0.1:5432")
	serve(t, l, func(c net.Conn) { c.Write([]byte("db here")) })

	d := n.Dialer()
	ctx := context.Background()
	c, err := d.DialSprite(ctx, "db", "tcp", "localhost:5432")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "db here" {
		t.Errorf("got %q", got)
	}
	if _, ok := c.(dialer.HalfCloser); !ok {
		t.Error("conn is not a dialer.HalfCloser")
	}

	for _, tc := range []struct {
		sprite, network, address string
		want                     []error
	}{
		{"nope", "tcp", "localhost:5432", []error{dialer.ErrUnknownSprite}},
		{"db", "tcp", "localhost:5433", []error{dialer.ErrTargetRefused, syscall.ECONNREFUSED}},
		{"db", "tcp", "nowhere:5432", []error{dialer.ErrTargetUnreachable}},
		{"db", "tcp", "10.99.200.200:5432", []error{dialer.ErrTargetUnreachable, syscall.EHOSTUNREACH}},
		{"db", "tcp", "localhost", []error{dialer.ErrBadAddress}},
		{"db", "tcp", "localhost:0", []error{dialer.ErrBadAddress}},
		{"db", "tcp", "bad host:1", []error{dialer.ErrBadAddress}},
		{"db", "udp", "localhost:5432", []error{dialer.ErrUnsupportedNetwork}},
	} {
		_, err := d.DialSprite(ctx, tc.sprite, tc.network, tc.address)
		for _, want := range tc.want {
			if !errors.Is(err, want) {
				t.Errorf("DialSprite(%s, %s, %s) = %v, want it to match %v", tc.sprite, tc.network, tc.address, err, want)
			}
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.Errorf("DialSprite(%s, %s, %s): %#v is not a dial *net.OpError", tc.sprite, tc.network, tc.address, err)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.DialSprite(cctx, "db", "tcp", "localhost:5432"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// TestResolveSprite checks the server-side lookup of a sprite's host.
func TestResolveSprite(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	db := newHost(t, n, "db")
	cd, err := n.ResolveSprite(context.Background(), "db")
	if err != nil || cd != dialer.ContextDialer(db) {
		t.Errorf("ResolveSprite(db) = %v, %v", cd, err)
	}
	if _, err := n.ResolveSprite(context.Background(), "nope"); !errors.Is(err, dialer.ErrUnknownSprite) {
		t.Errorf("ResolveSprite(nope): %v", err)
	}
}
