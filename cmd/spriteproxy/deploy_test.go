package main

// The deployment example of deploy/, run: three "spriteproxy serve"
// replicas (with the ExecStart of deploy/spriteproxy@.service) behind
// nginx (deploy/nginx.conf) and behind HAProxy (deploy/haproxy.cfg), each
// configuration run as written with only its example ports and paths
// replaced, so that the example and the test cannot drift apart. Through
// "spriteproxy forward":
//
//   - first, routing by replica (--replica-id): requests naming one with
//     ?replica= or Sprite-Replica reach it, the others are spread, and a
//     resumable tunnel (the Dialer) whose connection a relay resets three
//     times resumes on its replica with its 16 MiB intact (SHA-256);
//   - short tunnels one after another (3,000 at least) and four 64 MiB
//     streams (SHA-256 checked), while the replicas are restarted one after
//     another with SIGTERM: no failed connection, no truncated stream;
//   - then 500 more, which the replicas' metrics must count exactly
//     (tunnels and bytes, summed over the three);
//   - one replica killed (SIGKILL): the streams it carried end with an error,
//     never a clean end of stream, the balancer takes it out, and new
//     tunnels keep succeeding.
//
// It runs with SPRITEPROXY_REAL_SERVICES=1 and needs nginx and haproxy
// (.ci/run installs nginx-light and haproxy from Debian's packages):
//
//	SPRITEPROXY_REAL_SERVICES=1 go test -race -count=1 -run DeployBalancers -v ./cmd/spriteproxy/

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
	"golang.org/x/sync/errgroup"
)

const (
	deployShortTunnels = 3000
	deployStreams      = 4
	deployStreamSize   = 64 << 20
	deployReplicas     = 3
)

func TestDeployBalancers(t *testing.T) {
	if os.Getenv("SPRITEPROXY_REAL_SERVICES") != "1" {
		t.Skip("set SPRITEPROXY_REAL_SERVICES=1 to run the deployment example behind nginx and HAProxy (see .ci/run)")
	}
	t.Parallel()
	t.Run("systemd", func(t *testing.T) {
		t.Parallel()
		testSystemdUnit(t)
	})
	t.Run("nginx", func(t *testing.T) {
		t.Parallel()
		nginx := balancerBinary(t, "nginx")
		testBalancer(t, func(t *testing.T, dir string, port int, replicas []int, cert, key string) balancer {
			return startNginx(t, nginx, dir, port, replicas, cert, key)
		})
	})
	t.Run("haproxy", func(t *testing.T) {
		t.Parallel()
		haproxy := balancerBinary(t, "haproxy")
		testBalancer(t, func(t *testing.T, dir string, port int, replicas []int, cert, key string) balancer {
			return startHAProxy(t, haproxy, dir, port, replicas, cert, key)
		})
	})
}

