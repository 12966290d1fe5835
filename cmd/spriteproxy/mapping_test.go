package main

import (
	"strings"
	"testing"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

func TestParseMapping(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want sprites.PortMapping
	}{
		{"5432", sprites.PortMapping{LocalPort: 5432, RemotePort: 5432}},
		{"0:5432", sprites.PortMapping{LocalPort: 0, RemotePort: 5432}},
		{"15432:5432", sprites.PortMapping{LocalPort: 15432, RemotePort: 5432}},
		{"65535:1", sprites.PortMapping{LocalPort: 65535, RemotePort: 1}},
		{"0:db.internal:5432", sprites.PortMapping{RemoteHost: "db.internal", RemotePort: 5432}},
		{"0:localhost:6379", sprites.PortMapping{RemoteHost: "localhost", RemotePort: 6379}},
		{"8080:10.0.0.5:80", sprites.PortMapping{LocalPort: 8080, RemoteHost: "10.0.0.5", RemotePort: 80}},
		{"0:[::1]:5432", sprites.PortMapping{RemoteHost: "::1", RemotePort: 5432}},
		{"0:[fdf::1]:22", sprites.PortMapping{RemoteHost: "fdf::1", RemotePort: 22}},
		{"5432:[2001:db8::5]:5432", sprites.PortMapping{LocalPort: 5432, RemoteHost: "2001:db8::5", RemotePort: 5432}},
		{"007:0080", sprites.PortMapping{LocalPort: 7, RemotePort: 80}},
	}
	for _, tt := range good {
		got, err := parseMapping(tt.in)
		if err != nil {
			t.Errorf("parseMapping(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("parseMapping(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}

	bad := []struct {
		in, why string // why: a part of the error
	}{
		{"", "empty LOCAL port"},
		{"0", "REMOTE port 0 is outside 1-65535"},
		{"abc", `LOCAL port "abc" is not a number`},
		{"-1", `LOCAL port "-1" is not a number`},
		{"+80", `is not a number`},
		{"65536", "LOCAL port 65536 is outside 0-65535"},
		{"0:65536", "REMOTE port 65536 is outside 1-65535"},
		{"99999999999999999999", "outside"},
		{":5432", "empty LOCAL port"},
		{"5432:", "empty REMOTE port"},
		{"0:0", "REMOTE port 0"},
		{"0::5432", "empty HOST"},
		{"0:db:x", `REMOTE port "x" is not a number`},
		{"0:fdf::1:5432", "IPv6 HOST must be in brackets"},
		{"1:2:3:4", "too many colons"},
		{"0:[]:5432", "empty HOST"},
		{"0:[::1]5432", "bracketed IPv6 HOST goes between"},
		{"[::1]:5432", "bracketed IPv6 HOST goes between"},
		{"0:[::1:5432", "bracketed IPv6 HOST goes between"},
		{"0:[::1]:", "empty REMOTE port"},
		{"0:[10.0.0.1]:80", "brackets are for IPv6"},
		{"0:[::1]:[::2]:80", "bracketed IPv6 HOST goes between"},
		{"0:bad host:80", "not a host name"},
		{"0:a/b:80", "not a host name"},
		{"0:" + strings.Repeat("a", 254) + ":80", "not a host name"},
		{" 5432", "not a number"},
	}
	for _, tt := range bad {
		got, err := parseMapping(tt.in)
		if err == nil {
			t.Errorf("parseMapping(%q) = %+v, want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.why) {
			t.Errorf("parseMapping(%q): %q, want it to say %q", tt.in, err, tt.why)
		}
	}
}

func TestParseMappings(t *testing.T) {
	t.Parallel()
	ms, err := parseMappings([]string{"0:5432", "0:6379", "8080:[::1]:80"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || ms[2].RemoteHost != "::1" {
		t.Fatalf("got %+v", ms)
	}

	// The error names the argument and says what was expected.
	_, err = parseMappings([]string{"5432", "x:1"}, 2)
	if err == nil {
		t.Fatal("no error for x:1")
	}
	for _, want := range []string{`bad mapping "x:1" (argument 3)`, "expected PORT, LOCAL:REMOTE or LOCAL:HOST:REMOTE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}

	// A local port twice cannot work; 0 twice can.
	if _, err := parseMappings([]string{"0:1", "0:2"}, 2); err != nil {
		t.Errorf("0 twice: %v", err)
	}
	_, err = parseMappings([]string{"5432", "5432:6000"}, 2)
	if err == nil || !strings.Contains(err.Error(), `local port 5432 is already used by mapping "5432"`) {
		t.Errorf("5432 twice: %v", err)
	}
}

func TestRemoteString(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		m    sprites.PortMapping
		want string
	}{
		{sprites.PortMapping{RemotePort: 5432}, "db:5432"},
		{sprites.PortMapping{RemoteHost: "10.0.0.5", RemotePort: 80}, "db:10.0.0.5:80"},
		{sprites.PortMapping{RemoteHost: "fdf::1", RemotePort: 22}, "db:[fdf::1]:22"},
	} {
		if got := remoteString("db", tt.m); got != tt.want {
			t.Errorf("remoteString(%+v) = %q, want %q", tt.m, got, tt.want)
		}
	}
}

func TestBytesString(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB",
		64 << 20: "64 MiB", 3<<30 + 1<<29: "3.5 GiB",
	} {
		if got := bytesString(n); got != want {
			t.Errorf("bytesString(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseFlagsInterspersed(t *testing.T) {
	t.Parallel()
	c := &cli{stdout: newOutput(), stderr: newOutput()}
	fs := newFlagSet("forward")
	j := fs.Bool("json", false, "")
	tok := fs.String("token", "", "")
	pos, err := c.parseFlags(fs, []string{"db", "--json", "5432", "--token", "t", "--", "--not-a-flag"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !*j || *tok != "t" || strings.Join(pos, " ") != "db 5432 --not-a-flag" {
		t.Errorf("json=%v token=%q pos=%q", *j, *tok, pos)
	}
}
