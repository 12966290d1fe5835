package wire

import "testing"

// TestParseAckOtherSpellings: an ack that begins as AppendAck's does but
// is spelled otherwise (a space before the brace, another field after n)
// is still an ack, as ParseAck's doc says ("any other JSON spelling of an
// ack is decoded"). The fast path used to refuse it outright, and
// read.go's JSON path calls ParseAck again, so such an ack was dropped: a
// peer spelling acks so would never free the sender's buffer.
func TestParseAckOtherSpellings(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]int64{
		`{"type":"ack","n":5 }`:          5,
		`{"type":"ack","n":5,"x":1}`:     5,
		`{"type":"ack","n": 7}`:          7,
		`{"type":"ack","n":12,"n2":"a"}`: 12,
	} {
		if n, ok := ParseAck([]byte(s)); !ok || n != want {
			t.Errorf("ParseAck(%q) = %d, %v; want %d, true", s, n, ok, want)
		}
	}
	// What the fast path refuses must stay refused by the JSON path.
	for _, s := range []string{`{"type":"ack","n":01}`, `{"type":"ack","n":-1}`, `{"type":"ack","n":5}}`,
		`{"type":"ack","n":99999999999999999999}`, `{"type":"ack","n":1e3}`, `{"type":"ack","n":5 ,}`} {
		if n, ok := ParseAck([]byte(s)); ok {
			t.Errorf("ParseAck(%q) = %d, accepted", s, n)
		}
	}
}
