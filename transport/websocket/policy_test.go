package websocket

import (
	"errors"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// TestPolicyLookalikes: spellings that some resolver or socket layer reads
// as an address are checked as what the policy sees, never resolved: only
// real loopback literals and localhost (any case) pass the default policy.
func TestPolicyLookalikes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		host  string
		allow bool
	}{
		{"localhost", true},
		{"LocalHost", true},
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"::1", true},
		{"::1%lo", true},                  // a zone on loopback is still loopback
		{"::ffff:127.0.0.1", true},        // IPv4-mapped loopback is loopback
		{"localhost.", false},             // trailing dot: a name a resolver answers
		{"localhost.localdomain", false},  // a name
		{"sub.localhost", false},          // a name
		{"lоcalhost", false},              // Cyrillic о
		{"ｌｏｃａｌｈｏｓｔ", false},              // fullwidth
		{"0x7f000001", false},             // hex, as inet_aton reads it
		{"0x7f.1", false},                 // hex, short form
		{"0177.0.0.1", false},             // octal
		{"2130706433", false},             // an integer
		{"127.1", false},                  // short form
		{"0.0.0.0", false},                // reaches this machine on Linux
		{"::", false},                     // likewise
		{"::ffff:169.254.169.254", false}, // IPv4-mapped metadata address
		{"::ffff:10.0.0.1", false},        // IPv4-mapped private
		{"64:ff9b::7f00:1", false},        // NAT64 of 127.0.0.1
		{"2002:7f00:1::", false},          // 6to4 of 127.0.0.1
		{"::127.0.0.1", false},            // IPv4-compatible, deprecated
		{"fe80::1%lo", false},             // link-local with a zone
		{"169.254.169.254", false},        // cloud metadata
		{"10.0.0.1", false},
		{"127.0.0.1.nip.io", false}, // DNS that answers 127.0.0.1
	}
	var p *Policy
	for _, tc := range cases {
		err := p.Check(tc.host, 80)
		if tc.allow && err != nil {
			t.Errorf("Check(%q) = %v, want allowed", tc.host, err)
		}
		if !tc.allow && !errors.Is(err, dialer.ErrTargetForbidden) {
			t.Errorf("Check(%q) = %v, want ErrTargetForbidden", tc.host, err)
		}
	}
}
