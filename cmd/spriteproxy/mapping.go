package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spriteproxy/spriteproxy/dialer"
	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

// mappingSyntax is what a MAPPING argument may look like.
const mappingSyntax = "PORT, LOCAL:REMOTE or LOCAL:HOST:REMOTE (an IPv6 HOST in brackets)"

// parseMapping parses one MAPPING argument of forward:
//
//	PORT               local PORT to PORT on the sprite's localhost
//	LOCAL:REMOTE       local LOCAL to REMOTE on the sprite's localhost
//	LOCAL:HOST:REMOTE  local LOCAL to HOST:REMOTE as seen from inside the sprite
//
// LOCAL may be 0 (the OS picks a free port); REMOTE is 1-65535; HOST is a
// name, an IPv4 address or an IPv6 address in brackets ("[fd00::1]"), kept
// without brackets in RemoteHost. The error says what is wrong, not which
// argument: the caller adds that.
func parseMapping(s string) (sprites.PortMapping, error) {
	var local, host, remote string
	if i := strings.IndexByte(s, '['); i >= 0 {
		// LOCAL:[v6]:REMOTE
		j := strings.IndexByte(s, ']')
		if i == 0 || s[i-1] != ':' || j < i || j+1 >= len(s) || s[j+1] != ':' {
			return sprites.PortMapping{}, errors.New("a bracketed IPv6 HOST goes between LOCAL and REMOTE, as in 0:[fd00::1]:5432")
		}
		local, host, remote = s[:i-1], s[i+1:j], s[j+2:]
		if strings.ContainsAny(local, ":[]") || strings.ContainsAny(remote, ":[]") {
			return sprites.PortMapping{}, errors.New("a bracketed IPv6 HOST goes between LOCAL and REMOTE, as in 0:[fd00::1]:5432")
		}
		if host == "" {
			return sprites.PortMapping{}, errors.New("empty HOST")
		}
		if !strings.Contains(host, ":") {
			return sprites.PortMapping{}, fmt.Errorf("brackets are for IPv6 addresses, not %q", host)
		}
	} else {
		parts := strings.Split(s, ":")
		switch len(parts) {
		case 1:
			local, remote = parts[0], parts[0]
		case 2:
			local, remote = parts[0], parts[1]
		case 3:
			local, host, remote = parts[0], parts[1], parts[2]
			if host == "" {
				return sprites.PortMapping{}, errors.New("empty HOST")
			}
		default:
			return sprites.PortMapping{}, errors.New("too many colons: an IPv6 HOST must be in brackets, as in 0:[fd00::1]:5432")
		}
	}
	lp, err := parsePort(local, "LOCAL", true)
	if err != nil {
		return sprites.PortMapping{}, err
	}
	rp, err := parsePort(remote, "REMOTE", false)
	if err != nil {
		return sprites.PortMapping{}, err
	}
	if host != "" {
		if err := dialer.CheckHost(host); err != nil {
			return sprites.PortMapping{}, fmt.Errorf("HOST %q is not a host name or IP address", host)
		}
	}
	return sprites.PortMapping{LocalPort: lp, RemotePort: rp, RemoteHost: host}, nil
}

// parsePort parses a decimal port, 1-65535, or 0 too when zeroOK.
func parsePort(s, what string, zeroOK bool) (int, error) {
	lo := 1
	if zeroOK {
		lo = 0
	}
	if s == "" {
		return 0, fmt.Errorf("empty %s port", what)
	}
	if strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%s port %q is not a number", what, s)
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < lo || p > 65535 {
		return 0, fmt.Errorf("%s port %s is outside %d-65535", what, s, lo)
	}
	return p, nil
}

// parseMappings parses the MAPPING arguments; args[0] is argument number
// first. It rejects a local port given twice, which could never be
// listened on twice anyway.
func parseMappings(args []string, first int) ([]sprites.PortMapping, error) {
	ms := make([]sprites.PortMapping, 0, len(args))
	seen := make(map[int]string)
	for i, a := range args {
		m, err := parseMapping(a)
		if err != nil {
			return nil, fmt.Errorf("bad mapping %q (argument %d): %v; expected %s", a, first+i, err, mappingSyntax)
		}
		if prev, ok := seen[m.LocalPort]; ok && m.LocalPort != 0 {
			return nil, fmt.Errorf("bad mapping %q (argument %d): local port %d is already used by mapping %q", a, first+i, m.LocalPort, prev)
		}
		seen[m.LocalPort] = a
		ms = append(ms, m)
	}
	return ms, nil
}

// remoteString names a mapping's target for people: "db:5432", or with a
// host "db:10.0.0.5:5432", "db:[fd00::1]:5432".
func remoteString(sprite string, m sprites.PortMapping) string {
	if m.RemoteHost == "" {
		return sprite + ":" + strconv.Itoa(m.RemotePort)
	}
	return sprite + ":" + dialer.HostPort(m.RemoteHost, m.RemotePort)
}

// targetAddr is the address a mapping dials inside the sprite.
func targetAddr(m sprites.PortMapping) string {
	return dialer.HostPort(m.RemoteHost, m.RemotePort)
}
