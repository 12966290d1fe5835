package main

import (
	"flag"
	"fmt"
	"net/url"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// proxyFlags are --proxy and --no-proxy, shared by forward and connect.
type proxyFlags struct {
	url  *string
	none *bool
}

// addProxyFlags defines --proxy and --no-proxy on fs.
func addProxyFlags(fs *flag.FlagSet) proxyFlags {
	return proxyFlags{
		url:  fs.String("proxy", "", "the HTTP proxy's `URL` for the API, http://[user:pass@]host:port (default $HTTPS_PROXY/$HTTP_PROXY, except $NO_PROXY hosts and loopback)"),
		none: fs.Bool("no-proxy", false, "dial the API directly, whatever the environment says"),
	}
}

// choose returns the websocket.Dialer's Proxy for the flags: nil (the
// environment) when neither is given.
func (p proxyFlags) choose() (func(*url.URL) (*url.URL, error), error) {
	switch {
	case *p.none && *p.url != "":
		return nil, fmt.Errorf("--proxy and --no-proxy cannot be used together")
	case *p.none:
		return websocket.NoProxy, nil
	case *p.url == "":
		return nil, nil
	}
	u, err := url.Parse(*p.url)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("bad --proxy URL %q: expected http://host:port or http://user:pass@host:port", redactURL(*p.url))
	}
	return func(*url.URL) (*url.URL, error) { return u, nil }, nil
}
