// Command report runs spriteproxy's benchmarks with repetitions and writes
// a markdown table of medians, min–max, ratios to raw TCP and to the
// reference SDK's way, and the targets of issue #6 with pass or fail.
//
//	go run ./benchmarks/cmd/report                      # full: -count 5, 1 s per row, 2,000 idle tunnels
//	go run ./benchmarks/cmd/report -quick               # CI: -count 3, 200 ms per row, 200 idle tunnels
//	go run ./benchmarks/cmd/report -readme benchmarks/README.md
//	go run ./benchmarks/cmd/report -in saved.txt        # re-render saved `go test -bench` output
//
// It runs, from the module's root, `go test -run '^$' -bench
// '^Benchmark(Bulk|Parallel|Setup)$' -count 1 -benchtime T ./benchmarks/`
// C times (rounds, so that every row of a round ran close in time to its
// baselines and a ratio can be taken within a round), and then
// BenchmarkIdleTunnel with -benchtime 1x (it measures once per run),
// echoing the output to stderr as it comes.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Markers around the generated part of a README.
const (
	beginMarker = "<!-- report:begin -->"
	endMarker   = "<!-- report:end -->"
)

type mode struct {
	count, idleCount int
	benchtime        string
	tunnels          int
	wanOps           int // ops (tunnels, or transfers) per WAN row
}

var (
	full  = mode{count: 5, idleCount: 3, benchtime: "1s", tunnels: 2000, wanOps: 5}
	quick = mode{count: 3, idleCount: 1, benchtime: "200ms", tunnels: 200, wanOps: 2}
)

func main() {
	var (
		isQuick   = flag.Bool("quick", false, "quick mode for CI: -count 3, -benchtime 200ms, 200 idle tunnels, one idle run")
		count     = flag.Int("count", 0, "repetitions of each throughput and setup row (0: the mode's)")
		idleCount = flag.Int("idle-count", 0, "repetitions of BenchmarkIdleTunnel (0: the mode's)")
		benchtime = flag.String("benchtime", "", "go test -benchtime for the throughput and setup rows (empty: the mode's)")
		tunnels   = flag.Int("tunnels", 0, "idle tunnels per BenchmarkIdleTunnel run (0: the mode's)")
		bench     = flag.String("bench", "^Benchmark(Bulk|Parallel|Setup)$", "go test -bench for the throughput and setup rows")
		noIdle    = flag.Bool("no-idle", false, "skip BenchmarkIdleTunnel")
		wan       = flag.Bool("wan", false, "also run the WAN rows (BenchmarkWAN: first byte at 0-150 ms RTT, bulk at 50 ms with loss; ~5 min, -quick ~2 min)")
		wanOnly   = flag.Bool("wan-only", false, "run only the WAN rows")
		wanOps    = flag.Int("wan-ops", 0, "tunnels (or transfers) per WAN row (0: the mode's, 5 or 2 with -quick)")
		maxOther  = flag.Float64("max-other", 0, "run a round again when other processes kept more than this many cores busy during it (0: never)")
		retries   = flag.Int("retries", 3, "how many times -max-other may run one round again")
		in        = flag.String("in", "", "render this saved `go test -bench` output instead of running")
		raw       = flag.String("raw", "", "also save the raw `go test` output to this file")
		out       = flag.String("o", "", "write the markdown here (default stdout)")
		readme    = flag.String("readme", "", "replace the part of this file between "+beginMarker+" and "+endMarker+" with the report")
	)
	flag.Parse()
	m := full
	if *isQuick {
		m = quick
	}
	m.count = or(*count, m.count)
	m.idleCount = or(*idleCount, m.idleCount)
	m.tunnels = or(*tunnels, m.tunnels)
	m.wanOps = or(*wanOps, m.wanOps)
	if *benchtime != "" {
		m.benchtime = *benchtime
	}

	var (
		output   []byte
		commands []string
		others   []float64 // cores other processes kept busy, per run kept
	)
	if *in != "" {
		b, err := os.ReadFile(*in)
		check(err)
		output = b
		commands = []string{"(rendered from " + *in + ")"}
	} else {
		root, err := moduleRoot()
		check(err)
		mainArgs := []string{"test", "-run", "^$", "-bench", *bench, "-count", "1",
			"-benchtime", m.benchtime, "-timeout", "60m", "./benchmarks/"}
		idleArgs := []string{"test", "-run", "^$", "-bench", "^BenchmarkIdleTunnel$", "-count", "1",
			"-benchtime", "1x", "-timeout", "60m", "./benchmarks/", "-tunnels", strconv.Itoa(m.tunnels)}
		wanArgs := []string{"test", "-run", "^$", "-bench", "^BenchmarkWAN$", "-count", "1",
			"-benchtime", strconv.Itoa(m.wanOps) + "x", "-timeout", "60m", "./benchmarks/"}
		var runs [][]string
		if !*wanOnly {
			for range m.count {
				runs = append(runs, mainArgs)
			}
			commands = append(commands, fmt.Sprintf("go %s   # %s", shellQuote(mainArgs), times(m.count)))
		}
		if *wan || *wanOnly {
			runs = append(runs, wanArgs)
			commands = append(commands, fmt.Sprintf("go %s   # once", shellQuote(wanArgs)))
		}
		if !*noIdle && !*wanOnly {
			for range m.idleCount {
				runs = append(runs, idleArgs)
			}
			commands = append(commands, fmt.Sprintf("go %s   # %s", shellQuote(idleArgs), times(m.idleCount)))
		}
		var all bytes.Buffer
		for i, args := range runs {
			for try := 0; ; try++ {
				fmt.Fprintf(os.Stderr, "# run %d of %d, load average %.2f\n$ go %s\n", i+1, len(runs), loadAverage(), shellQuote(args))
				var one bytes.Buffer
				busy0, ours0 := machineBusy(), childrenCPU()
				start := time.Now()
				cmd := exec.Command("go", args...)
				cmd.Dir = root
				cmd.Stdout = io.MultiWriter(&one, os.Stderr)
				cmd.Stderr = io.MultiWriter(&one, os.Stderr)
				err := cmd.Run()
				// Cores busy with anything but this run, on average over it.
				other := max(0, ((machineBusy()-busy0)-(childrenCPU()-ours0)).Seconds()/time.Since(start).Seconds())
				if err != nil {
					all.Write(one.Bytes())
					if *raw != "" {
						os.WriteFile(*raw, all.Bytes(), 0o644)
					}
					check(fmt.Errorf("go %s: %w", strings.Join(args, " "), err))
				}
				fmt.Fprintf(os.Stderr, "# other processes kept %.2f cores busy during that run\n", other)
				if *maxOther > 0 && other > *maxOther && try < *retries {
					fmt.Fprintf(os.Stderr, "# over -max-other %.2f: running it again\n", *maxOther)
					time.Sleep(10 * time.Second)
					continue
				}
				others = append(others, other)
				all.Write(one.Bytes())
				break
			}
		}
		output = all.Bytes()
		if *raw != "" {
			check(os.WriteFile(*raw, output, 0o644))
		}
	}
	set, err := Parse(bytes.NewReader(output))
	check(err)
	if len(set.Runs) == 0 {
		check(errors.New("no benchmark results in the output"))
	}

	var md bytes.Buffer
	writeHeader(&md, set, m, commands, others, *isQuick, *in != "")
	Render(&md, set)

	switch {
	case *readme != "":
		check(replaceBetweenMarkers(*readme, md.Bytes()))
	case *out != "":
		check(os.WriteFile(*out, md.Bytes(), 0o644))
	default:
		os.Stdout.Write(md.Bytes())
	}
}

