package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testcert"
	sprites "github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// The demo's sprite, and the port its echo service answers on inside it.
const (
	demoSprite = "demo"
	demoPort   = 7 // echo's well-known port
)

const demoSynopsis = "spriteproxy demo [--keep] [--mib N]\n\n" +
	"Starts a server with a sprite running an echo service, forwards a local port\n" +
	"to it, sends data through the tunnel and checks it comes back intact; all in\n" +
	"this process, on loopback, with TLS."

func (c *cli) demo(ctx context.Context, args []string) int {
	fs := newFlagSet("demo")
	keep := fs.Bool("keep", false, "keep forwarding after the transfer, until Ctrl-C, so you can connect with your own tools")
	mib := fs.Int("mib", 64, "MiB to send through the tunnel (they come back too)")
	pos, err := c.parseFlags(fs, args, demoSynopsis)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		return c.failf(exitUsage, "demo", "%v", err)
	}
	if len(pos) > 0 {
		return c.failf(exitUsage, "demo", "unexpected argument %q (see spriteproxy demo -h)", pos[0])
	}
	if *mib < 1 || *mib > 1<<20 {
		return c.failf(exitUsage, "demo", "--mib %d: expected 1 to %d", *mib, 1<<20)
	}

	srv, err := startDemoServer()
	if err != nil {
		return c.failf(exitFail, "demo", "starting the server: %v", err)
	}
	defer srv.close()
	fmt.Fprintf(c.stdout, "demo: server %s (in this process; TLS with a throw-away certificate)\n", srv.url)
	fmt.Fprintf(c.stdout, "demo: sprite %q runs an echo service on its port %d\n", demoSprite, demoPort)

	f := &forwarder{
		api:          srv.url,
		token:        srv.token,
		tlsConfig:    srv.clientTLS,
		sprite:       demoSprite,
		mappings:     []sprites.PortMapping{{LocalPort: 0, RemotePort: demoPort}},
		checkTargets: true,
		timeout:      15 * time.Second,
		con:          &console{out: c.stdout, err: c.stderr, width: c.width, prefix: "spriteproxy demo: "},
	}
	sessions, mgr, err := f.start(ctx)
	if ctx.Err() != nil {
		return exitOK
	}
	if err != nil {
		return c.failf(exitFail, "demo", "%s", explain(err, f.where("")))
	}
	defer mgr.CloseAll()
	if err := printMappings(c.stdout, demoSprite, sessions, false); err != nil {
		return c.failf(exitFail, "demo", "%v", err)
	}
	local := sessions[0].LocalAddr().String()

	n := int64(*mib) << 20
	res, err := transfer(ctx, local, n)
	if ctx.Err() != nil {
		return exitOK
	}
	if err != nil {
		return c.failf(exitFail, "demo", "moving data through the tunnel: %v", err)
	}
	if res.sent != res.received || res.sentSum != res.receivedSum {
		return c.failf(exitFail, "demo", "the data came back changed: sent %d bytes (sha256 %x), received %d (sha256 %x)",
			res.sent, res.sentSum, res.received, res.receivedSum)
	}
	secs := res.elapsed.Seconds()
	fmt.Fprintf(c.stdout, "demo: sent %s to the echo service through the tunnel and read the same %s back in %s\n",
		bytesString(n), bytesString(n), res.elapsed.Round(time.Millisecond))
	fmt.Fprintf(c.stdout, "demo: throughput %.1f MiB/s each way (%.1f MiB/s through the tunnel in all)\n",
		float64(n)/(1<<20)/secs, 2*float64(n)/(1<<20)/secs)
	fmt.Fprintf(c.stdout, "demo: sha256 %s… matches both ways: the bytes arrived intact\n", hex.EncodeToString(res.sentSum[:8]))

	if !*keep {
		return exitOK
	}
	_, port, _ := net.SplitHostPort(local)
	fmt.Fprintf(c.stdout, "demo: forwarding until Ctrl-C; try it: nc 127.0.0.1 %s (each line you type comes back)\n", port)
	return f.hold(ctx, sessions, mgr, c.terminal, c.statusEvery)
}

// transferResult is what transfer saw.
type transferResult struct {
	sent, received       int64
	sentSum, receivedSum [sha256.Size]byte
	elapsed              time.Duration
}

// transfer connects to addr, an echo service, sends n pseudo-random bytes
// while reading what comes back, ends its write side, reads to the end and
// reports both checksums. ctx, and a bound of five minutes, cut it short.
func transfer(ctx context.Context, addr string, n int64) (transferResult, error) {
	var res transferResult
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	start := time.Now()
	sent := make(chan error, 1)
	go func() {
		var seed [32]byte
		rand.Read(seed[:])
		src := mrand.NewChaCha8(seed)
		h := sha256.New()
		buf := make([]byte, 256<<10)
		var err error
		for res.sent < n && err == nil {
			chunk := buf[:min(int64(len(buf)), n-res.sent)]
			src.Read(chunk)
			h.Write(chunk)
			var k int
			k, err = conn.Write(chunk)
			res.sent += int64(k)
		}
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		h.Sum(res.sentSum[:0])
		sent <- err
	}()

	h := sha256.New()
	res.received, err = io.CopyBuffer(h, conn, make([]byte, 256<<10))
	if err != nil {
		conn.Close() // unblocks the writer
	}
	werr := <-sent
	res.elapsed = time.Since(start)
	h.Sum(res.receivedSum[:0])
	return res, errors.Join(werr, err)
}

// demoServer is the demo's server, its sprite and the sprite's echo
// service, all on loopback in this process.
type demoServer struct {
	url       string
	token     string
	clientTLS *tls.Config

	ws     *websocket.Server
	served chan error

	echo  net.Listener
	wg    sync.WaitGroup // the echo accept loop and its connections
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startDemoServer starts the echo service and a TLS server whose one sprite
// reaches it.
func startDemoServer() (*demoServer, error) {
	pair, err := testcert.New()
	if err != nil {
		return nil, err
	}
	var tok [16]byte
	rand.Read(tok[:])
	s := &demoServer{token: hex.EncodeToString(tok[:]), clientTLS: pair.ClientConfig(), conns: make(map[net.Conn]struct{})}

	s.echo, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go s.serveEcho()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.echo.Close()
		s.wg.Wait()
		return nil, err
	}
	s.url = "https://" + ln.Addr().String()
	sprite := demoNetwork(s.echo.Addr().String())
	s.ws = &websocket.Server{
		Auth: websocket.StaticToken(s.token),
		Sprites: websocket.ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
			if name != demoSprite {
				return nil, fmt.Errorf("%w: %q", dialer.ErrUnknownSprite, name)
			}
			return sprite, nil
		}),
	}
	s.ws.TLSConfig = pair.ServerConfig()
	s.served = make(chan error, 1)
	go func() { s.served <- s.ws.Serve(ln) }()
	return s, nil
}

// close stops everything and waits for it.
func (s *demoServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.ws.Shutdown(ctx)
	<-s.served
	s.echo.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// serveEcho accepts echo connections until the listener closes.
func (s *demoServer) serveEcho() {
	defer s.wg.Done()
	for {
		c, err := s.echo.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// Echo until the client ends its side, then end ours: the
			// client reads everything back, then EOF.
			io.Copy(c, c)
			c.(*net.TCPConn).CloseWrite()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// demoNetwork is the network inside the demo sprite: port 7 is the echo
// service (really at this address); nothing else listens.
type demoNetwork string

var _ dialer.ContextDialer = demoNetwork("")

func (n demoNetwork) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if port != strconv.Itoa(demoPort) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", string(n))
}
