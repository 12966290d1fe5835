package websocket

import "github.com/spriteproxy/spriteproxy/internal/wire"

// The extension rules of PROTOCOL.md §4–7, in one place: what an end
// offers, what is negotiated from what the other end listed, and what a
// refused target leaves of the connection. The rules:
//
//   - half_close (§4) is granted when the client lists it and the server
//     allows it;
//   - raw_stream (§6) likewise, and a server allows it only when its
//     operator says so;
//   - reuse (§7) needs half_close and never combines with raw_stream: it is
//     granted only with half_close, and not when raw_stream is;
//   - early_data (§5) is not negotiated in the handshake (the upgrade
//     response's header carries it), so it is not here;
//   - optimistic (§8) is announced by the server in the upgrade response's
//     header (a server announces it when it allows half_close), and a
//     client lists it in a first message only when data follows that
//     message without waiting for the reply: only then, never to a server
//     that did not announce it, and only with half_close; such a request
//     never offers raw_stream (its data is framed) and its refusal never
//     keeps the connection (the data in flight is dropped with it);
//   - resume (PROTOCOL.md, Extension resume) needs half_close and never
//     combines with raw_stream (a raw stream has no control messages to
//     carry acks) or optimistic (it is not offered on such a request, and
//     not granted to one that lists it); it may combine with reuse (the
//     resumable layer is above the Conn).
//
// The same function applies on both ends: the server to the client's
// request, the client to the server's reply (a server grants only what was
// asked, so the client's own rules then agree with the server's).

// allowed is what one end is willing to use: a Dialer's offer, or a
// Server's settings.
type allowed struct {
	halfClose  bool
	rawStream  bool
	reuse      bool
	optimistic bool
	resume     bool
}

// extensions is what a tunnel negotiated.
type extensions struct {
	halfClose  bool // eof messages; the peer answers pings while idle
	raw        bool // no framing after the handshake
	reuse      bool // the stream ends with end messages, the connection lives on
	optimistic bool // data followed the first message before the reply
	resume     bool // the stream outlives its connection (resume.go)
}

// featureOptimistic is the optimistic extension's name, in a first message
// and in the server's upgrade response header.
const featureOptimistic = "optimistic"

// sendsEarly reports whether a client that allows a sends data before the
// reply to a server that announced (or did not announce) the extension.
func (a allowed) sendsEarly(announced bool) bool {
	return a.optimistic && a.halfClose && announced
}

// offer is the features a client that allows a lists in its first
// message, in the order it has always sent them; early says that data
// follows it before the reply (sendsEarly).
func (a allowed) offer(early bool) []string {
	var f []string
	if a.halfClose {
		f = append(f, wire.FeatureHalfClose)
		if a.reuse {
			f = append(f, wire.FeatureReuse)
		}
	}
	if a.halfClose && a.resume && !early {
		f = append(f, wire.FeatureResume)
	}
	if a.rawStream && !early {
		f = append(f, wire.FeatureRawStream)
	}
	if early {
		f = append(f, featureOptimistic)
	}
	return f
}

// negotiate is what a tunnel uses when the other end listed features and
// this end allows a.
func negotiate(listed []string, a allowed) extensions {
	var e extensions
	e.halfClose = a.halfClose && wire.Has(listed, wire.FeatureHalfClose)
	early := wire.Has(listed, featureOptimistic)
	e.optimistic = a.optimistic && e.halfClose && early
	// Data framed as WebSocket messages may follow an optimistic request
	// (granted or not): it never opens a raw stream.
	e.raw = a.rawStream && !early && wire.Has(listed, wire.FeatureRawStream)
	e.reuse = e.halfClose && !e.raw && a.reuse && wire.Has(listed, wire.FeatureReuse)
	e.resume = e.halfClose && !e.raw && !early && a.resume && wire.Has(listed, wire.FeatureResume)
	return e
}

// features is what a server's connected reply lists for e, in the order
// it has always sent them.
func (e extensions) features() []string {
	var f []string
	if e.halfClose {
		f = append(f, wire.FeatureHalfClose)
	}
	if e.raw {
		f = append(f, wire.FeatureRawStream)
	}
	if e.reuse {
		f = append(f, wire.FeatureReuse)
	}
	if e.optimistic {
		f = append(f, featureOptimistic)
	}
	if e.resume {
		f = append(f, wire.FeatureResume)
	}
	return f
}

// keepsRefused reports whether a connection whose target was refused stays
// open for the next first message (§7): on the server, when the client
// asked for half_close and reuse (whatever else it asked: a refusal opens
// no raw stream) and this end allows both; on the client, when the error
// reply lists reuse and this end offered it. A request with optimistic
// data behind it never keeps the connection: the data is dropped with it.
func keepsRefused(listed []string, a allowed, server bool) bool {
	if !a.halfClose || !a.reuse || !wire.Has(listed, wire.FeatureReuse) {
		return false
	}
	if server && wire.Has(listed, featureOptimistic) {
		return false
	}
	return !server || wire.Has(listed, wire.FeatureHalfClose)
}

// refusalFeatures is what an error reply lists when keep says that the
// connection stays open.
func refusalFeatures(keep bool) []string {
	if keep {
		return []string{wire.FeatureReuse}
	}
	return nil
}

// setExtensions puts what was negotiated in force on c.
func (c *Conn) setExtensions(e extensions) {
	c.halfClose, c.raw, c.reuse, c.resume = e.halfClose, e.raw, e.reuse, e.resume
	c.startStreaming()
}

// allowed is what the Dialer offers.
func (d *Dialer) allowed() allowed {
	return allowed{halfClose: !d.DisableHalfClose, rawStream: !d.DisableRawStream, reuse: !d.DisableReuse, optimistic: d.Optimistic, resume: !d.DisableResume}
}

// allowed is what the Server grants.
func (s *Server) allowed() allowed {
	// Once a drain has begun, connections are to go: no new tunnel is
	// offered reuse.
	return allowed{halfClose: !s.DisableHalfClose, rawStream: s.RawStreams, reuse: !s.DisableReuse && !s.Draining(), optimistic: !s.DisableHalfClose, resume: !s.DisableResume}
}
