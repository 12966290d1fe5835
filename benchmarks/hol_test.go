package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/mux"
	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// The multiplexed-mode study of issue 17: two flows (a bulk upload and a
// small request/response echo) either on connections of their own or as
// two streams of one connection (package mux, over one of our tunnels to a
// demux in the sprite), over the WAN rig's link; and the rate of 16
// concurrent short opens either way.

// A holPath opens streams to ports of the sprite: each stream on a
// connection of its own, or each a stream of one shared connection.
type holPath struct {
	name string
	// build sets the path up on w (connections a mux shares are opened
	// here, untimed) and returns how to open one stream.
	build func(tb testing.TB, w *holRig) func(ctx context.Context, port int) (holConn, error)
}

// holConn is a stream of any path: all of them can end their writing.
type holConn interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// holRig is a WAN rig whose sprite runs an echo, a sink and a demux.
type holRig struct {
	*wanRig
	echo, sink, demux *rig.Service
	sunk              chan holResult // what the sink read, per stream
	window            int            // the mux's per-stream window on both sides
}

type holResult struct {
	n   int64
	err error
}

func newHolRig(tb testing.TB, rtt time.Duration, loss float64, window int) *holRig {
	w := &holRig{wanRig: newWAN(tb, rtt, loss, rig.Echo), sunk: make(chan holResult, 16), window: window}
	w.echo = w.target
	ln, err := w.sprite.Listen("tcp", ":0")
	w.check(tb, err)
	w.sink = rig.NewService(ln, func(c net.Conn) {
		n, err := io.Copy(io.Discard, c)
		w.sunk <- holResult{n, err}
	})
	w.onClose(w.sink.Close)
	ln, err = w.sprite.Listen("tcp", ":0")
	w.check(tb, err)
	w.demux = rig.NewService(ln, w.serveDemux)
	w.onClose(w.demux.Close)
	return w
}

// serveDemux is the sprite's end of a multiplexed connection: each stream
// is connected to the address it was opened to, as a tunnel server
// connects a tunnel to its target. It returns when the session has ended
// (the service's Close closes c) and every stream's relay with it.
func (w *holRig) serveDemux(c net.Conn) {
	s := mux.Server(c, w.window)
	defer s.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := s.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			relayStream(st, w.sprite.DialContext)
		}()
	}
}

