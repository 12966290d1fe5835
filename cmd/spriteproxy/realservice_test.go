package main

// Real services through the tunnel: a real redis-server and a real
// PostgreSQL on loopback are the services of the sprite, "spriteproxy
// serve" and "spriteproxy forward" run as processes with TLS between them,
// and the real clients (redis-cli, redis-benchmark, psql, pgbench) talk
// through the forwarded ports. Results are checked on the server side,
// directly, without the tunnel.
//
// These tests run only with SPRITEPROXY_REAL_SERVICES=1, and need the
// Debian packages redis-server, redis-tools, postgresql and
// postgresql-client (.ci/run installs them):
//
//	SPRITEPROXY_REAL_SERVICES=1 go test -race -run RealService -v ./cmd/spriteproxy/

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// realServiceTimeout bounds each external command.
const realServiceTimeout = 3 * time.Minute

func TestRealServices(t *testing.T) {
	if os.Getenv("SPRITEPROXY_REAL_SERVICES") != "1" {
		t.Skip("set SPRITEPROXY_REAL_SERVICES=1 to run against real redis and PostgreSQL (see .ci/run)")
	}
	t.Parallel()
	bin, _ := buildBinaries(t)
	redisPort := startRedis(t)
	pg := startPostgres(t)

	srv, api, ca := serveProcess(t, bin)
	fwd := startProcess(t, []string{envToken + "=" + testToken}, bin, "forward", "--api", api, "--tls-ca", ca, "--json",
		"box", fmt.Sprintf("0:%d", redisPort), fmt.Sprintf("0:127.0.0.1:%d", pg.port))
	m := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\{.*\})\n(\{.*\})\n`), 30*time.Second)
	var local [2]mappingJSON
	for i := range local {
		if err := json.Unmarshal([]byte(m[i+1]), &local[i]); err != nil {
			t.Fatal(err)
		}
	}
	redisLocal, pgLocal := strconv.Itoa(local[0].LocalPort), strconv.Itoa(local[1].LocalPort)
	t.Logf("redis-server on 127.0.0.1:%d, forwarded at %s; PostgreSQL on 127.0.0.1:%d, forwarded at %s",
		redisPort, local[0].Local, pg.port, local[1].Local)

	t.Run("clients", func(t *testing.T) {
		t.Run("RealServiceRedis", func(t *testing.T) {
			t.Parallel()
			testRedis(t, redisLocal, strconv.Itoa(redisPort))
		})
		t.Run("RealServicePostgres", func(t *testing.T) {
			t.Parallel()
			testPostgres(t, pgLocal, pg)
		})
	})

	if code := fwd.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("forward exit %d; stderr:\n%s", code, fwd.stderr.String())
	}
	if code := srv.signal(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Errorf("serve exit %d; stderr:\n%s", code, srv.stderr.String())
	}
	if s := fwd.stderr.String(); s != "" {
		t.Errorf("forward said: %s", s)
	}
}

// testRedis drives redis-cli and redis-benchmark through the tunnel at
// port local, and checks what they did on the server at port direct.
func testRedis(t *testing.T, local, direct string) {
	cli, bench := lookPath(t, "redis-cli"), lookPath(t, "redis-benchmark")
	redis := func(port string, args ...string) string {
		return strings.TrimSpace(runTool(t, nil, cli, append([]string{"-h", "127.0.0.1", "-p", port}, args...)...))
	}

	// A value set through the tunnel reads back through it and directly.
	val := randomHex(t, 16)
	if got := redis(local, "SET", "spriteproxy:check", val); got != "OK" {
		t.Fatalf("SET through the tunnel: %q", got)
	}
	if got := redis(local, "GET", "spriteproxy:check"); got != val {
		t.Errorf("GET through the tunnel: %q, want %q", got, val)
	}
	if got := redis(direct, "GET", "spriteproxy:check"); got != val {
		t.Errorf("GET directly: %q, want %q", got, val)
	}
	// A value of 4 MiB, larger than any frame, both ways.
	big := strings.Repeat(val, 4<<20/len(val))
	cmd := exec.Command(cli, "-h", "127.0.0.1", "-p", local, "-x", "SET", "spriteproxy:big")
	cmd.Stdin = strings.NewReader(big)
	if out := strings.TrimSpace(runCmd(t, cmd)); out != "OK" {
		t.Fatalf("SET of 4 MiB: %q", out)
	}
	if got := redis(direct, "STRLEN", "spriteproxy:big"); got != strconv.Itoa(len(big)) {
		t.Errorf("STRLEN of the 4 MiB value, directly: %s, want %d", got, len(big))
	}
	if got := redis(local, "GET", "spriteproxy:big"); got != big {
		t.Errorf("GET of the 4 MiB value through the tunnel: %d bytes back, want %d", len(got), len(big))
	}

	// redis-benchmark: every request of both tests must have been served.
	const n = 20000
	before := commandCalls(t, redis(direct, "INFO", "commandstats"))
	out := runTool(t, nil, bench, "-h", "127.0.0.1", "-p", local, "-n", strconv.Itoa(n), "-c", "20", "-q", "-t", "set,get")
	results := regexp.MustCompile(`(?m)(SET|GET): ([\d.]+) requests per second`).FindAllStringSubmatch(strings.ReplaceAll(out, "\r", "\n"), -1)
	seen := map[string]bool{}
	for _, r := range results {
		seen[r[1]] = true
		t.Logf("redis-benchmark through the tunnel: %s", r[0])
	}
	if !seen["SET"] || !seen["GET"] || strings.Contains(out, "rror") {
		t.Errorf("redis-benchmark output:\n%s", out)
	}
	after := commandCalls(t, redis(direct, "INFO", "commandstats"))
	for _, c := range []string{"set", "get"} {
		if d := after[c].calls - before[c].calls; d < n {
			t.Errorf("redis served %d %s commands during the benchmark, want at least %d", d, c, n)
		}
		if after[c].failed != 0 || after[c].rejected != 0 {
			t.Errorf("%s: %d failed, %d rejected", c, after[c].failed, after[c].rejected)
		}
	}
	// The benchmark's key, written through the tunnel, reads back directly.
	if got := redis(direct, "GET", "key:__rand_int__"); got == "" {
		t.Error("the benchmark's key is not in redis")
	}
}

// callStats is one line of redis INFO commandstats.
type callStats struct{ calls, failed, rejected int }

// commandCalls parses INFO commandstats.
func commandCalls(t *testing.T, info string) map[string]callStats {
	t.Helper()
	stats := map[string]callStats{}
	re := regexp.MustCompile(`(?m)^cmdstat_(\w+):calls=(\d+),.*?rejected_calls=(\d+),failed_calls=(\d+)`)
	for _, m := range re.FindAllStringSubmatch(info, -1) {
		calls, _ := strconv.Atoi(m[2])
		rejected, _ := strconv.Atoi(m[3])
		failed, _ := strconv.Atoi(m[4])
		stats[m[1]] = callStats{calls, failed, rejected}
	}
	return stats
}

// testPostgres drives psql and pgbench through the tunnel at port local,
// and checks their work with psql on the server's unix socket.
func testPostgres(t *testing.T, local string, pg *postgres) {
	psql, pgbench := lookPath(t, "psql"), lookPath(t, "pgbench")
	env := []string{"PGCONNECT_TIMEOUT=10", "PGUSER=postgres", "PGDATABASE=postgres"}
	tunnel := []string{"-h", "127.0.0.1", "-p", local}
	direct := []string{"-h", pg.socketDir, "-p", strconv.Itoa(pg.port)}
	sql := func(where []string, query string) string {
		args := append(append([]string{"-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"}, where...), "-c", query)
		return strings.TrimSpace(runTool(t, env, psql, args...))
	}

	// Rows written through the tunnel read back directly, and the same.
	marker := randomHex(t, 16)
	sql(tunnel, "CREATE TABLE spriteproxy_check (id int PRIMARY KEY, note text NOT NULL)")
	sql(tunnel, "INSERT INTO spriteproxy_check SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	sql(tunnel, fmt.Sprintf("INSERT INTO spriteproxy_check VALUES (0, '%s')", marker))
	const check = "SELECT count(*), sum(id), md5(string_agg(note, ',' ORDER BY id)) FROM spriteproxy_check"
	viaTunnel, directly := sql(tunnel, check), sql(direct, check)
	if !strings.HasPrefix(directly, "20001|200010000|") || viaTunnel != directly {
		t.Errorf("through the tunnel %q, directly %q", viaTunnel, directly)
	}
	if got := sql(direct, "SELECT note FROM spriteproxy_check WHERE id = 0"); got != marker {
		t.Errorf("marker read directly: %q, want %q", got, marker)
	}

	// pgbench: initialise (100,000 rows by COPY) and a bounded run.
	runTool(t, env, pgbench, append([]string{"-i", "-q"}, tunnel...)...)
	if got := sql(direct, "SELECT count(*) FROM pgbench_accounts"); got != "100000" {
		t.Errorf("pgbench_accounts has %s rows, want 100000", got)
	}
	const clients, perClient = 4, 200
	out := runTool(t, env, pgbench, append([]string{"-t", strconv.Itoa(perClient), "-c", strconv.Itoa(clients), "-j", "2"}, tunnel...)...)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "number of") || strings.HasPrefix(line, "latency average") || strings.HasPrefix(line, "tps") {
			t.Logf("pgbench through the tunnel: %s", line)
		}
	}
	want := fmt.Sprintf("number of transactions actually processed: %d/%d\n", clients*perClient, clients*perClient)
	if !strings.Contains(out, want) || !strings.Contains(out, "number of failed transactions: 0 (") {
		t.Errorf("pgbench output lacks %q or no failures:\n%s", want, out)
	}
	if got := sql(direct, "SELECT count(*) FROM pgbench_history"); got != strconv.Itoa(clients*perClient) {
		t.Errorf("pgbench_history has %s rows, want %d", got, clients*perClient)
	}
}

// startRedis starts redis-server on a free loopback port, with no
// persistence, and stops it at the end of the test.
func startRedis(t *testing.T) int {
	t.Helper()
	server := lookPath(t, "redis-server")
	dir := t.TempDir()
	for try := 0; ; try++ {
		port := freePort(t)
		p := startProcess(t, nil, server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no")
		_, ready := p.stdout.waitUntil(regexp.MustCompile(`Ready to accept connections`), p.done, 30*time.Second)
		if !ready {
			select {
			case <-p.done:
				if try < 3 && strings.Contains(p.stdout.String(), "in use") {
					continue // the port was taken between freePort and the start
				}
				t.Fatalf("redis-server exited:\n%s%s", p.stdout.String(), p.stderr.String())
			default:
				t.Fatalf("redis-server not ready after 30s:\n%s", p.stdout.String())
			}
		}
		t.Cleanup(func() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
			}
		})
		return port
	}
}

// postgres is a PostgreSQL server started for a test.
type postgres struct {
	port      int
	socketDir string // also the parent of the data directory
}

// startPostgres initialises a cluster in a fresh directory and starts it on
// 127.0.0.1 at a free port, with its unix socket in that directory; it is
// stopped and removed at the end of the test. initdb and the server refuse
// to run as root, so as root they run as the user postgres (which the
// Debian package creates).
func startPostgres(t *testing.T) *postgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatal("no /usr/lib/postgresql/*/bin/initdb: install the postgresql package")
	}
	binDir := filepath.Dir(bins[len(bins)-1]) // the newest version
	var asUser []string
	dir, err := os.MkdirTemp("", "spriteproxy-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and there is no user postgres to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{lookPath(t, "runuser"), "-u", "postgres", "--"}
	}
	pgCommand := func(name string, args ...string) *exec.Cmd {
		argv := append(append(append([]string(nil), asUser...), filepath.Join(binDir, name)), args...)
		return exec.Command(argv[0], argv[1:]...)
	}

	data := filepath.Join(dir, "data")
	runCmd(t, pgCommand("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"))
	for try := 0; ; try++ {
		port := freePort(t)
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off", port, dir)
		cmd := pgCommand("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start")
		ctx, cancel := context.WithTimeout(context.Background(), realServiceTimeout)
		out, err := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			if try < 3 && strings.Contains(string(log), "in use") {
				continue
			}
			t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
		}
		t.Cleanup(func() {
			stop := pgCommand("pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop")
			if out, err := stop.CombinedOutput(); err != nil {
				t.Logf("pg_ctl stop: %v\n%s", err, out)
			}
		})
		return &postgres{port: port, socketDir: dir}
	}
}

// lookPath finds a program or fails the test saying which package lacks.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install redis-server, redis-tools, postgresql and postgresql-client (see .ci/run)", name)
	}
	return p
}

// runTool runs name with args and extra environment, and returns its
// stdout; it fails the test if it fails or takes over realServiceTimeout.
func runTool(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	return runCmd(t, cmd)
}

// runCmd runs cmd within realServiceTimeout and returns its stdout.
func runCmd(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), realServiceTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env, c.Stdin, c.Dir = cmd.Env, cmd.Stdin, cmd.Dir
	c.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, out, stderr.String())
	}
	return string(out)
}

// randomHex returns n random bytes in hex.
func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
