package main

import (
	"context"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

var metricsURLRE = regexp.MustCompile(`msg="metrics endpoint" url=(\S+)`)

// Two serve runs in one process, each with --metrics-listen (with
// --debug-listen, expvar's one global map made the second panic): each
// serves its own /metrics, with the Go runtime's and the process's
// metrics, and counts only its own tunnels.
func TestServeMetricsTwoInProcess(t *testing.T) {
	t.Parallel()
	port := echoService(t)
	var runs [2]*run
	var addrs, urls [2]string
	for i := range runs {
		runs[i], addrs[i] = startServe(t, env(), "--insecure-no-auth", "--metrics-listen", "127.0.0.1:0")
		urls[i] = runs[i].stderr.waitFor(t, metricsURLRE, 10*time.Second)[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := &websocket.Dialer{BaseURL: "http://" + addrs[0]}
	defer d.CloseIdleConnections()
	c, err := d.DialSprite(ctx, "box", "tcp", "localhost:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	for i, want := range []float64{1, 0} {
		m := scrapeMetrics(t, urls[i])
		if got, ok := m[`spriteproxy_tunnels_total{result="ok"}`]; !ok || got != want {
			t.Errorf("serve %d: %v ok tunnels (listed: %v), want %v", i, got, ok, want)
		}
		for _, name := range []string{"spriteproxy_tunnels_open", "spriteproxy_connections_idle", `spriteproxy_tunnel_bytes_total{direction="to_target"}`,
			"spriteproxy_handshake_seconds_count", "spriteproxy_target_dial_seconds_count", "go_goroutines"} {
			if _, ok := m[name]; !ok {
				t.Errorf("serve %d: no %s", i, name)
			}
		}
		if _, ok := m["process_open_fds"]; !ok && runtime.GOOS == "linux" {
			t.Errorf("serve %d: no process_open_fds", i)
		}
	}
	for i, r := range runs {
		if code := r.stop(t); code != 0 {
			t.Errorf("serve %d exit %d; stderr:\n%s", i, code, r.stderr.String())
		}
	}
}
