package dialer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

func TestSplitAddress(t *testing.T) {
	t.Parallel()
	good := []struct {
		network, addr, host string
		port                int
	}{
		{"tcp", "localhost:5432", "localhost", 5432},
		{"tcp4", "127.0.0.1:1", "127.0.0.1", 1},
		{"tcp6", "[::1]:65535", "::1", 65535},
		{"tcp", "[fdf::1]:80", "fdf::1", 80},
		{"tcp", "db.internal:6379", "db.internal", 6379},
	}
	for _, g := range good {
		h, p, err := SplitAddress(g.network, g.addr)
		if err != nil || h != g.host || p != g.port {
			t.Errorf("SplitAddress(%s, %s) = %s, %d, %v", g.network, g.addr, h, p, err)
		}
	}
	bad := []struct {
		network, addr string
		want          error
	}{
		{"udp", "localhost:53", ErrUnsupportedNetwork},
		{"unix", "/tmp/x", ErrUnsupportedNetwork},
		{"tcp", "localhost", ErrBadAddress},
		{"tcp", "localhost:0", ErrBadAddress},
		{"tcp", "localhost:70000", ErrBadAddress},
		{"tcp", "localhost:-1", ErrBadAddress},
		{"tcp", "localhost:http", ErrBadAddress},
		{"tcp", ":80", ErrBadAddress},
		{"tcp", "a b:80", ErrBadAddress},
		{"tcp", strings.Repeat("a", 254) + ":80", ErrBadAddress},
		{"tcp", "::1:80", ErrBadAddress},
	}
	for _, b := range bad {
		if _, _, err := SplitAddress(b.network, b.addr); !errors.Is(err, b.want) {
			t.Errorf("SplitAddress(%s, %s) = %v, want %v", b.network, b.addr, err, b.want)
		}
	}
}

func TestHostPortAndChecks(t *testing.T) {
	t.Parallel()
	for in, want := range map[[2]string]string{{"", "5432"}: "localhost:5432", {"fdf::1", "1"}: "[fdf::1]:1", {"[::1]", "80"}: "[::1]:80", {"db", "6379"}: "db:6379"} {
		var port int
		fmt.Sscan(in[1], &port)
		if got := HostPort(in[0], port); got != want {
			t.Errorf("HostPort(%q, %d) = %q, want %q", in[0], port, got, want)
		}
	}
	if CheckPort(0, true) != nil || CheckPort(0, false) == nil || CheckPort(65536, true) == nil {
		t.Error("CheckPort's range is wrong")
	}
	for _, ok := range []string{"my-sprite", "a", "A.b_c-9"} {
		if err := CheckSprite(ok); err != nil {
			t.Errorf("CheckSprite(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", "ü", strings.Repeat("x", 256)} {
		if err := CheckSprite(bad); !errors.Is(err, ErrBadAddress) {
			t.Errorf("CheckSprite(%q) = %v, want ErrBadAddress", bad, err)
		}
	}
}

func TestErrorMatching(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]error{401: ErrUnauthorized, 403: ErrForbidden, 404: ErrUnknownSprite, 429: ErrUnavailable, 503: ErrUnavailable, 400: ErrBadRequest} {
		err := OpError("tcp", "s", "localhost:1", &HTTPError{StatusCode: status, Code: "c", Message: "m"})
		if !errors.Is(err, want) {
			t.Errorf("HTTP %d does not match %v", status, want)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" || op.Addr.String() != "s/localhost:1" {
			t.Errorf("HTTP %d: %v is not the dial *net.OpError", status, err)
		}
	}
	if errors.Is(&HTTPError{StatusCode: 500}, ErrUnauthorized) {
		t.Error("500 matches ErrUnauthorized")
	}
	for code, want := range map[string]error{CodeConnectionRefused: ErrTargetRefused, CodeTimeout: ErrTargetTimeout, CodeForbidden: ErrTargetForbidden, CodeUnreachable: ErrTargetUnreachable, CodeBadRequest: ErrBadRequest} {
		err := OpError("tcp", "s", "h:1", &TargetError{Code: code, Message: "why"})
		if !errors.Is(err, want) {
			t.Errorf("code %s does not match %v", code, want)
		}
		if CodeOf(err) != code {
			t.Errorf("CodeOf(%s) = %s", code, CodeOf(err))
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() != (code == CodeTimeout) {
			t.Errorf("code %s: Timeout() = %v", code, ne.Timeout())
		}
	}
	if !errors.Is(&TargetError{Code: "future"}, &TargetError{}) && errors.Is(&TargetError{Code: "future"}, ErrTargetRefused) {
		t.Error("an unknown code matches a sentinel")
	}
	var ne net.Error
	if !errors.As(OpError("tcp", "s", "h:1", ErrTargetTimeout), &ne) || !ne.Timeout() {
		t.Error("ErrTargetTimeout is not a timeout net.Error")
	}
	// Wrapping is idempotent and keeps the cause.
	e1 := OpError("tcp", "s", "h:1", syscall.ECONNREFUSED)
	if OpError("tcp", "s", "h:1", e1) != e1 || !errors.Is(e1, syscall.ECONNREFUSED) {
		t.Error("OpError rewraps or loses the cause")
	}
	if OpError("tcp", "s", "h:1", nil) != nil {
		t.Error("OpError(nil) is not nil")
	}
	if CodeOf(context.DeadlineExceeded) != CodeTimeout || CodeOf(errors.New("x")) != CodeUnreachable {
		t.Error("CodeOf's fallbacks are wrong")
	}
}

func TestFunc(t *testing.T) {
	t.Parallel()
	var got string
	var d Dialer = Func(func(_ context.Context, sprite, network, address string) (net.Conn, error) {
		got = sprite + " " + network + " " + address
		return nil, nil
	})
	d.DialSprite(context.Background(), "s", "tcp", "h:1")
	if got != "s tcp h:1" {
		t.Fatalf("Func passed %q", got)
	}
}
