package wire

import (
	"errors"
	"math"
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
	for _, s := range []string{`{"host":"127.0.0.1","port":34189}` + "\n", `{"host":"h","port":"80"}`, `{"host":"","port":0}`, `{"features":["half_close"],"host":"::1","port":1}`, `{`,
		`{"host":"h","port":1,"features":["half_close","resume"],"resume":"abc","received":123}`, `{"host":"h","port":1,"received":5}`, `{"host":"h","port":1,"resume":"t","received":-1}`} {
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
		if req.Received < 0 || req.Received > 0 && req.Resume == "" {
			t.Fatalf("accepted a bad resume %+v", req)
		}
		if req.Port < 1 || req.Port > 65535 || dialer.CheckHost(req.Host) != nil {
			t.Fatalf("accepted a bad request %+v", req)
		}
	})
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{`{"status":"connected","target":"127.0.0.1:34189"}` + "\n", `{"status":"error","error":"connection_refused","message":"x"}`, `{"status":1}`, `]`,
		`{"status":"resumed","received":10,"resume":"tok","grace_ms":60000,"replica":"r1"}`, `{"status":"resumed"}`, `{"status":"resumed","resume":"t","received":-3}`} {
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
		if rep.Status != StatusConnected && rep.Status != StatusError && rep.Status != StatusResumed {
			t.Fatalf("accepted status %q", rep.Status)
		}
		if rep.Status == StatusResumed && (rep.Resume == "" || rep.Received < 0) {
			t.Fatalf("accepted a bad resumed reply %+v", rep)
		}
	})
}

func TestAck(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 1 << 40, math.MaxInt64} {
		b := AppendAck(nil, n)
		if got, ok := ParseAck(b); !ok || got != n {
			t.Errorf("ParseAck(%q) = %d, %v; want %d", b, got, ok, n)
		}
	}
	for _, s := range []string{`{"type":"ack","n":-1}`, `{"type":"ack","n":01}`, `{"type":"ack","n":9223372036854775808}`, `{"type":"ack"}`, `{"type":"eof","n":1}`, `{"type":"ack","n":}`, `{"type":"ack","n":1.5}`} {
		if n, ok := ParseAck([]byte(s)); ok {
			t.Errorf("ParseAck(%q) = %d, accepted", s, n)
		}
	}
	if n, ok := ParseAck([]byte(`{"n":7,"type":"ack"}`)); !ok || n != 7 {
		t.Errorf("another spelling: %d, %v", n, ok)
	}
}

// TestParseAckAllocs: an ack costs no allocation to read. (Not parallel:
// AllocsPerRun may not run beside other tests.)
func TestParseAckAllocs(t *testing.T) {
	b := AppendAck(make([]byte, 0, 64), 12345)
	if a := testing.AllocsPerRun(100, func() { ParseAck(b) }); a != 0 {
		t.Errorf("ParseAck allocates %v times", a)
	}
}

func FuzzParseAck(f *testing.F) {
	for _, s := range []string{`{"type":"ack","n":0}`, `{"type":"ack","n":18446744073709551615}`, `{"n":3,"type":"ack"}`, `{"type":"ack","n":"1"}`, `{"type":"ack","n":1}` + "\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := ParseAck(b)
		if !ok {
			return
		}
		if n < 0 {
			t.Fatalf("accepted a negative count %d", n)
		}
		if m, ok := ParseAck(AppendAck(nil, n)); !ok || m != n {
			t.Fatalf("round trip of %d: %d, %v", n, m, ok)
		}
	})
}