// balancerBinary finds name, or skips: .ci/run installs it, a developer's
// machine may not have it.
func balancerBinary(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; fileExists(p) {
		return p
	}
	t.Skipf("%s is not installed (apt-get install nginx-light haproxy, as .ci/run does)", name)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// balancer is a running nginx or HAProxy.
type balancer interface {
	// up waits until the balancer sends tunnels to replica i (HAProxy's
	// checks pass); nginx, with passive checks only, has nothing to show.
	up(t *testing.T, i int)
	// out waits until the balancer has taken replica i out (HAProxy's
	// checks), and says how long that took from since.
	out(t *testing.T, i int, since time.Time) string
}

// testBalancer runs the scenario of the file comment behind the balancer
// that start starts.
func testBalancer(t *testing.T, start func(t *testing.T, dir string, port int, replicas []int, cert, key string) balancer) {
	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	cert, key := tlsFiles(t, dir)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	echo := echoService(t)
	ports := freePorts(t, deployReplicas+1)
	lbPort, replicaPorts := ports[0], ports[1:]
	replicas := make([]*replica, deployReplicas)
	for i, p := range replicaPorts {
		replicas[i] = &replica{args: unitServeArgs(t, bin, p, tokenFile), port: p}
		replicas[i].start(t, bin)
	}
	lb := start(t, dir, lbPort, replicaPorts, cert, key)
	for i := range replicas {
		lb.up(t, i)
	}
	// Before the load: the rolling restart below starts the replicas'
	// metrics afresh, so the tunnels these upgrades leave are not counted.
	checkRouting(t, lbPort, cert, replicas)
	checkResume(t, lbPort, cert, echo)
	fwd := startProcess(t, []string{envToken + "=" + testToken}, bin, "forward", "--api", fmt.Sprintf("https://127.0.0.1:%d", lbPort),
		"--tls-ca", cert, "--json", "box", fmt.Sprintf("0:%d", echo))
	var m mappingJSON
	line := fwd.stdout.waitFor(t, regexp.MustCompile(`^(\{.*\})\n`), 30*time.Second)[1]
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	local := m.Local
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Rolling restart under load.
	start0 := time.Now()
	var tunnels, streamsOK atomic.Int64
	restarted := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	for i := range deployStreams {
		g.Go(func() error {
			if err := bulk(gctx, local, deployStreamSize); err != nil {
				return fmt.Errorf("stream %d: %w", i, err)
			}
			streamsOK.Add(1)
			return nil
		})
	}
	g.Go(func() error {
		// At least deployShortTunnels, and on until the restarts are done.
		for i := 0; i < 1_000_000; i++ {
			if i >= deployShortTunnels {
				select {
				case <-restarted:
					return nil
				default:
				}
			}
			if err := shortTunnel(gctx, local, 1+rand.IntN(4<<10)); err != nil {
				return fmt.Errorf("short tunnel %d: %w", i, err)
			}
			tunnels.Add(1)
		}
		return errors.New("the restarts did not end")
	})
	// The restarts, one replica after the other, each back in the
	// balancer before the next goes.
	for i, r := range replicas {
		if gctx.Err() != nil {
			break // the load failed: g.Wait says why
		}
		stop, back := r.restart(t, bin)
		lb.up(t, i)
		t.Logf("replica %d (port %d): SIGTERM to exit %v, serving again after %v; %d short tunnels so far",
			i, r.port, stop.Round(time.Millisecond), back.Round(time.Millisecond), tunnels.Load())
	}
	close(restarted)
	if err := g.Wait(); err != nil {
		t.Fatalf("during the rolling restart, after %d tunnels: %v\nforward said:\n%s", tunnels.Load(), err, fwd.stderr.String())
	}
	t.Logf("rolling restart of %d replicas: %d short tunnels and %d streams of %d MiB, 0 failed, in %v",
		len(replicas), tunnels.Load(), streamsOK.Load(), deployStreamSize>>20, time.Since(start0).Round(time.Millisecond))

	// The replicas' metrics count what went through them.
	checkCounts(t, ctx, replicas, local, 500)

	// One replica killed: the streams on it end with an error, the
	// others go on, and new tunnels succeed.
	held := make([]net.Conn, 2*deployReplicas)
	for i := range held {
		c, err := net.DialTimeout("tcp", local, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		echoOnce(t, c, "hello")
		held[i] = c
	}
	victim, onVictim := -1, 0
	for i, r := range replicas {
		if n := r.tunnels(t); n > onVictim {
			victim, onVictim = i, n
		}
	}
	if victim < 0 {
		t.Fatalf("no replica reports the %d open streams", len(held))
	}
	killedAt := time.Now()
	replicas[victim].p.cmd.Process.Kill()
	replicas[victim].p.wait(t, 30*time.Second)
	broken := 0
	for i, c := range held {
		_, err := c.Write([]byte("again"))
		if err == nil {
			buf := make([]byte, 5)
			if _, err = io.ReadFull(c, buf); err == nil {
				continue // on another replica
			}
		}
		// The stream was on the killed replica: an error, not a clean
		// end (io.EOF, or io.ErrUnexpectedEOF from a short read), and
		// not a hang.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("stream %d on the killed replica ended with %v, want an error such as a reset", i, err)
		}
		broken++
	}
	if broken != onVictim {
		t.Errorf("%d streams broke, want the %d that the killed replica held", broken, onVictim)
	}
	out := lb.out(t, victim, killedAt)
	const afterKill = 300
	for i := range afterKill {
		if err := shortTunnel(ctx, local, 1+rand.IntN(4<<10)); err != nil {
			t.Fatalf("tunnel %d after replica %d was killed: %v\nforward said:\n%s", i, victim, err, fwd.stderr.String())
		}
	}
	t.Logf("replica %d killed with %d of %d streams: %d broke with an error, the others went on; %s; %d new tunnels, 0 failed",
		victim, onVictim, len(held), broken, out, afterKill)
}

// replica is one serve process, restarted on the same port.
type replica struct {
	port    int
	args    []string
	p       *process
	metrics string // its /metrics URL
}

func (r *replica) start(t *testing.T, bin string) {
	t.Helper()
	r.p = startProcess(t, nil, bin, r.args...)
	r.p.stderr.waitFor(t, serveAddrRE, 30*time.Second)
	r.metrics = r.p.stderr.waitFor(t, regexp.MustCompile(`msg="metrics endpoint" url=(\S+)`), 30*time.Second)[1]
}

// restart stops the replica with SIGTERM, as systemctl restart does, and
// starts it again: it returns how long the old one took to exit and how
// long until the new one served.
func (r *replica) restart(t *testing.T, bin string) (stop, back time.Duration) {
	t.Helper()
	t0 := time.Now()
	if code := r.p.signal(t, syscall.SIGTERM, 90*time.Second); code != 0 {
		t.Errorf("replica on port %d: exit %d after SIGTERM; stderr:\n%s", r.port, code, r.p.stderr.String())
	}
	stop = time.Since(t0)
	if !strings.Contains(r.p.stderr.String(), `msg=draining`) {
		t.Errorf("replica on port %d did not drain before it stopped:\n%s", r.port, r.p.stderr.String())
	}
	r.start(t, bin)
	return stop, time.Since(t0)
}

// tunnels is the replica's count of open tunnels.
func (r *replica) tunnels(t *testing.T) int {
	t.Helper()
	return int(scrapeMetrics(t, r.metrics)["spriteproxy_tunnels_open"])
}

// counts are the replicas' counters summed: tunnels by result, and bytes
// each way.
type counts struct {
	tunnels  map[string]float64 // by result
	to, from float64
	open     float64 // tunnels open now
}

func sumCounts(t *testing.T, replicas []*replica) counts {
	t.Helper()
	c := counts{tunnels: map[string]float64{}}
	for _, r := range replicas {
		for k, v := range scrapeMetrics(t, r.metrics) {
			switch {
			case strings.HasPrefix(k, "spriteproxy_tunnels_total{"):
				c.tunnels[k] += v
			case k == `spriteproxy_tunnel_bytes_total{direction="to_target"}`:
				c.to += v
			case k == `spriteproxy_tunnel_bytes_total{direction="from_target"}`:
				c.from += v
			case k == "spriteproxy_tunnels_open":
				c.open += v
			}
		}
	}
	return c
}

// checkCounts runs n short tunnels and checks that the replicas' metrics
// count exactly them: n tunnels "ok" and nothing else, and their bytes
// each way. A tunnel is counted when it ends on the server, which may be
// a little after the client saw it end: the replicas are other processes,
// and their metrics are all there is to wait on, so this polls, within a
// bound.
func checkCounts(t *testing.T, ctx context.Context, replicas []*replica, local string, n int) {
	t.Helper()
	// A tunnel is counted "ok" at its reply and its bytes at its end: one
	// of the phase before, still ending on a replica, would add its bytes
	// to these. So the count starts once no tunnel is open (within a
	// bound: should one stay open, its bytes show in the failure).
	before := sumCounts(t, replicas)
	for quiet := time.Now().Add(10 * time.Second); before.open > 0 && time.Now().Before(quiet); {
		time.Sleep(50 * time.Millisecond) // other processes: polling is all there is
		before = sumCounts(t, replicas)
	}
	var sent float64
	for i := range n {
		size := 1 + rand.IntN(4<<10)
		if err := shortTunnel(ctx, local, size); err != nil {
			t.Fatalf("counted tunnel %d: %v", i, err)
		}
		sent += float64(size)
	}
	ok := `spriteproxy_tunnels_total{result="ok"}`
	deadline := time.Now().Add(20 * time.Second)
	for {
		after := sumCounts(t, replicas)
		var others float64
		for k, v := range after.tunnels {
			if k != ok {
				others += v - before.tunnels[k]
			}
		}
		dOK, dTo, dFrom := after.tunnels[ok]-before.tunnels[ok], after.to-before.to, after.from-before.from
		if dOK == float64(n) && dTo == sent && dFrom == sent && others == 0 {
			t.Logf("metrics of the %d replicas add up: %.0f tunnels ok, %.0f bytes to the targets and %.0f back, for %d tunnels of %.0f bytes",
				len(replicas), dOK, dTo, dFrom, n, sent)
			return
		}
		if dOK > float64(n) || dTo > sent || dFrom > sent || others != 0 || time.Now().After(deadline) {
			t.Fatalf("metrics count %.0f tunnels ok, %.0f of other results, %.0f bytes to the targets and %.0f back; want %d, 0, %.0f and %.0f",
				dOK, others, dTo, dFrom, n, sent, sent)
		}
		time.Sleep(50 * time.Millisecond) // other processes: polling is all there is
	}
}

// unitServeArgs are the serve arguments of deploy/spriteproxy@.service's
// ExecStart for the instance port, with the token at tokenFile, plus a
// metrics listener for the test to count tunnels.
func unitServeArgs(t *testing.T, bin string, port int, tokenFile string) []string {
	t.Helper()
	unit := readDeployFile(t, "spriteproxy@.service")
	m := regexp.MustCompile(`(?m)^ExecStart=((?:.*\\\n)*.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("deploy/spriteproxy@.service has no ExecStart")
	}
	fields := strings.Fields(strings.ReplaceAll(m[1], "\\\n", " "))
	want := map[string]string{
		"/usr/local/bin/spriteproxy":     bin,
		"127.0.0.1:%i":                   fmt.Sprintf("127.0.0.1:%d", port),
		"${CREDENTIALS_DIRECTORY}/token": tokenFile,
		"%i":                             strconv.Itoa(port), // --replica-id
	}
	for i, f := range fields {
		if to, ok := want[f]; ok {
			fields[i] = to
			delete(want, f)
		}
	}
	if len(want) > 0 {
		t.Fatalf("deploy/spriteproxy@.service's ExecStart no longer has %v: update the test with it", want)
	}
	if fields[0] != bin || fields[1] != "serve" {
		t.Fatalf("ExecStart runs %v, want spriteproxy serve", fields[:2])
	}
	return append(fields[1:], "--metrics-listen", "127.0.0.1:0")
}

// readDeployFile returns a file of deploy/.
func readDeployFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// templated is the deploy file name with each example value replaced; it
// fails if one is missing (the example changed under the test).
func templated(t *testing.T, name string, repl ...string) string {
	t.Helper()
	s := readDeployFile(t, name)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("deploy/%s no longer holds %q: update the test with it", name, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	return s
}

// exampleReplicas are the replica addresses in the example configurations.
var exampleReplicas = []string{"127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"}

// replicaRepl replaces the example replicas' addresses with those of the
// ports replicas, and their names (the example ports, by --replica-id %i)
// in each of the forms: fmt formats with %s for the name.
func replicaRepl(replicas []int, forms ...string) []string {
	var r []string
	for i, a := range exampleReplicas {
		r = append(r, a, fmt.Sprintf("127.0.0.1:%d", replicas[i]))
		_, example, _ := strings.Cut(a, ":")
		for _, f := range forms {
			r = append(r, fmt.Sprintf(f, example), fmt.Sprintf(f, strconv.Itoa(replicas[i])))
		}
	}
	return r
}

// checkRouting checks the balancer at lbPort routes on the replica's
// name: /healthz?replica=ID, /healthz with Sprite-Replica: ID and a real
// tunnel's upgrade with ?replica=ID reach replica ID (as its
// Sprite-Replica answer says), a few times each, and /healthz without a
// name is spread over more than one replica.
func checkRouting(t *testing.T, lbPort int, cert string, replicas []*replica) {
	t.Helper()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	lb := fmt.Sprintf("127.0.0.1:%d", lbPort)
	// ask sends one request on a connection of its own and returns the
	// Sprite-Replica of the answer, which must have status want.
	ask := func(req string, want int) string {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", lb, tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want {
			t.Fatalf("%q through the balancer: %s, want %d", req, resp.Status, want)
		}
		return resp.Header.Get("Sprite-Replica")
	}
	const host = "Host: localhost\r\n"
	for _, r := range replicas {
		id := strconv.Itoa(r.port)
		for i := range 4 {
			reqs := map[string]int{
				"GET /healthz?replica=" + id + " HTTP/1.1\r\n" + host + "\r\n":            http.StatusOK,
				"GET /healthz HTTP/1.1\r\n" + host + "Sprite-Replica: " + id + "\r\n\r\n": http.StatusOK,
				"GET /v1/sprites/box/proxy?replica=" + id + " HTTP/1.1\r\n" + host +
					"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
					"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer " + testToken + "\r\n\r\n": http.StatusSwitchingProtocols,
			}
			for req, status := range reqs {
				if got := ask(req, status); got != id {
					t.Errorf("request %d naming replica %s (%.40q...) reached replica %q", i, id, req, got)
				}
			}
		}
	}
	seen := map[string]int{}
	for range 30 {
		seen[ask("GET /healthz HTTP/1.1\r\n"+host+"\r\n", http.StatusOK)]++
	}
	if len(seen) < 2 || seen[""] > 0 {
		t.Errorf("30 health checks naming no replica reached %v, want them spread over the replicas", seen)
	}
	t.Logf("routing by replica: 12 requests naming each of %d replicas reached it; 30 naming none reached %v", len(replicas), seen)
}

// freePorts returns n loopback ports free at the time of the call.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// waitListening waits until something accepts connections at addr:
// another process starting, with nothing to wait on but its port.
func waitListening(t *testing.T, addr string, p *process) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %s%s", p.cmd.Args[0], p.stdout.String(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // another process: polling is all there is
	}
}

// nginx: deploy/nginx.conf inside a main configuration of the test's own.
type nginxLB struct{}

func (nginxLB) up(*testing.T, int) {}
func (nginxLB) out(*testing.T, int, time.Time) string {
	// Passive checks: the first connection refused takes it out, and is
	// passed on to another replica.
	return "nginx takes it out at its first refused connection (passive checks)"
}

func startNginx(t *testing.T, bin, dir string, port int, replicas []int, cert, key string) balancer {
	t.Helper()
	site := templated(t, "nginx.conf", append(replicaRepl(replicas, `"%s"`, "spriteproxy_%s"),
		"listen 443 ssl;", fmt.Sprintf("listen 127.0.0.1:%d ssl;", port),
		"/etc/ssl/spriteproxy/fullchain.pem", cert,
		"/etc/ssl/spriteproxy/privkey.pem", key)...)
	sitePath := filepath.Join(dir, "spriteproxy.conf")
	main := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[2]s;
}
`, dir, sitePath)
	mainPath := filepath.Join(dir, "nginx-main.conf")
	for p, s := range map[string]string{sitePath: site, mainPath: main} {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", mainPath).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	p := startProcess(t, nil, bin, "-p", dir, "-c", mainPath, "-g", "daemon off;")
	stopGracefully(t, p)
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), p)
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil && len(b) > 0 {
			t.Logf("nginx error.log:\n%s", lastLines(string(b), 20))
		}
	})
	return nginxLB{}
}

