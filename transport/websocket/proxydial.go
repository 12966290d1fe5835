package websocket

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// ProxyFromEnvironment is the proxy choice of Go's net/http: HTTPS_PROXY
// for wss:// servers, HTTP_PROXY for ws:// ones, none for the hosts in
// NO_PROXY and for loopback hosts (and the lower-case names too). The
// environment is read at each call.
func ProxyFromEnvironment(u *url.URL) (*url.URL, error) {
	return httpproxy.FromEnvironment().ProxyFunc()(u)
}

// NoProxy is a Dialer.Proxy that never uses a proxy.
func NoProxy(*url.URL) (*url.URL, error) { return nil, nil }

// ProxyError is the failure of an HTTP proxy to open a CONNECT tunnel to
// the server: it could not be reached (Err set, StatusCode 0) or it
// answered with a status other than 200 (407 Proxy Authentication
// Required, 403, 502...). Match it with errors.As; it names the proxy, not
// the server.
type ProxyError struct {
	Proxy      string // the proxy's URL, without its password
	Target     string // the host:port asked for
	StatusCode int    // the proxy's status; 0 if it never answered
	Status     string // the status line's text, e.g. "407 Proxy Authentication Required"
	Err        error  // why it never answered; nil if it did
}

func (e *ProxyError) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("websocket: proxy %s refused CONNECT %s: %s", e.Proxy, e.Target, e.Status)
	}
	return fmt.Sprintf("websocket: proxy %s, CONNECT %s: %v", e.Proxy, e.Target, e.Err)
}

// Unwrap returns Err.
func (e *ProxyError) Unwrap() error { return e.Err }

// dialServer opens the TCP connection to the server at addr, through the
// proxy that d's Proxy (or the environment) names for the server, if any.
// ctx bounds the dial and the CONNECT exchange.
func (d *Dialer) dialServer(ctx context.Context, addr string) (net.Conn, error) {
	choose := d.Proxy
	if choose == nil {
		choose = ProxyFromEnvironment
	}
	target := &url.URL{Scheme: "http", Host: addr}
	if d.base.Scheme == "wss" {
		target.Scheme = "https"
	}
	pu, err := choose(target)
	if err != nil {
		return nil, fmt.Errorf("websocket: choosing a proxy: %w", err)
	}
	if pu == nil {
		return d.dialTCP(ctx, addr)
	}
	return d.dialConnect(ctx, pu, addr)
}

// dialTCP is the direct dial: NetDial, else a net.Dialer.
func (d *Dialer) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	if d.NetDial != nil {
		return d.NetDial(ctx, "tcp", addr)
	}
	return clientDialer.DialContext(ctx, "tcp", addr)
}

// dialConnect asks the proxy at pu for a CONNECT tunnel to addr, with
// Basic credentials from pu's user info.
func (d *Dialer) dialConnect(ctx context.Context, pu *url.URL, addr string) (net.Conn, error) {
	pe := &ProxyError{Proxy: pu.Redacted(), Target: addr}
	proxyAddr := pu.Host
	switch pu.Scheme {
	case "http", "":
		if pu.Port() == "" {
			proxyAddr = net.JoinHostPort(pu.Hostname(), "80")
		}
	case "https":
		if pu.Port() == "" {
			proxyAddr = net.JoinHostPort(pu.Hostname(), "443")
		}
	default:
		pe.Err = fmt.Errorf("unsupported proxy scheme %q (http and https are)", pu.Scheme)
		return nil, pe
	}
	nc, err := d.dialTCP(ctx, proxyAddr)
	if err != nil {
		pe.Err = err
		return nil, pe
	}
	if pu.Scheme == "https" {
		tc := tls.Client(nc, &tls.Config{ServerName: pu.Hostname(), MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			pe.Err = err
			return nil, pe
		}
		nc = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	resp, err := connectExchange(nc, pu, addr)
	// The socket's deadline is ctx's and usually fires before ctx's own
	// timer: a timeout then is ctx's deadline, as on the direct path.
	if !stop() || ctx.Err() != nil || err != nil && isTimeout(err) && ctxExpired(ctx) {
		nc.Close()
		pe.Err = cmp.Or(ctx.Err(), context.DeadlineExceeded)
		return nil, pe
	}
	if err != nil {
		nc.Close()
		pe.Err = err
		return nil, pe
	}
	if resp.StatusCode != http.StatusOK {
		nc.Close()
		pe.StatusCode, pe.Status = resp.StatusCode, resp.Status
		return nil, pe
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

// connectExchange writes the CONNECT request and reads the proxy's reply
// head. Nothing may follow a 200 before the client speaks (the server
// waits for our TLS ClientHello or WebSocket request), so the reader's
// buffer is empty when the tunnel is handed on.
func connectExchange(nc net.Conn, pu *url.URL, addr string) (*http.Response, error) {
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: " + UserAgent + "\r\n"
	if pu.User != nil {
		pass, _ := pu.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(pu.User.Username() + ":" + pass))
		req += "Proxy-Authorization: Basic " + cred + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, err
	}
	// The body is never read: a 2xx to CONNECT has none whatever its
	// Content-Length or Transfer-Encoding say (RFC 9110 §9.3.6; some
	// proxies send them), and after any other status the connection is
	// closed unread (a hostile proxy's endless 407 body stalls nothing).
	if resp.StatusCode == http.StatusOK && br.Buffered() > 0 {
		return nil, fmt.Errorf("the proxy sent %d bytes after its 200 before the server could speak", br.Buffered())
	}
	return resp, nil
}
