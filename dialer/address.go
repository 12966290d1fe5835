package dialer

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// MaxHostLength is the longest host name a target address may carry (the
// DNS limit).
const MaxHostLength = 253

// CheckNetwork returns nil for "tcp", "tcp4" and "tcp6", and an error
// matching ErrUnsupportedNetwork otherwise.
func CheckNetwork(network string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return nil
	}
	return fmt.Errorf("%w %q: only tcp is tunnelled", ErrUnsupportedNetwork, network)
}

// CheckPort returns an error matching ErrBadAddress unless port is in
// 1-65535, or 0 when zeroOK (a local port the OS picks).
func CheckPort(port int, zeroOK bool) error {
	if port == 0 && zeroOK || port >= 1 && port <= 65535 {
		return nil
	}
	if zeroOK {
		return fmt.Errorf("%w: port %d is outside 0-65535", ErrBadAddress, port)
	}
	return fmt.Errorf("%w: port %d is outside 1-65535", ErrBadAddress, port)
}

// CheckHost returns an error matching ErrBadAddress unless host is a
// plausible host name or IP literal: not empty, at most MaxHostLength bytes,
// no spaces, controls, slashes or other characters a host never holds.
// Brackets around an IPv6 literal are not allowed here (see SplitAddress).
func CheckHost(host string) error {
	if host == "" {
		return fmt.Errorf("%w: empty host", ErrBadAddress)
	}
	if len(host) > MaxHostLength {
		return fmt.Errorf("%w: host is %d bytes, longer than %d", ErrBadAddress, len(host), MaxHostLength)
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == ':' || c == '%'
		if !ok {
			return fmt.Errorf("%w: host %q has a byte %q that no host name holds", ErrBadAddress, host, c)
		}
	}
	return nil
}

// SplitAddress checks network and splits address ("host:port", with an IPv6
// host in brackets) into a host without brackets and a port in 1-65535.
func SplitAddress(network, address string) (host string, port int, err error) {
	if err := CheckNetwork(network); err != nil {
		return "", 0, err
	}
	h, p, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %q is not host:port", ErrBadAddress, address)
	}
	port, err = strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("%w: port %q in %q is not a number", ErrBadAddress, p, address)
	}
	if err := CheckPort(port, false); err != nil {
		return "", 0, err
	}
	if err := CheckHost(h); err != nil {
		return "", 0, err
	}
	return h, port, nil
}

// HostPort joins host and port into an address for SplitAddress: an empty
// host means "localhost", and an IPv6 host may come with or without
// brackets.
func HostPort(host string, port int) string {
	if host == "" {
		host = "localhost"
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// CheckSprite returns an error matching ErrBadAddress unless name can be a
// sprite's name in the protocol's URL: 1-255 bytes of [A-Za-z0-9._-], and
// not "." or "..".
func CheckSprite(name string) error {
	if name == "" || len(name) > 255 || name == "." || name == ".." {
		return fmt.Errorf("%w: sprite name %q", ErrBadAddress, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: sprite name %q has a byte %q outside [A-Za-z0-9._-]", ErrBadAddress, name, c)
		}
	}
	return nil
}
