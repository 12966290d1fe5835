// Package wire holds the JSON messages of the Sprites v1 proxy protocol (see
// PROTOCOL.md at the repository root): the client's first message, the
// server's reply, and the control messages of the extensions.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// FeatureHalfClose is the extension that carries TCP half-close as
// {"type":"eof"}.
const FeatureHalfClose = "half_close"

// FeatureEarlyData is the extension by which a server takes the client's
// first message in the same write as the upgrade request. The server
// announces it in the upgrade response's ServerFeaturesHeader; a client
// that saw it there sends the first message early on its next tunnels.
const FeatureEarlyData = "early_data"

// FeatureRawStream is the extension by which, once the server has replied
// "connected", the connection carries the byte stream with no WebSocket
// framing, as after an HTTP CONNECT. A server offers it only when told
// that nothing between it and its clients inspects WebSocket frames.
const FeatureRawStream = "raw_stream"

// FeatureReuse is the extension by which a connection outlives its stream:
// each side ends the stream with {"type":"end"} instead of a close frame,
// and once both have, the client may send the handshake of a new stream on
// the same connection. It needs half_close, and does not combine with
// raw_stream (a raw stream ends with the connection).
const FeatureReuse = "reuse"

// FeatureResume is the extension by which a tunnel outlives its
// connection: both sides number the bytes of the stream, acknowledge what
// they received ({"type":"ack","n":N}) and keep what the peer has not
// acknowledged, so that a client whose connection dropped can carry the
// tunnel on over a new one (a first message with Resume and Received).
// It needs half_close, and does not combine with raw_stream or optimistic.
const FeatureResume = "resume"

// ReplicaHeader is the upgrade request header by which a resuming client
// names the server replica that holds its tunnel (Reply.Replica).
const ReplicaHeader = "Sprite-Replica"

// ServerFeaturesHeader is the upgrade response header in which a server
// lists the extensions of the upgrade itself (comma-separated).
const ServerFeaturesHeader = "Sprite-Server-Features"

// MaxHandshakeMessage caps the first message and the reply; a peer that
// sends more is refused.
const MaxHandshakeMessage = 4 << 10

// Reply statuses.
const (
	StatusConnected = "connected"
	StatusError     = "error"
	// StatusResumed answers a first message with Resume: the tunnel is
	// carried on over this connection from Reply.Received.
	StatusResumed = "resumed"
)

// ControlEOF is the control message type that means "the sender will write
// no more".
const ControlEOF = "eof"

// ControlEnd is the control message type of the reuse extension: "the
// sender is done with this stream both ways and sends nothing more on it".
const ControlEnd = "end"

// ControlAck is the control message type of the resume extension:
// {"type":"ack","n":N}, N the data bytes of the stream the sender has
// received in all (cumulative).
const ControlAck = "ack"

// Request is the client's first message.
type Request struct {
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	Features []string `json:"features,omitempty"`
	// Resume, with the resume extension, asks to carry on the tunnel of
	// that token instead of opening a new one; Received is then the data
	// bytes of the stream the client has received.
	Resume   string `json:"resume,omitempty"`
	Received int64  `json:"received,omitempty"`
	// Buffer, with the resume extension, is the most the client keeps of
	// what it sent and the server has not acknowledged, in bytes; the
	// server acknowledges before that fills (0: not said).
	Buffer int64 `json:"resume_buffer,omitempty"`
}

// Reply is the server's answer to a Request.
type Reply struct {
	Status   string   `json:"status"`
	Target   string   `json:"target,omitempty"`
	Error    string   `json:"error,omitempty"`
	Message  string   `json:"message,omitempty"`
	Features []string `json:"features,omitempty"`
	// With the resume extension: the token to resume the tunnel with, how
	// long (ms) the server waits for a resume after a drop, the replica
	// that holds the tunnel, and (in a resumed reply) the data bytes of the
	// stream the server has received.
	Resume   string `json:"resume,omitempty"`
	GraceMS  int64  `json:"grace_ms,omitempty"`
	Replica  string `json:"replica,omitempty"`
	Received int64  `json:"received,omitempty"`
	// Buffer is the server's Request.Buffer: the most it keeps unacknowledged.
	Buffer int64 `json:"resume_buffer,omitempty"`
}

// Control is a text message after the handshake.
type Control struct {
	Type string `json:"type"`
}

// ErrorBody is the JSON body of an HTTP refusal.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// ParseRequest decodes and checks a client's first message. Unknown fields
// are ignored; a port that is not an integer in 1-65535, or a host that is
// empty, too long or not a host, gives an error matching dialer.ErrBadRequest
// (and dialer.ErrBadAddress for the address checks).
func ParseRequest(b []byte) (Request, error) {
	var req Request
	if len(b) > MaxHandshakeMessage {
		return req, fmt.Errorf("%w: first message is %d bytes, over %d", dialer.ErrBadRequest, len(b), MaxHandshakeMessage)
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return req, fmt.Errorf("%w: first message is not the expected JSON: %v", dialer.ErrBadRequest, err)
	}
	if req.Buffer < 0 {
		return req, fmt.Errorf("%w: resume_buffer %d is negative", dialer.ErrBadRequest, req.Buffer)
	}
	if req.Received < 0 || req.Received > 0 && req.Resume == "" {
		return req, fmt.Errorf("%w: received %d without a resume token, or negative", dialer.ErrBadRequest, req.Received)
	}
	if err := dialer.CheckPort(req.Port, false); err != nil {
		return req, fmt.Errorf("%w: %w", dialer.ErrBadRequest, err)
	}
	if err := dialer.CheckHost(req.Host); err != nil {
		return req, fmt.Errorf("%w: %w", dialer.ErrBadRequest, err)
	}
	return req, nil
}

