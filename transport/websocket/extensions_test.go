package websocket

import (
	"slices"
	"testing"

	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// TestNegotiateTable holds the extension rules against PROTOCOL.md §4–7:
// each row is what a client allows, what a server allows, and what the
// handshake must then grant, both as the server's reply lists it and as
// the client takes the reply.
func TestNegotiateTable(t *testing.T) {
	t.Parallel()
	const hc, raw, reuse = wire.FeatureHalfClose, wire.FeatureRawStream, wire.FeatureReuse
	all := allowed{halfClose: true, rawStream: true, reuse: true}
	const resume = wire.FeatureResume
	allR := allowed{halfClose: true, rawStream: true, reuse: true, resume: true}
	cases := []struct {
		name           string
		client, server allowed
		offer          []string // the client's first message
		reply          []string // the server's connected reply
		keepRefused    bool     // a refused target leaves the connection open (§7)
	}{
		{"everything both ways", all, all, []string{hc, reuse, raw}, []string{hc, raw}, true},                                                                              // §7: never reuse with raw
		{"server without raw (the default)", all, allowed{halfClose: true, reuse: true}, []string{hc, reuse, raw}, []string{hc, reuse}, true},                              // §6: raw only if the operator allows
		{"server with raw only", all, allowed{rawStream: true}, []string{hc, reuse, raw}, []string{raw}, false},                                                            // §4
		{"plain server (hosted API)", all, allowed{}, []string{hc, reuse, raw}, nil, false},                                                                                // §10
		{"server without reuse", all, allowed{halfClose: true}, []string{hc, reuse, raw}, []string{hc}, false},                                                             // §7
		{"server without half_close: no reuse", all, allowed{reuse: true}, []string{hc, reuse, raw}, nil, false},                                                           // §7: reuse needs half_close
		{"client without half_close", allowed{rawStream: true, reuse: true}, all, []string{raw}, []string{raw}, false},                                                     // §7: reuse is offered only with half_close
		{"client without raw", allowed{halfClose: true, reuse: true}, all, []string{hc, reuse}, []string{hc, reuse}, true},                                                 // §6, §7
		{"client without reuse", allowed{halfClose: true, rawStream: true}, all, []string{hc, raw}, []string{hc, raw}, false},                                              // §7
		{"SDK-like client", allowed{}, all, nil, nil, false},                                                                                                               // §10
		{"half_close alone", allowed{halfClose: true}, allowed{halfClose: true}, []string{hc}, []string{hc}, false},                                                        // §4
		{"reuse without raw on either side", allowed{halfClose: true, reuse: true}, allowed{halfClose: true, reuse: true}, []string{hc, reuse}, []string{hc, reuse}, true}, // §7
		// Extension resume: needs half_close, never with raw_stream.
		{"resume, server with raw: raw wins", allR, allR, []string{hc, reuse, resume, raw}, []string{hc, raw}, true},
		{"resume, server without raw (the default)", allR, allowed{halfClose: true, reuse: true, resume: true}, []string{hc, reuse, resume, raw}, []string{hc, reuse, resume}, true},
		{"resume without reuse", allowed{halfClose: true, resume: true}, allR, []string{hc, resume}, []string{hc, resume}, false},
		{"server without resume", allR, allowed{halfClose: true, reuse: true}, []string{hc, reuse, resume, raw}, []string{hc, reuse}, true},
		{"server without half_close: no resume", allR, allowed{resume: true, reuse: true}, []string{hc, reuse, resume, raw}, nil, false},
		{"client without half_close offers no resume", allowed{resume: true}, allR, nil, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			offer := tc.client.offer(false)
			if !slices.Equal(offer, tc.offer) {
				t.Errorf("client offers %q, want %q", offer, tc.offer)
			}
			granted := negotiate(offer, tc.server)
			reply := granted.features()
			if !slices.Equal(reply, tc.reply) {
				t.Errorf("server replies %q, want %q", reply, tc.reply)
			}
			if granted.resume && (!granted.halfClose || granted.raw || granted.optimistic) {
				t.Errorf("server granted %+v: resume needs half_close and never comes with raw_stream or optimistic", granted)
			}
			if granted.reuse && (!granted.halfClose || granted.raw) {
				t.Errorf("server granted %+v: reuse needs half_close and never comes with raw_stream", granted)
			}
			taken := negotiate(reply, tc.client)
			if taken != granted {
				t.Errorf("client takes %+v from the reply, the server granted %+v", taken, granted)
			}
			keepS := keepsRefused(offer, tc.server, true)
			if keepS != tc.keepRefused {
				t.Errorf("server keeps the connection after a refusal: %v, want %v", keepS, tc.keepRefused)
			}
			if keepC := keepsRefused(refusalFeatures(keepS), tc.client, false); keepC != keepS {
				t.Errorf("client keeps the connection after the error reply: %v, server: %v", keepC, keepS)
			}
		})
	}
}