// relayStream copies both ways between st and a connection to its
// address, passing each end of stream on; an error either way closes both.
func relayStream(st *mux.Stream, dial func(context.Context, string, string) (net.Conn, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t, err := dial(ctx, "tcp", st.Addr())
	cancel()
	if err != nil {
		st.Reset()
		return
	}
	defer t.Close()
	defer st.Close()
	up := make(chan error, 1)
	go func() {
		_, err := io.Copy(t, st)
		if err == nil {
			err = t.(holConn).CloseWrite()
		} else {
			t.Close() // ends the other direction's Read of t
		}
		up <- err
	}()
	_, err = io.Copy(st, t)
	if err == nil {
		err = st.CloseWrite()
	}
	if err != nil {
		t.Close()
		st.Reset()
	}
	<-up
}

var (
	holTCP = holPath{"tcp", func(tb testing.TB, w *holRig) func(context.Context, int) (holConn, error) {
		return func(ctx context.Context, port int) (holConn, error) {
			c, err := w.client.DialContext(ctx, "tcp", net.JoinHostPort(rig.Sprite, strconv.Itoa(port)))
			if err != nil {
				return nil, err
			}
			return c.(holConn), nil
		}
	}}
	holSocketWS  = holPath{"socket-ws", holSeparate(false)}
	holSocketWSS = holPath{"socket-wss", holSeparate(true)}
	holMuxTCP    = holPath{"mux-tcp", holMux("tcp")}
	holMuxWS     = holPath{"mux-ws", holMux("ws")}
	holMuxWSS    = holPath{"mux-wss", holMux("wss")}
)

// holSprite is our ProxySocket's client on w, as wanOurs builds it: reuse
// on (the default pool, which keeps as many idle connections as tunnels
// were open at once, up to AdaptiveMaxIdlePerSprite),
// optimistic on.
func holSprite(tb testing.TB, w *holRig, useTLS bool) *proxy.Sprite {
	srv, err := rig.ServeOurs(w.listenServer(tb), w.n, useTLS, rig.FrontServe, false)
	w.check(tb, err)
	w.onClose(srv.Close)
	d := &websocket.Dialer{BaseURL: serverURL(useTLS), Token: rig.Token, TLSConfig: wanTLS(srv.ClientTLS),
		NetDial: w.client.DialContext, Optimistic: true}
	w.onClose(d.CloseIdleConnections)
	client := proxy.New(rig.Token, proxy.WithDialer(d))
	w.onClose(client.CloseIdleConnections)
	return client.Sprite(rig.Sprite)
}

// holSeparate: every stream is a ProxySocket tunnel of its own, on a
// connection of its own (an idle one from the pool if there is one).
func holSeparate(useTLS bool) func(testing.TB, *holRig) func(context.Context, int) (holConn, error) {
	return func(tb testing.TB, w *holRig) func(context.Context, int) (holConn, error) {
		sp := holSprite(tb, w, useTLS)
		return func(ctx context.Context, port int) (holConn, error) {
			c, err := sp.ProxySocket(ctx, "tcp", net.JoinHostPort("localhost", strconv.Itoa(port)))
			if err != nil {
				return nil, err
			}
			return c.(holConn), nil
		}
	}
}

// holMux: one connection, opened here, carries every stream: raw TCP to
// the demux, or one ProxySocket tunnel (ws or wss) to it.
func holMux(over string) func(testing.TB, *holRig) func(context.Context, int) (holConn, error) {
	return func(tb testing.TB, w *holRig) func(context.Context, int) (holConn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var c net.Conn
		var err error
		if over == "tcp" {
			c, err = w.client.DialContext(ctx, "tcp", net.JoinHostPort(rig.Sprite, strconv.Itoa(w.demux.Port())))
		} else {
			c, err = holSprite(tb, w, over == "wss").ProxySocket(ctx, "tcp", net.JoinHostPort("localhost", strconv.Itoa(w.demux.Port())))
		}
		w.check(tb, err)
		s := mux.Client(c, w.window)
		w.onClose(func() { s.Close() })
		return func(_ context.Context, port int) (holConn, error) {
			return s.Open(net.JoinHostPort("localhost", strconv.Itoa(port)))
		}
	}
}

// holMuxWindow is the mux's per-stream window in the rows named mux-*;
// the mux-*-4m rows give 4 MiB, more than the link's bandwidth-delay
// product at 50 ms, so that only TCP bounds the bulk stream.
const holMuxWindow, holMuxWindowBig = mux.InitialWindow, 4 << 20

var (
	holPaths = []struct {
		p      holPath
		suffix string
		window int
	}{
		{holTCP, "", 0}, {holSocketWS, "", 0}, {holMuxTCP, "", holMuxWindow}, {holMuxWS, "", holMuxWindow},
		{holMuxTCP, "-4m", holMuxWindowBig}, {holMuxWS, "-4m", holMuxWindowBig},
	}
	holOpenPaths = []holPath{holTCP, holSocketWS, holSocketWSS, holMuxWS, holMuxWSS}
)

// benchHOL is BenchmarkWAN's multiplexing rows.
func benchHOL(b *testing.B) {
	for _, loss := range []float64{0, 0.01} {
		for _, hp := range holPaths {
			b.Run(fmt.Sprintf("hol/50ms/loss-%gpct/%s%s", loss*100, hp.p.name, hp.suffix), func(b *testing.B) {
				wanHOL(b, 50*time.Millisecond, loss, hp.p, hp.window)
			})
		}
	}
	for _, rtt := range []time.Duration{0, 50 * time.Millisecond} {
		for _, p := range holOpenPaths {
			b.Run(fmt.Sprintf("open16/%dms/%s", rtt.Milliseconds(), p.name), func(b *testing.B) {
				wanOpen16(b, rtt, p)
			})
		}
	}
}

// holBulkSize is what the upload of one hol op moves: half of a bulk
// row's, to keep -quick's run within minutes (the 1 % loss rows run at
// about 0.4 MB/s).
func holBulkSize(loss float64) int { return wanBulkSize(loss) / 2 }

// holEchoSize is the request (and the reply) of the echo flow.
const holEchoSize = 64

// holMaxEchoes bounds the echo loop of one op, whatever the bulk does.
const holMaxEchoes = 100_000

// wanHOL times, per op, a bulk stream of holBulkSize bytes to the sink
// while a second stream on the same path does one 64-byte echo after
// another, until the bulk has arrived. It reports the bulk's MB/s and the
// echo's latency, median and 99th percentile over every op's echoes.
func wanHOL(b *testing.B, rtt time.Duration, loss float64, p holPath, window int) {
	w := newHolRig(b, rtt, loss, window)
	defer w.Close()
	open := p.build(b, w)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	size := holBulkSize(loss)
	chunk := make([]byte, 64<<10)
	var (
		moving time.Duration
		lats   []time.Duration
	)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		ec, err := open(ctx, w.echo.Port())
		w.check(b, err)
		req, resp := make([]byte, holEchoSize), make([]byte, holEchoSize)
		echo := func(i int) error {
			req[0] = byte(i)
			if _, err := ec.Write(req); err != nil {
				return err
			}
			if _, err := io.ReadFull(ec, resp); err != nil {
				return err
			}
			if resp[0] != byte(i) {
				return fmt.Errorf("echo %d came back as %d", i, resp[0])
			}
			return nil
		}
		if err := echo(0); err != nil { // the stream is up before the timing
			ec.Close()
			w.check(b, err)
		}
		bc, err := open(ctx, w.sink.Port())
		if err != nil {
			ec.Close()
			w.check(b, err)
		}
		b.StartTimer()
		var stop atomic.Bool
		echoed := make(chan error, 1)
		go func() {
			for i := 1; i <= holMaxEchoes && !stop.Load(); i++ {
				start := time.Now()
				if err := echo(i); err != nil {
					echoed <- err
					return
				}
				lats = append(lats, time.Since(start))
			}
			echoed <- nil
		}()
		start := time.Now()
		for sent := 0; sent < size && err == nil; sent += len(chunk) {
			_, err = bc.Write(chunk)
		}
		if err == nil {
			err = bc.CloseWrite()
		}
		var r holResult
		if err == nil {
			r = <-w.sunk
		}
		moving += time.Since(start)
		stop.Store(true)
		eerr := <-echoed
		bc.Close()
		ec.Close()
		switch {
		case err != nil:
			w.check(b, fmt.Errorf("bulk: %w", err))
		case r.err != nil || r.n != int64(size):
			w.check(b, fmt.Errorf("the sink read %d bytes (%v), want %d", r.n, r.err, size))
		case eerr != nil:
			w.check(b, fmt.Errorf("echo: %w", eerr))
		}
	}
	b.StopTimer()
	if len(lats) == 0 {
		w.check(b, errors.New("no echo completed while the bulk stream ran"))
	}
	slices.Sort(lats)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(float64(size)*float64(b.N)/moving.Seconds()/1e6, "MB/s")
	b.ReportMetric(ms(lats[len(lats)/2]), "echo-p50-ms")
	b.ReportMetric(ms(lats[min(len(lats)-1, len(lats)*99/100)]), "echo-p99-ms")
	b.ReportMetric(float64(len(lats))/float64(b.N), "echoes/op")
	b.ReportMetric(float64(w.client.FaultStats().Lost)/float64(b.N), "lost-pkts/op")
}

