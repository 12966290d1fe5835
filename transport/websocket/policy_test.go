package websocket

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// policyCases are spellings that some resolver or socket layer reads as an
// address, or as another name: the policy checks each as what it sees,
// never resolving it. Only real loopback literals and localhost (any ASCII
// case) pass the default policy; an allow rule passes what it names and no
// lookalike of it.
var policyCases = []struct {
	host  string
	rules []string // the Policy's Allow rules; none: the default policy
	allow bool
}{
	// Loopback, as the default policy allows it.
	{host: "localhost", allow: true},
	{host: "LocalHost", allow: true},
	{host: "LOCALHOST", allow: true},
	{host: "127.0.0.1", allow: true},
	{host: "127.255.255.254", allow: true},
	{host: "::1", allow: true},
	{host: "0:0:0:0:0:0:0:1", allow: true},
	{host: "::1%lo", allow: true},           // a zone on loopback is still loopback
	{host: "::ffff:127.0.0.1", allow: true}, // IPv4-mapped loopback is loopback
	// Trailing dots: names a resolver answers.
	{host: "localhost."},
	{host: "127.0.0.1."},
	{host: "::1."},
	// Other names that a resolver (or search domain) may answer with
	// anything.
	{host: "localhost.localdomain"},
	{host: "sub.localhost"},
	{host: "127.0.0.1.nip.io"},
	{host: "localhost6"},
	// Unicode lookalikes: a resolver reads other names.
	{host: "lоcalhost"},          // Cyrillic о
	{host: "ｌｏｃａｌｈｏｓｔ"},          // fullwidth
	{host: "localhoſt"},          // long s, which strings.EqualFold folds to s
	{host: "１２７.０.０.１"},          // fullwidth digits
	{host: "127。0。0。1"},          // ideographic full stops, which IDNA maps to dots
	{host: "\u212Aube.internal"}, // Kelvin sign, which strings.EqualFold folds to k
	{host: "\u212Aube.internal", rules: []string{"kube.internal"}},
	// Numbers in the forms inet_aton reads.
	{host: "0x7f000001"}, // hex
	{host: "0x7f.1"},     // hex, short form
	{host: "0177.0.0.1"}, // octal
	{host: "017700000001"},
	{host: "2130706433"}, // an integer
	{host: "127.1"},      // short form
	{host: "127.0.1"},
	{host: "0x0a000001", rules: []string{"10.0.0.0/8"}}, // 10.0.0.1 in hex
	{host: "012.0.0.1", rules: []string{"10.0.0.0/8"}},  // octal: 10.0.0.1 to inet_aton
	{host: "167772161", rules: []string{"10.0.0.0/8"}},  // 10.0.0.1 as an integer
	// What reaches this machine or its neighbours.
	{host: "0.0.0.0"}, // reaches this machine on Linux
	{host: "::"},      // likewise
	{host: "169.254.169.254"},
	{host: "10.0.0.1"},
	// IPv4-mapped, NAT64, 6to4, IPv4-compatible: other spellings of IPv4.
	{host: "::ffff:169.254.169.254"},
	{host: "::ffff:10.0.0.1"},
	{host: "::ffff:a00:1"},
	{host: "::ffff:10.0.0.1", rules: []string{"10.0.0.0/8"}, allow: true}, // the same address as 10.0.0.1
	{host: "::ffff:169.254.169.254", rules: []string{"10.0.0.0/8"}},
	{host: "64:ff9b::7f00:1"}, // NAT64 of 127.0.0.1
	{host: "64:ff9b::a9fe:a9fe"},
	{host: "64:ff9b::a00:1", rules: []string{"10.0.0.0/8"}}, // a NAT64 gateway would reach 10.0.0.1
	{host: "2002:7f00:1::"},                                 // 6to4 of 127.0.0.1
	{host: "2002:a00:1::", rules: []string{"10.0.0.0/8"}},
	{host: "::127.0.0.1"}, // IPv4-compatible, deprecated
	{host: "::a00:1", rules: []string{"10.0.0.0/8"}},
	// Zones.
	{host: "fe80::1%lo"},
	{host: "fe80::1%eth0", rules: []string{"fe80::/10"}, allow: true},
	{host: "127.0.0.1%lo"}, // IPv4 has no zones: a name
	// Name rules match the name, in any ASCII case, and nothing else.
	{host: "db.internal", rules: []string{"db.internal"}, allow: true},
	{host: "DB.Internal", rules: []string{"db.internal"}, allow: true},
	{host: "db.internal.", rules: []string{"db.internal"}},
	{host: "db.internal.evil.example", rules: []string{"db.internal"}},
	{host: "xdb.internal", rules: []string{"db.internal"}},
	{host: "db.internal", rules: []string{"db.internal:5432"}}, // port 80 is not 5432
}

// TestPolicyLookalikes runs policyCases through Policy.Check.
func TestPolicyLookalikes(t *testing.T) {
	t.Parallel()
	for _, tc := range policyCases {
		p := &Policy{}
		for _, s := range tc.rules {
			r, err := ParseRule(s)
			if err != nil {
				t.Fatal(err)
			}
			p.Allow = append(p.Allow, r)
		}
		if len(tc.rules) == 0 {
			p = nil // the default policy
		}
		err := p.Check(tc.host, 80)
		if tc.allow && err != nil {
			t.Errorf("Check(%q) with %q = %v, want allowed", tc.host, tc.rules, err)
		}
		if !tc.allow && !errors.Is(err, dialer.ErrTargetForbidden) {
			t.Errorf("Check(%q) with %q = %v, want ErrTargetForbidden", tc.host, tc.rules, err)
		}
	}
}

// literalOnly is a sprite network with no hosts file and no DNS: it
// records what it is asked to dial and refuses every dial, so that a name
// reaching it is seen, not resolved.
type literalOnly struct {
	mu    sync.Mutex
	addrs []string
}

func (n *literalOnly) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addrs = append(n.addrs, addr)
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

// TestPolicyLoopbackWithoutHosts: every loopback spelling of policyCases
// that the default policy allows is dialed as an IP literal, on a network
// that has no hosts file and no DNS: localhost (any case) as 127.0.0.1
// then ::1, so a machine whose hosts file lacks localhost cannot send it
// elsewhere.
func TestPolicyLoopbackWithoutHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range policyCases {
		if !tc.allow || len(tc.rules) > 0 {
			continue
		}
		nw := &literalOnly{}
		if _, err := dialTarget(context.Background(), nw, tc.host, 80); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dialTarget(%q) = %v, want the network's refusal", tc.host, err)
		}
		for _, a := range nw.addrs {
			ap, err := netip.ParseAddrPort(a)
			if err != nil || !ap.Addr().Unmap().IsLoopback() {
				t.Errorf("dialTarget(%q) asked the network for %q, not a loopback literal", tc.host, a)
			}
		}
		if isLocalhost(tc.host) && (len(nw.addrs) != 2 || nw.addrs[0] != "127.0.0.1:80" || nw.addrs[1] != "[::1]:80") {
			t.Errorf("dialTarget(%q) dialed %q, want 127.0.0.1:80 then [::1]:80", tc.host, nw.addrs)
		}
	}
}
