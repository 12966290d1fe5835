package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	// width returns the terminal's width in columns, 0 if unknown (nil:
	// unknown): the status line is fitted to it, so that a redraw never
	// wraps (a wrapped line cannot be wiped with \r, and each redraw would
	// leave one behind).
	width func() int

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

// status draws line as the status line, fitted to the width. Line
// wrapping is off while it is drawn (DECAWM, ESC [?7l): a terminal
// narrower than the line, or one whose width is unknown, clips it at the
// right edge instead of wrapping it onto a second row that the next
// redraw could not wipe.
func (c *console) status(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	width := 0
	if c.width != nil {
		width = c.width()
	}
	fmt.Fprintf(c.out, "\r\x1b[K\x1b[?7l%s\x1b[?7h", fit(line, width))
	c.shown = true
}

// summary replaces the status line with line for good, as a line of its
// own: the totals left on the screen once forwarding stopped.
func (c *console) summary(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearStatus()
	fmt.Fprintf(c.out, "%sstopped: %s\n", c.prefix, line)
}

// fit shortens line to width columns (each rune one column), when width is
// known: first by dropping its last " · " parts, then by cutting it with
// an ellipsis.
func fit(line string, width int) string {
	if width <= 0 || utf8.RuneCountInString(line) < width {
		return line
	}
	// Keep a column free: some terminals wrap on writing the last one.
	for utf8.RuneCountInString(line) >= width {
		i := strings.LastIndex(line, " · ")
		if i < 0 {
			break
		}
		line = line[:i]
	}
	if r := []rune(line); len(r) >= width {
		if width <= 1 {
			return ""
		}
		line = string(r[:width-2]) + "…"
	}
	return line
}

// done wipes the status line for good.
func (c *console) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearStatus()
}

// statusLine sums the sessions' counters into one line, with the count of
// resumes of their tunnels if any.
func statusLine(sessions []*sprites.ProxySession, resumed int) string {
	var t sprites.Stats
	for _, s := range sessions {
		st := s.Stats()
		t.Accepted += st.Accepted
		t.Active += st.Active
		t.Failed += st.Failed
		t.Sent += st.Sent
		t.Received += st.Received
	}
	line := countsLine(t)
	if resumed > 0 {
		line += fmt.Sprintf(" · resumed %d", resumed)
	}
	return line
}

// countsLine is the status line of counters t: "2 open, 5 total · ↑ 1 KiB
// ↓ 3 MiB", and the failures if any.
func countsLine(t sprites.Stats) string {
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
