package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/proxy"
	"golang.org/x/sync/errgroup"
)

// The soak test runs only when SPRITEPROXY_SOAK=1 (.ci/run sets it): a few
// thousand short tunnels and some long bulk ones at once through a real
// "spriteproxy serve" process over TLS, a third of them to a target that
// fails on purpose. Every byte that was sent to a healthy target must come
// back intact, every failure must be an error (never a hang), and the
// server's tunnels, goroutines and descriptors must return to where they
// started.
func TestSoak(t *testing.T) {
	if os.Getenv("SPRITEPROXY_SOAK") != "1" {
		t.Skip("set SPRITEPROXY_SOAK=1 to run the soak test")
	}
	shortTunnels, bulkStreams, bulkSize := 3000, 4, 32<<20
	if n, err := strconv.Atoi(os.Getenv("SPRITEPROXY_SOAK_TUNNELS")); err == nil {
		shortTunnels = n
	}
	bin, _ := buildBinaries(t)
	srv, api, ca := serveProcess(t, bin, "--metrics-listen", "127.0.0.1:0", "--max-tunnels-per-token", "-1")
	metrics := srv.stderr.waitFor(t, regexp.MustCompile(`msg="metrics endpoint" url=(\S+)`), 30*time.Second)[1]
	tlsConf, err := loadCA("--tls-ca", ca)
	if err != nil {
		t.Fatal(err)
	}
	client := proxy.New(testToken, proxy.WithBaseURL(api), proxy.WithTLSConfig(tlsConf))
	sprite := client.Sprite("box")
	echoPort := echoService(t)
	faultyPort := faultyService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// A first tunnel warms the server up; its state after that is the
	// baseline the end must return to.
	// Idle connections kept for reuse are let go before each reading, so
	// that the two compare the server with no connection at all.
	oneTunnel(ctx, sprite, echoPort, 10)
	client.CloseIdleConnections()
	base := settle(t, metrics, nil)
	t.Logf("server at rest: %+v", base)

	start := time.Now()
	var ok, failedOnPurpose atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	// The bulk streams, through a ProxyPort session.
	ps, err := sprite.ProxyPort(ctx, 0, echoPort)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	for range bulkStreams {
		g.Go(func() error { return bulk(gctx, ps.LocalAddr().String(), bulkSize) })
	}
	// The short tunnels, 32 at a time; every third to the faulty target.
	sem := make(chan struct{}, 32)
	for i := range shortTunnels {
		sem <- struct{}{}
		g.Go(func() error {
			defer func() { <-sem }()
			if i%3 == 2 {
				if err := oneTunnel(gctx, sprite, faultyPort, 1+rand.IntN(64<<10)); err != nil {
					failedOnPurpose.Add(1)
				}
				return nil
			}
			if err := oneTunnel(gctx, sprite, echoPort, 1+rand.IntN(64<<10)); err != nil {
				return fmt.Errorf("tunnel %d to the healthy target: %w", i, err)
			}
			ok.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	ps.Close()
	t.Logf("%d healthy tunnels intact, %d bulk streams of %d MiB intact, %d of %d faulty tunnels failed cleanly, in %v",
		ok.Load(), bulkStreams, bulkSize>>20, failedOnPurpose.Load(), shortTunnels/3, time.Since(start).Round(time.Millisecond))
	client.CloseIdleConnections()
	end := settle(t, metrics, &base)
	t.Logf("server at rest again: %+v", end)
}

// serverVars are the serve process's figures from --metrics-listen.
type serverVars struct {
	Tunnels    int // spriteproxy_tunnels_open
	Goroutines int // go_goroutines
	FDs        int // process_open_fds
}

// settle reads the server's metrics until no tunnel is open and, if want
// is given, goroutines and descriptors are back to it. The server is
// another process with nothing to wait on but its metrics, so this polls,
// within a bound. A metric missing from the page fails the test, so that
// one renamed cannot read as 0 and pass the check trivially
// (process_open_fds is required only on Linux, where Prometheus's process
// collector always reports it).
func settle(t *testing.T, url string, want *serverVars) serverVars {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := scrapeMetrics(t, url)
		need := func(name string, required bool) int {
			v, ok := m[name]
			if !ok && required {
				t.Fatalf("GET %s: no %s sample", url, name)
			}
			return int(v)
		}
		v := serverVars{
			Tunnels:    need("spriteproxy_tunnels_open", true),
			Goroutines: need("go_goroutines", true),
			FDs:        need("process_open_fds", runtime.GOOS == "linux"),
		}
		if v.Tunnels == 0 && (want == nil || v.Goroutines <= want.Goroutines && v.FDs <= want.FDs) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not return to rest: %+v, want %+v", v, want)
		}
		time.Sleep(50 * time.Millisecond) // another process: polling is all there is
	}
}

// scrapeMetrics reads a /metrics page in Prometheus's text format: each
// sample's value by its name and labels as written (name{label="v"}).
func scrapeMetrics(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	m := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ') // label values may hold spaces
		if i < 0 {
			t.Fatalf("GET %s: bad sample line %q", url, line)
		}
		name, value := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("GET %s: bad sample line %q", url, line)
		}
		m[name] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// oneTunnel sends n random bytes to an echo through a new tunnel, ends its
// side, and checks that exactly those bytes come back.
func oneTunnel(ctx context.Context, sprite *proxy.Sprite, port, n int) error {
	c, err := sprite.ProxySocket(ctx, "tcp", "localhost:"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := make([]byte, n)
	for i := range msg {
		msg[i] = byte(rand.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	werr := <-errc
	if rerr != nil {
		return rerr
	}
	if werr != nil {
		return werr
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("%d bytes came back for %d sent, or different ones", len(got), n)
	}
	return nil
}

// bulk pushes size random bytes through a forwarded local port to the echo
// and compares checksums of what went and what came back.
func bulk(ctx context.Context, addr string, size int) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := io.TeeReader(io.LimitReader(chacha{rand.NewChaCha8([32]byte{byte(size)})}, int64(size)), sent)
		_, err := io.Copy(c, src)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if werr := <-errc; werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if n != int64(size) || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		return fmt.Errorf("bulk: %d bytes back for %d, checksums differ: %v", n, size, !bytes.Equal(got.Sum(nil), sent.Sum(nil)))
	}
	return nil
}

// chacha is a reader of pseudo-random bytes.
type chacha struct{ r *rand.ChaCha8 }

func (c chacha) Read(p []byte) (int, error) { return c.r.Read(p) }

// faultyService fails its connections on purpose, in turn: a reset after
// reading a little, an immediate close, an echo of half then a close, and a
// close of the write side only (then it reads on).
func faultyService(t *testing.T) int {
	t.Helper()
	var n atomic.Int64
	return testnet.Listen(t, func(c net.Conn) {
		tc := c.(*net.TCPConn)
		tc.SetDeadline(time.Now().Add(time.Minute))
		switch n.Add(1) % 4 {
		case 0:
			io.CopyN(io.Discard, c, 100)
			tc.SetLinger(0)
		case 1:
		case 2:
			io.CopyN(c, c, 512)
		case 3:
			tc.CloseWrite()
			io.Copy(io.Discard, c)
		}
	})
}
