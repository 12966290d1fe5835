package proxytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/netstack"
)

// With WithSpriteLinks, the server reaches a sprite's targets across the
// sprite's link: it dials a gateway that the sprite host runs on its
// network address, names the target on one line, and the gateway dials it
// inside the sprite (its loopback included) and relays. One status byte
// answers the line; a refusal or a failure comes back typed, so the server
// answers the client as it would for a direct dial. After gwOK comes the
// target conn's remote address on one line, which the server's conn
// reports as its RemoteAddr, so that the connected reply names the target
// as it would for a direct dial, not the gateway.

// Gateway status bytes.
const (
	gwOK byte = iota
	gwRefused
	gwUnreachable
	gwTimeout
	gwFailed
)

// maxGatewayLine bounds the line that names the target.
const maxGatewayLine = 512

// gateway relays the connections the server makes to one sprite.
type gateway struct {
	host *netstack.Host
	ln   net.Listener
	addr string // the gateway's address on the network

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startGateway(h *netstack.Host) (*gateway, error) {
	addrs := h.Addrs()
	if len(addrs) == 0 {
		return nil, errors.New("proxytest: sprite host has no network address")
	}
	ln, err := h.Listen("tcp", net.JoinHostPort(addrs[0].String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("proxytest: sprite gateway: %w", err)
	}
	g := &gateway{host: h, ln: ln, addr: ln.Addr().String(), conns: make(map[net.Conn]struct{})}
	g.wg.Add(1)
	go g.accept()
	return g, nil
}

func (g *gateway) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.track(c) {
			c.Close()
			return
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer g.untrack(c)
			g.serve(c)
		}()
	}
}

// track adds c to the conns Close closes; false once closed.
func (g *gateway) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *gateway) untrack(c net.Conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	c.Close()
}

// serve reads the target's name, dials it inside the sprite and relays.
func (g *gateway) serve(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, maxGatewayLine)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	network, address, ok := strings.Cut(strings.TrimSuffix(string(line), "\n"), " ")
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	target, err := g.host.DialContext(ctx, network, address)
	cancel()
	if err != nil {
		c.Write(append([]byte{gwStatus(err)}, []byte(oneLine(err.Error())+"\n")...))
		return
	}
	if !g.track(target) {
		target.Close()
		return
	}
	defer g.untrack(target)
	if _, err := c.Write([]byte{gwOK}); err != nil {
		return
	}
	if _, err := c.Write([]byte(target.RemoteAddr().String() + "\n")); err != nil {
		return
	}
	relay(c, br, target)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func gwStatus(err error) byte {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return gwRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return gwUnreachable
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return gwTimeout
	}
	return gwFailed
}

// relay copies both ways between the server's conn (read through br) and
// the target, passing an end of stream on as a half-close and a broken
// stream as a reset, and returns when both ways are done.
func relay(c net.Conn, br io.Reader, target net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pass(target, br, c)
	}()
	pass(c, target, target)
	wg.Wait()
}

// pass copies src (whose conn is from) to dst: a clean end of stream is
// a CloseWrite of dst, a broken one resets both.
func pass(dst net.Conn, src io.Reader, from net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		for _, c := range []net.Conn{dst, from} {
			if l, ok := c.(interface{ SetLinger(int) error }); ok {
				l.SetLinger(0)
			}
			c.Close()
		}
		return
	}
	if hc, ok := dst.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite()
	}
}

// close closes the listener and every relayed conn, and waits.
func (g *gateway) close() {
	g.mu.Lock()
	g.closed = true
	conns := make([]net.Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	g.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	g.wg.Wait()
}

// gatewayDialer dials a sprite's targets through its gateway, from the
// server's host.
type gatewayDialer struct {
	from *netstack.Host
	gw   *gateway
}

// DialContext implements dialer.ContextDialer.
func (d gatewayDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	fail := func(err error) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: gwAddr(address), Err: err}
	}
	if len(network)+len(address)+2 > maxGatewayLine || strings.ContainsAny(network+address, " \n") {
		return fail(errors.New("proxytest: bad target address"))
	}
	c, err := d.from.DialContext(ctx, "tcp", d.gw.addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	status := make([]byte, 1)
	_, err = c.Write([]byte(network + " " + address + "\n"))
	if err == nil {
		_, err = io.ReadFull(c, status)
	}
	var remote net.Addr
	if err == nil && status[0] == gwOK {
		remote, err = readRemote(c)
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(err)
	}
	if status[0] != gwOK {
		msg, _ := bufio.NewReader(io.LimitReader(c, maxGatewayLine)).ReadString('\n')
		c.Close()
		msg = strings.TrimSpace(msg)
		switch status[0] {
		case gwRefused:
			return fail(os.NewSyscallError("connect", syscall.ECONNREFUSED))
		case gwUnreachable:
			return fail(os.NewSyscallError("connect", syscall.EHOSTUNREACH))
		case gwTimeout:
			return fail(context.DeadlineExceeded)
		}
		return fail(errors.New(msg))
	}
	if !stop() {
		c.Close()
		return fail(ctx.Err())
	}
	c.SetDeadline(time.Time{})
	return &targetConn{Conn: c, remote: remote}, nil
}

// readRemote reads the target's address line that follows gwOK, one byte
// at a time so that nothing of the stream after it is read.
func readRemote(c net.Conn) (net.Addr, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			break
		}
		if len(line) == maxGatewayLine {
			return nil, errors.New("proxytest: gateway sent a bad target address")
		}
		line = append(line, b[0])
	}
	ap, err := netip.ParseAddrPort(string(line))
	if err != nil {
		return nil, fmt.Errorf("proxytest: gateway sent a bad target address: %w", err)
	}
	return net.TCPAddrFromAddrPort(ap), nil
}

// targetConn is the server's conn to a target through its gateway: the
// gateway's conn, reporting the target's address as its RemoteAddr, with
// the half-closes and SetLinger of the conn underneath.
type targetConn struct {
	net.Conn
	remote net.Addr
}

// RemoteAddr is the target's address, as the gateway dialed it.
func (c *targetConn) RemoteAddr() net.Addr { return c.remote }

// CloseWrite half-closes the conn to the gateway, which passes it on.
func (c *targetConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

// CloseRead stops reading from the gateway.
func (c *targetConn) CloseRead() error {
	if hc, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return hc.CloseRead()
	}
	return c.Conn.Close()
}

// SetLinger sets the conn's linger; 0 makes Close a reset, which the
// gateway passes on to the target.
func (c *targetConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

// gwAddr is address as a net.Addr for errors.
type gwAddr string

func (a gwAddr) Network() string { return "tcp" }
func (a gwAddr) String() string  { return string(a) }