// stopGracefully ends the balancer p with SIGTERM at the end of the test
// (before startProcess's SIGKILL, which would leave nginx's workers
// holding its output open).
func stopGracefully(t *testing.T, p *process) {
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s still running 30 s after SIGTERM", p.cmd.Args[0])
		}
	})
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// HAProxy: deploy/haproxy.cfg as it is, its stats socket telling the
// servers' state.
type haproxyLB struct {
	sock string
}

func startHAProxy(t *testing.T, bin, dir string, port int, replicas []int, cert, key string) balancer {
	t.Helper()
	pem := filepath.Join(dir, "haproxy.pem")
	var both []byte
	for _, f := range []string{cert, key} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		both = append(both, b...)
	}
	if err := os.WriteFile(pem, both, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "haproxy.sock")
	cfg := templated(t, "haproxy.cfg", append(replicaRepl(replicas, "-m str %s }"),
		"bind :443 ssl crt /etc/haproxy/certs/spriteproxy.pem", fmt.Sprintf("bind 127.0.0.1:%d ssl crt %s", port, pem),
		"/run/haproxy/spriteproxy.sock", sock)...)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	p := startProcess(t, nil, bin, "-db", "-f", cfgPath)
	stopGracefully(t, p)
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), p)
	return &haproxyLB{sock: sock}
}