// TestNegotiateIgnoresUnasked: a reply may list only what was asked, but a
// client given more (a misbehaving server) takes only what it allows, and
// never reuse without half_close or with raw_stream.
func TestNegotiateIgnoresUnasked(t *testing.T) {
	t.Parallel()
	const hc, raw, reuse = wire.FeatureHalfClose, wire.FeatureRawStream, wire.FeatureReuse
	for _, tc := range []struct {
		listed []string
		a      allowed
		want   extensions
	}{
		{[]string{hc, raw, reuse}, allowed{}, extensions{}},
		{[]string{reuse}, allowed{halfClose: true, reuse: true}, extensions{}},
		{[]string{hc, reuse, raw}, allowed{halfClose: true, rawStream: true, reuse: true}, extensions{halfClose: true, raw: true}},
		{[]string{"unknown", hc}, allowed{halfClose: true}, extensions{halfClose: true}},
		{[]string{reuse}, allowed{halfClose: true, reuse: true}, extensions{}},
	} {
		if got := negotiate(tc.listed, tc.a); got != tc.want {
			t.Errorf("negotiate(%q, %+v) = %+v, want %+v", tc.listed, tc.a, got, tc.want)
		}
	}
	if keepsRefused([]string{reuse}, allowed{halfClose: true, reuse: true}, true) {
		t.Error("server keeps a refused connection whose client did not ask for half_close")
	}
}

// TestNegotiateOptimistic holds the rules of §8: a client lists optimistic
// only when data follows (it allows it, with half_close, and the server
// announced it), then offers no raw_stream; a server never keeps the
// connection after refusing such a request, whether it grants optimistic
// or not, and never opens a raw stream for it.
func TestNegotiateOptimistic(t *testing.T) {
	t.Parallel()
	const hc, raw, reuse, opt = wire.FeatureHalfClose, wire.FeatureRawStream, wire.FeatureReuse, featureOptimistic
	all := allowed{halfClose: true, rawStream: true, reuse: true, optimistic: true}
	for _, tc := range []struct {
		name           string
		client, server allowed
		announced      bool
		offer, reply   []string
		keepRefused    bool
	}{
		{"both, announced", all, all, true, []string{hc, reuse, opt}, []string{hc, reuse, opt}, false},
		{"not announced: as today", all, all, false, []string{hc, reuse, raw}, []string{hc, raw}, true},
		{"client without it", allowed{halfClose: true, reuse: true}, all, true, []string{hc, reuse}, []string{hc, reuse}, true},
		{"client without half_close", allowed{optimistic: true, reuse: true}, all, true, nil, nil, false},
		{"server that no longer allows it", all, allowed{halfClose: true, rawStream: true, reuse: true}, true, []string{hc, reuse, opt}, []string{hc, reuse}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			offer := tc.client.offer(tc.client.sendsEarly(tc.announced))
			if !slices.Equal(offer, tc.offer) {
				t.Errorf("client offers %q, want %q", offer, tc.offer)
			}
			granted := negotiate(offer, tc.server)
			if reply := granted.features(); !slices.Equal(reply, tc.reply) {
				t.Errorf("server replies %q, want %q", reply, tc.reply)
			}
			if taken := negotiate(granted.features(), tc.client); taken != granted {
				t.Errorf("client takes %+v from the reply, the server granted %+v", taken, granted)
			}
			keepS := keepsRefused(offer, tc.server, true)
			if keepS != tc.keepRefused {
				t.Errorf("server keeps the connection after a refusal: %v, want %v", keepS, tc.keepRefused)
			}
			if keepC := keepsRefused(refusalFeatures(keepS), tc.client, false); keepC != keepS {
				t.Errorf("client keeps the connection after the error reply: %v, server: %v", keepC, keepS)
			}
		})
	}
}

// TestResumeNotOptimistic: an optimistic request never offers resume, and
// a server never grants it to one that lists optimistic.
func TestResumeNotOptimistic(t *testing.T) {
	t.Parallel()
	a := allowed{halfClose: true, reuse: true, resume: true, optimistic: true}
	if offer := a.offer(true); slices.Contains(offer, wire.FeatureResume) {
		t.Errorf("optimistic offer %q lists resume", offer)
	}
	listed := []string{wire.FeatureHalfClose, wire.FeatureResume, featureOptimistic}
	if e := negotiate(listed, a); e.resume || !e.optimistic {
		t.Errorf("granted %+v to an optimistic request that listed resume", e)
	}
}
