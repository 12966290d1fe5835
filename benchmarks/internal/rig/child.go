package rig

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/reference"
	"github.com/spriteproxy/spriteproxy/proxy"
)

// ChildEnv is the environment variable that makes a benchmark binary run as
// a helper process instead of running tests: its value is the role,
// "server-KIND" or "client-KIND" with KIND "ours", "ours-wss" (over TLS
// 1.3), "ours-resume" (ours with the resume extension granted) or
// "reference".
//
// A helper reads one command a line on stdin and answers one line on
// stdout ("err ..." on failure):
//
//	mem                  → mem HEAP STACK RSS GOROUTINES (see ReadMem)
//	live                 → live N  (server: tunnels open)
//	open N URL ADDR [ROOT] → ok    (client: N idle tunnels to ADDR via URL, trusting ROOT)
//	carry BYTES          → ok      (client: BYTES each way through every tunnel; ADDR echoes)
//	quit                 → ok, then it closes everything and exits
//
// A server answers its first line unasked: url URL [ROOT], where ROOT is
// its certificate (https:// only), PEM in base64.
const ChildEnv = "SPRITEPROXY_BENCH_CHILD"

// ChildMain runs the helper role and returns the process's exit code.
func ChildMain(role string) int {
	kind, ok := strings.CutPrefix(role, "server-")
	isServer := ok
	if !ok {
		kind, ok = strings.CutPrefix(role, "client-")
	}
	if !ok || (kind != "ours" && kind != "ours-wss" && kind != "ours-resume" && kind != "reference") {
		fmt.Fprintf(os.Stderr, "%s=%q: unknown role\n", ChildEnv, role)
		return 2
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	var h handler
	if isServer {
		s, err := newServerChild(kind)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if s.srv.RootPEM != nil {
			say("url %s %s", s.srv.URL, base64.StdEncoding.EncodeToString(s.srv.RootPEM))
		} else {
			say("url %s", s.srv.URL)
		}
		h = s
	} else {
		// The payload that carry sends is made now, so that it is in the
		// baseline and not weighed as the tunnels'.
		Payload()
		h = &clientChild{kind: kind}
	}
	defer h.close()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "quit":
			say("ok")
			return 0
		case "mem":
			m := ReadMem()
			say("mem %d %d %d %d", m.HeapAlloc, m.StackInuse, m.RSS, m.Goroutines)
		default:
			reply, err := h.do(f)
			if err != nil {
				say("err %s", strings.ReplaceAll(err.Error(), "\n", " "))
			} else {
				say("%s", reply)
			}
		}
	}
	return 0
}

type handler interface {
	do(cmd []string) (string, error)
	close()
}

// serverChild is a tunnel server in its own process.
type serverChild struct{ srv *Server }

func newServerChild(kind string) (*serverChild, error) {
	var srv *Server
	var err error
	switch kind {
	case "ours", "ours-wss", "ours-resume":
		srv, err = StartOurs(kind == "ours-wss", kind == "ours-resume")
	default:
		srv, err = StartReference(false)
	}
	if err != nil {
		return nil, err
	}
	return &serverChild{srv: srv}, nil
}

func (s *serverChild) do(cmd []string) (string, error) {
	if cmd[0] == "live" {
		return fmt.Sprintf("live %d", s.srv.Live()), nil
	}
	return "", fmt.Errorf("unknown command %q", cmd[0])
}

func (s *serverChild) close() { s.srv.Close() }

// clientChild holds tunnels in its own process.
type clientChild struct {
	kind  string
	conns []net.Conn
}

func (c *clientChild) do(cmd []string) (string, error) {
	switch {
	case cmd[0] == "open" && (len(cmd) == 4 || len(cmd) == 5):
		n, err := strconv.Atoi(cmd[1])
		if err != nil {
			return "", err
		}
		var tlsConf *tls.Config
		if len(cmd) == 5 {
			pem, err := base64.StdEncoding.DecodeString(cmd[4])
			if err != nil {
				return "", err
			}
			if tlsConf = ClientTLS(pem); tlsConf == nil {
				return "", errors.New("no certificate in ROOT")
			}
		}
		return "ok", c.open(n, cmd[2], cmd[3], tlsConf)
	case cmd[0] == "carry" && len(cmd) == 2:
		n, err := strconv.Atoi(cmd[1])
		if err != nil {
			return "", err
		}
		return "ok", c.carry(n)
	}
	return "", fmt.Errorf("unknown command %q", strings.Join(cmd, " "))
}

func (c *clientChild) open(n int, url, addr string, tlsConf *tls.Config) error {
	var dial func(ctx context.Context) (net.Conn, error)
	if c.kind != "reference" {
		sp := proxy.New(Token, proxy.WithBaseURL(url), proxy.WithTLSConfig(tlsConf)).Sprite(Sprite)
		dial = func(ctx context.Context) (net.Conn, error) { return sp.ProxySocket(ctx, "tcp", addr) }
	} else {
		d := &reference.Dialer{BaseURL: url, Token: Token}
		dial = func(ctx context.Context) (net.Conn, error) { return d.Dial(ctx, Sprite, addr) }
	}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := dial(ctx)
		cancel()
		if err != nil {
			return err
		}
		c.conns = append(c.conns, conn)
	}
	return nil
}

// carry sends size bytes through each tunnel and reads them back, two
// tunnels at a time.
func (c *clientChild) carry(size int) error {
	p := Payload()
	work := make(chan net.Conn)
	errs := make(chan error, len(c.conns))
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for conn := range work {
				errs <- roundTrip(conn, p, buf, size)
			}
		}()
	}
	for _, conn := range c.conns {
		work <- conn
	}
	close(work)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// roundTrip writes size bytes of p (in 32 KiB writes) to conn while reading
// as many back, and checks what came back.
func roundTrip(conn net.Conn, p, buf []byte, size int) error {
	conn.SetDeadline(time.Now().Add(time.Minute))
	defer conn.SetDeadline(time.Time{})
	werr := make(chan error, 1)
	go func() {
		for sent := 0; sent < size; {
			n := min(32<<10, size-sent)
			off := sent % len(p)
			n = min(n, len(p)-off)
			if _, err := conn.Write(p[off : off+n]); err != nil {
				werr <- err
				return
			}
			sent += n
		}
		werr <- nil
	}()
	var got int
	for got < size {
		n, err := conn.Read(buf[:min(len(buf), size-got)])
		for i := range n {
			if buf[i] != p[(got+i)%len(p)] {
				return fmt.Errorf("byte %d came back changed", got+i)
			}
		}
		got += n
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return <-werr
}

func (c *clientChild) close() {
	var wg sync.WaitGroup
	for _, conn := range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn.Close()
		}()
	}
	wg.Wait()
}