// status returns HAProxy's state of server i of the backend ("UP", "DOWN",
// ...), from "show stat" on its socket.
func (h *haproxyLB) status(t *testing.T, i int) string {
	t.Helper()
	c, err := net.DialTimeout("unix", h.sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "show stat\n")
	r := csv.NewReader(bufio.NewReader(c))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	header[0] = strings.TrimPrefix(header[0], "# ")
	col := slices.Index(header, "status")
	for {
		rec, err := r.Read()
		if err != nil {
			t.Fatalf("server s%d is not in HAProxy's stats: %v", i+1, err)
		}
		if len(rec) > col && rec[0] == "spriteproxy" && rec[1] == "s"+strconv.Itoa(i+1) {
			return rec[col]
		}
	}
}

// waitStatus waits until server i's state starts with want; HAProxy's
// checks run every second, and its socket is all there is to ask.
func (h *haproxyLB) waitStatus(t *testing.T, i int, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := h.status(t, i)
		if strings.HasPrefix(s, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy's server s%d is %s, want %s", i+1, s, want)
		}
		time.Sleep(50 * time.Millisecond) // another process: polling is all there is
	}
}

func (h *haproxyLB) up(t *testing.T, i int) { h.waitStatus(t, i, "UP") }

func (h *haproxyLB) out(t *testing.T, i int, since time.Time) string {
	h.waitStatus(t, i, "DOWN")
	return fmt.Sprintf("HAProxy's checks marked it DOWN after %v", time.Since(since).Round(time.Millisecond))
}

