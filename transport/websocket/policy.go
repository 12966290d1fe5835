package websocket

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Policy decides which targets a tunnel may reach inside a sprite. The
// sprite's own loopback (localhost, 127.0.0.0/8, ::1) is always allowed;
// Allow widens it. A host name other than localhost is allowed only by a
// rule naming it: names are not resolved to be checked, so that no
// resolver can smuggle an address past the policy.
type Policy struct {
	Allow []Rule
}

// Rule allows a network prefix or a host name, on a range of ports.
type Rule struct {
	Prefix  netip.Prefix // set for an address rule
	Host    string       // set for a name rule (lower case)
	MinPort int          // 0 with MaxPort 0 means every port
	MaxPort int
}

// ParseRule parses an allow rule: CIDR ("10.0.0.0/8", "fd00::/8"), an
// address ("10.1.2.3", "[fd00::1]"), or a host name ("db.internal"), each
// optionally followed by ":PORT" or ":LOW-HIGH".
func ParseRule(s string) (Rule, error) {
	var r Rule
	host, ports := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return r, fmt.Errorf("allow rule %q: missing ]", s)
		}
		host, ports = s[1:end], strings.TrimPrefix(s[end+1:], ":")
		if s[end+1:] != "" && !strings.HasPrefix(s[end+1:], ":") {
			return r, fmt.Errorf("allow rule %q: expected :PORT after ]", s)
		}
	} else if strings.Count(s, ":") == 1 {
		host, ports, _ = strings.Cut(s, ":")
	}
	if ports != "" {
		lo, hi, isRange := strings.Cut(ports, "-")
		var err error
		if r.MinPort, err = parseRulePort(lo); err != nil {
			return r, fmt.Errorf("allow rule %q: %w", s, err)
		}
		r.MaxPort = r.MinPort
		if isRange {
			if r.MaxPort, err = parseRulePort(hi); err != nil {
				return r, fmt.Errorf("allow rule %q: %w", s, err)
			}
			if r.MaxPort < r.MinPort {
				return r, fmt.Errorf("allow rule %q: port range runs backwards", s)
			}
		}
	}
	if p, err := netip.ParsePrefix(host); err == nil {
		r.Prefix = p.Masked()
		return r, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		r.Prefix = netip.PrefixFrom(a, a.BitLen())
		return r, nil
	}
	if err := dialer.CheckHost(host); err != nil || strings.Contains(host, ":") {
		return r, fmt.Errorf("allow rule %q: not a CIDR, address or host name", s)
	}
	r.Host = strings.ToLower(host)
	return r, nil
}

func parseRulePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not in 1-65535", s)
	}
	return p, nil
}

// String formats r as ParseRule reads it.
func (r Rule) String() string {
	s := r.Host
	if r.Prefix.IsValid() {
		s = r.Prefix.String()
		if r.Prefix.IsSingleIP() {
			s = r.Prefix.Addr().String()
			if r.Prefix.Addr().Is6() && r.MinPort != 0 {
				s = "[" + s + "]"
			}
		}
	}
	switch {
	case r.MinPort == 0:
	case r.MinPort == r.MaxPort:
		s += ":" + strconv.Itoa(r.MinPort)
	default:
		s += ":" + strconv.Itoa(r.MinPort) + "-" + strconv.Itoa(r.MaxPort)
	}
	return s
}

func (r Rule) match(host string, addr netip.Addr, isAddr bool, port int) bool {
	if r.MinPort != 0 && (port < r.MinPort || port > r.MaxPort) {
		return false
	}
	if isAddr {
		return r.Prefix.IsValid() && r.Prefix.Contains(addr)
	}
	return r.Host != "" && asciiEqualFold(r.Host, host)
}

// asciiEqualFold is strings.EqualFold for host names: ASCII letters only.
// (strings.EqualFold folds Unicode too: the Kelvin sign matches k, and the
// long s matches s, so "localhoſt" would pass for localhost and
// "\u212Aube.internal" for a rule naming kube.internal, while a resolver
// reads them as other names.)
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 0x80 || y >= 0x80 {
			return false
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isLocalhost reports whether host is the name localhost, in any (ASCII)
// case.
func isLocalhost(host string) bool { return asciiEqualFold(host, "localhost") }

// Check returns nil if the policy allows host:port, and an error matching
// dialer.ErrTargetForbidden otherwise. A nil Policy allows only loopback.
func (p *Policy) Check(host string, port int) error {
	addr, err := netip.ParseAddr(host)
	isAddr := err == nil
	if isAddr {
		addr = addr.Unmap().WithZone("")
		if addr.IsLoopback() {
			return nil
		}
	} else if isLocalhost(host) {
		return nil
	}
	if p != nil {
		for _, r := range p.Allow {
			if r.match(host, addr, isAddr, port) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s is outside the sprite's loopback and no allow rule matches", dialer.ErrTargetForbidden, dialer.HostPort(host, port))
}

// dialTarget dials host:port on network. The name localhost, in any case,
// is never sent to a resolver (RFC 6761 §6.3): a machine whose hosts file
// lacks it (scratch and distroless images have none) would otherwise let a
// DNS server pick the address of a target the policy allowed as loopback.
// It dials 127.0.0.1, then ::1 if that fails; the first error is returned
// if both do. ctx bounds the dials.
func dialTarget(ctx context.Context, network dialer.ContextDialer, host string, port int) (net.Conn, error) {
	if !isLocalhost(host) {
		return network.DialContext(ctx, "tcp", dialer.HostPort(host, port))
	}
	p := strconv.Itoa(port)
	c, err := network.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", p))
	if err == nil || ctx.Err() != nil {
		return c, err
	}
	if c6, err6 := network.DialContext(ctx, "tcp", net.JoinHostPort("::1", p)); err6 == nil {
		return c6, nil
	}
	return nil, err
}
