package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

// console writes forward's output: lines on stdout, warnings on stderr
// and, on a terminal, a status line that is redrawn in place at the bottom.
// A warning first wipes the status line, so that the two never mix. It is
// safe for concurrent use (warnings come from the sessions' goroutines).
type console struct {
	mu     sync.Mutex
	out    io.Writer
	err    io.Writer
	prefix string // "spriteproxy forward: "
	shown  bool   // a status line is on out now

	lastWarn   string
	lastWarnAt time.Time
	repeats    int // warnings like lastWarn left out since it was printed
}

// clearStatus wipes the status line, if one is shown. c.mu is held.
func (c *console) clearStatus() {
	if c.shown {
		io.WriteString(c.out, "\r\x1b[K")
		c.shown = false
	}
}

// warn prints one line to stderr. The same line again within a second is
// left out (a client retrying against a dead target would flood the
// screen); the count of those left out follows on the next one printed.
func (c *console) warn(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if line == c.lastWarn && now.Sub(c.lastWarnAt) < time.Second {
		c.repeats++
		return
	}
	c.clearStatus()
	if c.repeats > 0 {
		fmt.Fprintf(c.err, "%s(%d more like the last)\n", c.prefix, c.repeats)
	}
	fmt.Fprintf(c.err, "%s%s\n", c.prefix, line)
	c.lastWarn, c.lastWarnAt, c.repeats = line, now, 0
}

// Write makes the console an io.Writer for loggers: what is written goes to
// stderr, below the status line.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearStatus()
	return c.err.Write(p)
}

// status draws line as the status line.
func (c *console) status(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, "\r\x1b[K%s", line)
	c.shown = true
}

// done wipes the status line for good.
func (c *console) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearStatus()
}

// statusLine sums the sessions' counters into one line.
func statusLine(sessions []*sprites.ProxySession) string {
	var t sprites.Stats
	for _, s := range sessions {
		st := s.Stats()
		t.Accepted += st.Accepted
		t.Active += st.Active
		t.Failed += st.Failed
		t.Sent += st.Sent
		t.Received += st.Received
	}
	line := fmt.Sprintf("%d open, %d total · ↑ %s ↓ %s", t.Active, t.Accepted, bytesString(t.Sent), bytesString(t.Received))
	if t.Failed > 0 {
		line += fmt.Sprintf(" · %d failed", t.Failed)
	}
	return line
}

// bytesString formats n bytes with a binary unit: "512 B", "1.5 MiB".
func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	if n%div == 0 {
		return fmt.Sprintf("%d %ciB", n/div, "KMGTP"[exp])
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
