//go:build !(linux || darwin)

package main

import "os"

// termWidth returns 0, unknown, where the OS's call for a terminal's
// width is not wired up (Windows): the status line is then fitted to
// $COLUMNS if set, and clipped by the terminal otherwise.
func termWidth(*os.File) int { return 0 }