// shortTunnel sends n random bytes through the forwarded port at addr to
// the echo, ends its side, and checks that exactly those come back.
func shortTunnel(ctx context.Context, addr string, n int) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := make([]byte, n)
	for i := range msg {
		msg[i] = byte(rand.Uint32())
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("after %d of %d bytes: %w", len(got), n, err)
	}
	if string(got) != string(msg) {
		return fmt.Errorf("%d bytes came back for %d sent, or different ones", len(got), n)
	}
	return nil
}

// echoOnce sends s on c and reads it back.
func echoOnce(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(s))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != s {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

// The unit file passes systemd-analyze verify (with the test's binary
// for its ExecStart, which must exist), with no warning either, and its
// hardening is scored.
func testSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	unit := templated(t, "spriteproxy@.service", "/usr/local/bin/spriteproxy", bin)
	path := filepath.Join(dir, "spriteproxy@8081.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if out, err := exec.Command(analyze, "security", "--offline=yes", path).CombinedOutput(); err == nil {
		t.Logf("systemd-analyze security: %s", lastLines(string(out), 1))
	}
}

// tcpRelay forwards each connection it accepts to backend; cut resets
// every connection through it, as a network that drops them.
type tcpRelay struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	conns   map[*net.TCPConn]struct{}
	accepts int
	wg      sync.WaitGroup
}

