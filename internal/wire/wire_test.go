package wire

import (
	"errors"
	"strings"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

func TestParseRequest(t *testing.T) {
	t.Parallel()
	good := map[string]Request{
		`{"host":"127.0.0.1","port":34189}` + "\n":                   {Host: "127.0.0.1", Port: 34189},
		`{"host":"localhost","port":5432,"features":["half_close"]}`: {Host: "localhost", Port: 5432, Features: []string{"half_close"}},
		`{"host":"fdf::1","port":1,"x":{"y":[1]}}`:                   {Host: "fdf::1", Port: 1},
	}
	for in, want := range good {
		got, err := ParseRequest([]byte(in))
		if err != nil || got.Host != want.Host || got.Port != want.Port || len(got.Features) != len(want.Features) {
			t.Errorf("ParseRequest(%s) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := []string{``, `null`, `[]`, `"x"`, `{"host":"h","port":0}`, `{"host":"h","port":-1}`,
		`{"host":"h","port":65536}`, `{"host":"h","port":"80"}`, `{"host":"h","port":80.5}`,
		`{"host":"","port":80}`, `{"port":80}`, `{"host":"a b","port":80}`,
		`{"host":"` + strings.Repeat("a", 254) + `","port":80}`, `{"host":"h","port":80`,
		`{"host":"h","port":80,"pad":"` + strings.Repeat("x", MaxHandshakeMessage) + `"}`}
	for _, in := range bad {
		if _, err := ParseRequest([]byte(in)); !errors.Is(err, dialer.ErrBadRequest) {
			t.Errorf("ParseRequest(%.60s) = %v, want ErrBadRequest", in, err)
		}
	}
}

func TestParseReply(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`{"status":"connected","target":"127.0.0.1:1"}`, `{"status":"connected"}` + "\n", `{"status":"error","error":"timeout","message":"m"}`} {
		if _, err := ParseReply([]byte(in)); err != nil {
			t.Errorf("ParseReply(%s): %v", in, err)
		}
	}
	for _, in := range []string{``, `nope`, `{"status":"maybe"}`, `{}`, `[1]`} {
		if _, err := ParseReply([]byte(in)); !errors.Is(err, dialer.ErrTunnelClosed) {
			t.Errorf("ParseReply(%s) = %v, want ErrTunnelClosed", in, err)
		}
	}
}

func TestMarshalMatchesSDK(t *testing.T) {
	t.Parallel()
	// The SDK's first message, byte for byte (shared/testdata transcript).
	got := string(Marshal(Request{Host: "127.0.0.1", Port: 34189}))
	if want := `{"host":"127.0.0.1","port":34189}` + "\n"; got != want {
		t.Fatalf("Marshal = %q, want %q", got, want)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"host":"127.0.0.1","port":34189}` + "\n", `{"host":"h","port":"80"}`, `{"host":"","port":0}`, `{"features":["half_close"],"host":"::1","port":1}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseRequest(b)
		if err != nil {
			if !errors.Is(err, dialer.ErrBadRequest) {
				t.Fatalf("error %v does not match ErrBadRequest", err)
			}
			return
		}
		if req.Port < 1 || req.Port > 65535 || dialer.CheckHost(req.Host) != nil {
			t.Fatalf("accepted a bad request %+v", req)
		}
	})
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{`{"status":"connected","target":"127.0.0.1:34189"}` + "\n", `{"status":"error","error":"connection_refused","message":"x"}`, `{"status":1}`, `]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := ParseReply(b)
		if err != nil {
			if !errors.Is(err, dialer.ErrTunnelClosed) {
				t.Fatalf("error %v does not match ErrTunnelClosed", err)
			}
			return
		}
		if rep.Status != StatusConnected && rep.Status != StatusError {
			t.Fatalf("accepted status %q", rep.Status)
		}
	})
}