// writeHeader says when, where and how the figures were taken.
func writeHeader(w io.Writer, s *Set, m mode, commands []string, others []float64, isQuick, rendered bool) {
	name := "full"
	if isQuick {
		name = "quick"
	}
	fmt.Fprintf(w, "Measured %s", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if rendered {
		fmt.Fprint(w, " (rendered; the run itself may be older)")
	}
	fmt.Fprintf(w, " on %d cores (`nproc`), %s, %s, %s %s/%s, GOMAXPROCS %d.\n\n",
		runtime.NumCPU(), cpuModel(s), kernel(), runtime.Version(), runtime.GOOS, runtime.GOARCH, s.Procs)
	if !rendered {
		fmt.Fprintf(w, "Mode %s:", name)
		if len(s.Order) > 0 && !strings.HasPrefix(s.Order[0], "BenchmarkWAN/") {
			fmt.Fprintf(w, " %d %s of every throughput and setup row, %s each", m.count, plural(m.count, "round"), m.benchtime)
			if _, ok := s.Runs["BenchmarkIdleTunnel/ours"]; ok {
				fmt.Fprintf(w, ", then %d %s of BenchmarkIdleTunnel with %d tunnels", m.idleCount, plural(m.idleCount, "run"), m.tunnels)
			}
			fmt.Fprint(w, ". Figures are medians [min–max] over the rounds; a ratio is the median of the ratios taken within each round, where the two rows ran seconds apart.")
		}
		if hasWAN(s) {
			fmt.Fprintf(w, " The WAN rows ran once, %d tunnels (or transfers) per row; a first-byte figure is the median over them.", m.wanOps)
		}
		if len(others) > 0 {
			fmt.Fprintf(w, " Other processes kept %.2f–%.2f cores busy on average during the runs (from /proc/stat less this run's own CPU time); such work lowers and spreads the figures.",
				slices.Min(others), slices.Max(others))
		}
		fmt.Fprint(w, "\n\n")
	}
	fmt.Fprintln(w, "Commands, from the module root:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "```")
	for _, c := range commands {
		fmt.Fprintln(w, c)
	}
	fmt.Fprintln(w, "```")
	fmt.Fprintln(w)
}

// cpuModel is the first "model name" of /proc/cpuinfo, else the cpu line
// of the benchmark output.
func cpuModel(s *Set) string {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	if c := s.Header["cpu"]; c != "" {
		return c
	}
	return "unknown CPU"
}

// machineBusy is the CPU time all processes have used since boot (user,
// nice, system, irq, softirq and steal of /proc/stat), or 0 where unknown.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		ticks += v
	}
	return time.Duration(ticks / userHZ * float64(time.Second))
}

// userHZ is the unit of /proc/stat's times on Linux.
const userHZ = 100

// loadAverage is the 1-minute load average, or 0 where unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return "Linux " + strings.TrimSpace(string(b))
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the spriteproxy module")
	}
	return filepath.Dir(gomod), nil
}

// replaceBetweenMarkers puts report between the markers of file.
func replaceBetweenMarkers(file string, report []byte) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	i := bytes.Index(b, []byte(beginMarker))
	j := bytes.Index(b, []byte(endMarker))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s section", file, beginMarker, endMarker)
	}
	var nb bytes.Buffer
	nb.Write(b[:i+len(beginMarker)])
	nb.WriteString("\n")
	nb.Write(report)
	nb.Write(b[j:])
	return os.WriteFile(file, nb.Bytes(), 0o644)
}

// shellQuote joins args as a shell would need them.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "^$|()*? '\"\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func or(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// times is "once", "twice" or "N times".
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return strconv.Itoa(n) + " times"
}

// plural is word, with an s unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