func startTCPRelay(t *testing.T, backend string) *tcpRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tcpRelay{ln: ln, backend: backend, conns: map[*net.TCPConn]struct{}{}}
	r.wg.Add(1)
	go r.loop()
	t.Cleanup(func() {
		ln.Close()
		r.cut()
		r.wg.Wait()
	})
	return r
}

func (r *tcpRelay) loop() {
	defer r.wg.Done()
	for {
		a, err := r.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.DialTimeout("tcp", r.backend, 10*time.Second)
		if err != nil {
			a.Close()
			continue
		}
		r.mu.Lock()
		r.accepts++
		r.conns[a.(*net.TCPConn)] = struct{}{}
		r.conns[b.(*net.TCPConn)] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pipe(a, b)
		go r.pipe(b, a)
	}
}

// pipe copies src to dst; at the end of either, both are reset.
func (r *tcpRelay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	io.Copy(dst, src)
	for _, c := range []net.Conn{dst, src} {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		r.mu.Lock()
		delete(r.conns, c.(*net.TCPConn))
		r.mu.Unlock()
	}
}

// cut resets every connection through the relay now.
func (r *tcpRelay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.SetLinger(0)
		c.Close()
	}
}

func (r *tcpRelay) connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepts
}

// checkResume opens a resumable tunnel (the Dialer, resume on by default)
// to the echo through the balancer at lbPort, behind a relay that resets
// the client's connection three times while 16 MiB go through: each time
// the client resumes, which only the replica that holds the tunnel can
// grant (the balancer routes on ?replica= and Sprite-Replica), and the
// echoed stream must come back whole (SHA-256).
func checkResume(t *testing.T, lbPort int, cert string, echo int) {
	t.Helper()
	pem, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	relay := startTCPRelay(t, fmt.Sprintf("127.0.0.1:%d", lbPort))
	d := &websocket.Dialer{BaseURL: "https://" + relay.ln.Addr().String(), Token: testToken,
		TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
	defer d.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.DialSprite(ctx, "box", "tcp", fmt.Sprintf("127.0.0.1:%d", echo))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	const size, chunk, cuts = 16 << 20, 64 << 10, 3
	sent, got := sha256.New(), sha256.New()
	var g errgroup.Group
	g.Go(func() error {
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, chunk)
		for off := 0; off < size; off += chunk {
			if off > 0 && off%(size/(cuts+1)) == 0 {
				relay.cut()
			}
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			sent.Write(buf)
			if _, err := c.Write(buf); err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
		}
		return nil
	})
	g.Go(func() error {
		n, err := io.CopyN(got, c, size)
		if err != nil {
			return fmt.Errorf("read %d of %d bytes: %w", n, size, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatalf("resumable tunnel through the balancer, cut %d times: %v", cuts, err)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("the %d MiB echoed through %d cuts differ (SHA-256)", size>>20, cuts)
	}
	if n := relay.connections(); n < cuts+1 {
		t.Fatalf("%d connections through the relay, want at least %d (the first and a resume after each cut)", n, cuts+1)
	}
	t.Logf("resume: %d MiB echoed intact (SHA-256) through %d cuts, over %d connections, each resume on the tunnel's replica",
		size>>20, cuts, relay.connections())
}