// ParseReply decodes a server's reply. Trailing white space (the newline a
// JSON encoder writes) is allowed; anything that is not a reply object is an
// error matching dialer.ErrTunnelClosed.
func ParseReply(b []byte) (Reply, error) {
	var rep Reply
	if len(b) > MaxHandshakeMessage {
		return rep, fmt.Errorf("%w: reply is %d bytes, over %d", dialer.ErrTunnelClosed, len(b), MaxHandshakeMessage)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("%w: reply is not the expected JSON: %v", dialer.ErrTunnelClosed, err)
	}
	switch rep.Status {
	case StatusConnected, StatusError:
	case StatusResumed:
		if rep.Resume == "" || rep.Received < 0 {
			return rep, fmt.Errorf("%w: resumed reply without a token or with a negative count", dialer.ErrTunnelClosed)
		}
	default:
		return rep, fmt.Errorf("%w: reply has unknown status %q", dialer.ErrTunnelClosed, rep.Status)
	}
	if rep.Buffer < 0 {
		return rep, fmt.Errorf("%w: reply has resume_buffer %d, negative", dialer.ErrTunnelClosed, rep.Buffer)
	}
	if rep.GraceMS < 0 || rep.GraceMS > maxGraceMS {
		return rep, fmt.Errorf("%w: reply has grace_ms %d, outside 0..%d", dialer.ErrTunnelClosed, rep.GraceMS, int64(maxGraceMS))
	}
	return rep, nil
}

// maxGraceMS is the largest grace_ms that is a time.Duration.
const maxGraceMS = math.MaxInt64 / int64(time.Millisecond)

// ParseControl decodes a control message; an error means the message was
// not a control message at all (and is ignored by the caller).
func ParseControl(b []byte) (Control, error) {
	var c Control
	if err := json.Unmarshal(b, &c); err != nil {
		return c, err
	}
	if c.Type == "" {
		return c, errors.New("control message has no type")
	}
	return c, nil
}

// EOFMessage is the encoded {"type":"eof"} control message.
var EOFMessage = []byte(`{"type":"eof"}`)

// EndMessage is the encoded {"type":"end"} control message.
var EndMessage = []byte(`{"type":"end"}`)

// Has reports whether features holds f.
func Has(features []string, f string) bool { return slices.Contains(features, f) }

// Marshal encodes v as one line of JSON, as the Sprites SDK writes it (with
// the trailing newline of a JSON encoder).
func Marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("wire: " + err.Error()) // only our own message types are encoded
	}
	return buf.Bytes()
}

// ackPrefix is how AppendAck begins an ack, which ParseAck reads without
// decoding JSON.
const ackPrefix = `{"type":"ack","n":`

// AppendAck appends {"type":"ack","n":n} to b.
func AppendAck(b []byte, n int64) []byte {
	b = append(b, ackPrefix...)
	b = strconv.AppendInt(b, n, 10)
	return append(b, '}')
}

// ParseAck reads an ack control message: the count, and whether b is an
// ack with a count in 0..2^63-1. The form AppendAck writes is read without
// allocating; any other JSON spelling of an ack is decoded.
func ParseAck(b []byte) (int64, bool) {
	if rest, ok := bytes.CutPrefix(b, []byte(ackPrefix)); ok {
		if n, ok := parseAckTail(rest); ok {
			return n, true
		}
		// Not AppendAck's form (a space, another field): decoded below,
		// which refuses what the fast path would have (01, -1, overflow).
	}
	var a struct {
		Type string          `json:"type"`
		N    json.RawMessage `json:"n"`
	}
	if json.Unmarshal(b, &a) != nil || a.Type != ControlAck {
		return 0, false
	}
	n, err := strconv.ParseInt(string(a.N), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// parseAckTail reads what follows ackPrefix in AppendAck's form: digits
// (no leading zero, at most 2^63-1), '}', optional trailing white space.
func parseAckTail(rest []byte) (int64, bool) {
	rest = bytes.TrimRight(rest, " \t\r\n")
	if len(rest) < 2 || len(rest) > 20 || rest[len(rest)-1] != '}' {
		return 0, false
	}
	var n int64
	digits := rest[:len(rest)-1]
	for i, d := range digits {
		if d < '0' || d > '9' || i == 0 && d == '0' && len(digits) > 1 {
			return 0, false
		}
		if n > (math.MaxInt64-int64(d-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, true
}
