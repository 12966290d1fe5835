package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	sprites "github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// where is what an error message needs to say what failed: the API, the
// sprite and the target, and whether a token was given at all. It never
// holds the token itself.
type where struct {
	api      string // the API's URL, without user info
	sprite   string
	target   string // host:port inside the sprite, if the error is about one
	hasToken bool
	timeout  time.Duration // the --timeout that bounded the failed step; 0: none
}

// explain turns an error of the client into one line a user can act on.
// It branches on the dialer package's sentinels and the errors of the
// network, never on message text, and never prints the token.
func explain(err error, w where) string {
	var (
		me   *sprites.MappingError
		he   *dialer.HTTPError
		te   *dialer.TargetError
		uae  x509.UnknownAuthorityError
		hne  x509.HostnameError
		cie  x509.CertificateInvalidError
		cve  *tls.CertificateVerificationError
		rhe  tls.RecordHeaderError
		dnse *net.DNSError
		pe   *websocket.ProxyError
	)
	if errors.As(err, &me) && w.target == "" {
		w.target = targetAddr(me.Mapping)
	}
	// The cause's own text, without the library's "mapping N" (which
	// counts from 0), and the mapping counted from 1 as everywhere else.
	inner, mapping := err, ""
	if me != nil {
		inner, mapping = me.Err, fmt.Sprintf(" (mapping %d)", me.Index+1)
	}
	target := fmt.Sprintf("%s inside sprite %q", w.target, w.sprite)

	switch {
	case errors.As(err, &me) && errors.Is(err, syscall.EADDRINUSE):
		return fmt.Sprintf("local port %d is already in use (mapping %d, to %s): pick another port, or 0 for a free one",
			me.Mapping.LocalPort, me.Index+1, remoteString(w.sprite, me.Mapping))
	case errors.As(err, &me) && errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("not allowed to listen on local port %d (mapping %d): ports below 1024 need privileges; pick another, or 0 for a free one",
			me.Mapping.LocalPort, me.Index+1)
	case errors.As(err, &me) && errors.Is(err, dialer.ErrBadAddress):
		return fmt.Sprintf("mapping %d: %v", me.Index+1, me.Err)

	case errors.As(err, &pe) && (pe.StatusCode == 407 || pe.StatusCode == 401):
		return fmt.Sprintf("proxy %s refused the tunnel to %s (%s): give its credentials in the proxy URL, http://user:pass@host:port (--proxy or HTTPS_PROXY), or pass --no-proxy", pe.Proxy, w.api, pe.Status)
	case errors.As(err, &pe) && pe.StatusCode != 0:
		return fmt.Sprintf("proxy %s refused the tunnel to %s (%s); --no-proxy dials directly", pe.Proxy, w.api, pe.Status)
	case errors.As(err, &pe):
		return fmt.Sprintf("proxy %s unreachable (for %s): %v; --no-proxy dials directly", pe.Proxy, w.api, short(pe.Err))

	case errors.Is(err, dialer.ErrUnauthorized):
		if !w.hasToken {
			return fmt.Sprintf("token rejected by %s (401): no token was given; pass --token or set %s", w.api, envToken)
		}
		return fmt.Sprintf("token rejected by %s (401): check --token or %s", w.api, envToken)
	case errors.Is(err, dialer.ErrForbidden):
		return fmt.Sprintf("token not allowed to use sprite %q (403 from %s)", w.sprite, w.api)
	case errors.Is(err, dialer.ErrUnknownSprite):
		if errors.As(err, &he) && he.Code == "" {
			return fmt.Sprintf("unknown sprite %q (404 from %s, which does not look like a Sprites API: check --api)", w.sprite, w.api)
		}
		return fmt.Sprintf("unknown sprite %q (404 from %s): check the name", w.sprite, w.api)
	case errors.Is(err, dialer.ErrUnavailable):
		return fmt.Sprintf("server unavailable (%s is shutting down or over a limit): try again later", w.api)

	case errors.Is(err, dialer.ErrTargetRefused):
		return fmt.Sprintf("target refused: nothing listens on %s", target)
	case errors.Is(err, dialer.ErrTargetForbidden):
		return fmt.Sprintf("target not allowed: the server's policy does not let tunnels reach %s (the server's --allow)", target)
	case errors.Is(err, dialer.ErrTargetUnreachable):
		return fmt.Sprintf("target unreachable: %s cannot be resolved or reached", target)
	case errors.Is(err, dialer.ErrTargetTimeout):
		return fmt.Sprintf("target timed out: the server could not connect to %s in time", target)
	case errors.As(err, &te):
		return fmt.Sprintf("the server could not connect to %s: %s", target, te.Code)

	case errors.As(err, &uae), errors.As(err, &cve) && errors.As(cve.Err, &uae):
		return fmt.Sprintf("TLS: the certificate of %s is signed by an unknown authority: for a self-signed server, pass --tls-ca FILE", w.api)
	case errors.As(err, &hne):
		return fmt.Sprintf("TLS: the certificate of %s is not valid for that host name (%v)", w.api, hne.Error())
	case errors.As(err, &cie):
		return fmt.Sprintf("TLS: the certificate of %s is not valid: %v", w.api, cie.Error())
	case errors.As(err, &rhe):
		return fmt.Sprintf("TLS: %s does not speak TLS: is it an http:// server?", w.api)
	case errors.Is(err, dialer.ErrBadRequest) && plainScheme(w.api) && speaksTLS(w.api):
		return fmt.Sprintf("%s is a TLS server: use %s (it answered the plain request %s)%s", w.api, withTLSScheme(w.api), short(inner), mapping)
	case errors.Is(err, dialer.ErrBadRequest), errors.Is(err, dialer.ErrTunnelClosed):
		return fmt.Sprintf("%s did not complete the tunnel handshake (is it a spriteproxy or Sprites API?): %v%s", w.api, short(inner), mapping)

	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("server unreachable: nothing listens at %s (connection refused)", w.api)
	case errors.As(err, &dnse):
		return fmt.Sprintf("server unreachable: %s: the host name does not resolve", w.api)
	case (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)) && w.timeout > 0:
		return fmt.Sprintf("no answer from %s within --timeout %v: raise --timeout (0 means no limit), or check that the server is up", w.api, w.timeout)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Sprintf("server unreachable: %s did not answer in time", w.api)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ECONNRESET):
		return fmt.Sprintf("server unreachable: %s: %v", w.api, short(err))
	}
	return short(inner) + mapping
}

// plainScheme reports whether the API URL api is http:// or ws://.
func plainScheme(api string) bool {
	u, err := url.Parse(api)
	return err == nil && (u.Scheme == "http" || u.Scheme == "ws")
}

// withTLSScheme is api with https:// for http:// and wss:// for ws://.
func withTLSScheme(api string) string {
	u, err := url.Parse(api)
	if err != nil {
		return api
	}
	u.Scheme = map[string]string{"http": "https", "ws": "wss"}[u.Scheme]
	return u.String()
}

// speaksTLS reports whether the server of the plain API URL api answers a
// TLS handshake, which tells "http:// to a TLS server" from other causes
// of a 400 without reading the server's message. It is only called on
// that error path, and bounded to a few seconds.
func speaksTLS(api string) bool {
	u, err := url.Parse(api)
	if err != nil {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} // only to see whether TLS is spoken
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// isTimeout reports whether err is a net.Error that timed out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// short is err's text on one line.
func short(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
