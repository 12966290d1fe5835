package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Set is the parsed output of one or more `go test -bench` runs.
type Set struct {
	// Header holds the key: value lines (goos, goarch, pkg, cpu); the
	// last one seen wins.
	Header map[string]string
	// Procs is the GOMAXPROCS suffix of the benchmark names (0 if none).
	Procs int
	// Runs holds, per benchmark name (without the -procs suffix), one
	// entry per line of output: its metrics by unit, iterations under "N".
	Runs map[string][]map[string]float64
	// Order is the benchmark names in order of first appearance.
	Order []string
}

var procsSuffix = regexp.MustCompile(`-(\d+)$`)

// Parse reads `go test -bench` output. Lines that are not results or
// header lines (PASS, ok, logs of other tools) are skipped; a result line
// that does not parse is an error.
func Parse(r io.Reader) (*Set, error) {
	s := &Set{Header: map[string]string{}, Runs: map[string][]map[string]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 0; sc.Scan(); {
		line++
		text := sc.Text()
		if k, v, ok := strings.Cut(text, ": "); ok && !strings.ContainsAny(k, " \t") && !strings.HasPrefix(k, "Benchmark") {
			s.Header[k] = strings.TrimSpace(v)
			continue
		}
		if !strings.HasPrefix(text, "Benchmark") {
			continue
		}
		f := strings.Fields(text)
		if len(f) < 2 {
			continue // a benchmark's name printed alone, before its log lines
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue // "BenchmarkX ... --- FAIL" and the like
		}
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("line %d: value without unit: %q", line, text)
		}
		name := f[0]
		if m := procsSuffix.FindStringSubmatch(name); m != nil {
			s.Procs, _ = strconv.Atoi(m[1])
			name = strings.TrimSuffix(name, m[0])
		}
		run := map[string]float64{"N": float64(n)}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q is not a number: %q", line, f[i], text)
			}
			run[f[i+1]] = v
		}
		if _, seen := s.Runs[name]; !seen {
			s.Order = append(s.Order, name)
		}
		s.Runs[name] = append(s.Runs[name], run)
	}
	return s, sc.Err()
}

// Stat summarises the values of one metric over the runs of a benchmark.
type Stat struct {
	Median, Min, Max float64
	Count            int
}

// OK reports whether there was any value.
func (st Stat) OK() bool { return st.Count > 0 }

// Stat returns the median, min and max of unit over name's runs.
func (s *Set) Stat(name, unit string) Stat {
	var vs []float64
	for _, run := range s.Runs[name] {
		if v, ok := run[unit]; ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return Stat{}
	}
	return Stat{Median: medianOf(vs), Min: slices.Min(vs), Max: slices.Max(vs), Count: len(vs)}
}

// medianOf returns the median of vs (not empty), sorting vs.
func medianOf(vs []float64) float64 {
	slices.Sort(vs)
	if len(vs)%2 == 0 {
		return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return vs[len(vs)/2]
}
