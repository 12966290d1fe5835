package wire

import (
	"errors"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// TestParseReplyGrace: a grace_ms that is negative, or too large for a
// time.Duration (the client multiplies it by time.Millisecond, which
// overflowed into an arbitrary grace), is a bad reply; ParseReply used to
// accept both.
func TestParseReplyGrace(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`{"status":"connected","features":["half_close","resume"],"resume":"t","grace_ms":-1}`,
		`{"status":"resumed","resume":"t","received":0,"grace_ms":-60000}`,
		`{"status":"connected","features":["half_close","resume"],"resume":"t","grace_ms":9223372036854776}`,
	} {
		if rep, err := ParseReply([]byte(s)); !errors.Is(err, dialer.ErrTunnelClosed) {
			t.Errorf("ParseReply(%s) = %+v, %v; want an error matching ErrTunnelClosed", s, rep, err)
		}
	}
	max := int64(1<<63-1) / int64(time.Millisecond)
	for _, ms := range []int64{0, 60000, max} {
		rep, err := ParseReply(Marshal(Reply{Status: StatusConnected, Resume: "t", GraceMS: ms}))
		if err != nil || rep.GraceMS != ms {
			t.Errorf("grace_ms %d: %+v, %v", ms, rep, err)
		}
		if d := time.Duration(rep.GraceMS) * time.Millisecond; d < 0 {
			t.Errorf("grace_ms %d overflows: %v", ms, d)
		}
	}
}