// holBatch is how many short streams open at once in the open16 rows.
const holBatch = 16

// wanOpen16 times, per op, 16 concurrent opens, each with a 1-byte echo
// and a close, until all 16 are done; one untimed batch first (the mux
// path's connection and the pool's idle connections are up, TLS sessions
// to resume are known). An op is 5 batches (20 at 0 ms RTT), so that the
// median is over enough of them: a batch now and then takes a round trip
// more, as TCP's congestion window grows back. It reports opens per second (over the
// median batch), the median batch in ms, and the connections the server
// accepted per batch.
func wanOpen16(b *testing.B, rtt time.Duration, p holPath) {
	w := newHolRig(b, rtt, 0, holMuxWindow)
	defer w.Close()
	open := p.build(b, w)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	batch := func() error {
		errs := make(chan error, holBatch)
		for i := range holBatch {
			go func() {
				c, err := open(ctx, w.echo.Port())
				if err != nil {
					errs <- err
					return
				}
				err = echoByte(c, byte(i))
				c.Close()
				errs <- err
			}()
		}
		var first error
		for range holBatch {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	w.check(b, batch())
	rounds := b.N * 5
	if rtt == 0 {
		rounds = b.N * 20
	}
	times := make([]time.Duration, 0, rounds)
	accepts := w.accepts.Load()
	b.ResetTimer()
	for range rounds {
		start := time.Now()
		err := batch()
		times = append(times, time.Since(start))
		w.check(b, err)
	}
	b.StopTimer()
	slices.Sort(times)
	med := times[len(times)/2]
	b.ReportMetric(holBatch/med.Seconds(), "opens/s")
	b.ReportMetric(float64(med)/float64(time.Millisecond), "ms/batch")
	b.ReportMetric(float64(w.accepts.Load()-accepts)/float64(rounds), "conns/batch")
}
