package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// newFlagSet returns a flag set for cmd that prints nothing by itself:
// parseFlags reports errors as one line, and -h prints the usage to stdout.
func newFlagSet(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("spriteproxy "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// errHelp is returned by parseFlags after it printed the usage for -h.
var errHelp = errors.New("help shown")

// parseFlags parses args with fs, allowing flags after positional arguments
// ("forward db 5432 --json"), as users type them. Everything after "--" is
// positional. It returns the positional arguments, errHelp once the usage is
// printed for -h, or an error of one line.
func (c *cli) parseFlags(fs *flag.FlagSet, args []string, synopsis string) ([]string, error) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(c.stdout)
			fmt.Fprintf(c.stdout, "Usage: %s\n\nFlags:\n", synopsis)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
			return nil, errHelp
		}
		if err != nil {
			return nil, fmt.Errorf("%v (see %s -h)", err, fs.Name())
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
