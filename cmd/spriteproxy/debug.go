package main

import (
	"errors"
	"expvar"
	"net"
	"net/http"
	"os"
	"runtime"

	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// debugServer serves expvar's /debug/vars, with the server's live tunnels,
// the process's goroutines and open file descriptors, for operators and
// for the soak test, which checks they return to where they started.
type debugServer struct {
	addr   string
	hs     *http.Server
	served chan struct{}
}

// startDebug listens on addr, which must be a loopback address: the
// endpoint tells more than the network should know.
func startDebug(addr string, srv *websocket.Server) (*debugServer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, errors.New("the debug endpoint listens on loopback only")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	vars := expvar.NewMap("spriteproxy")
	vars.Set("tunnels", expvar.Func(func() any { return srv.Live() }))
	vars.Set("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
	vars.Set("fds", expvar.Func(func() any {
		fds, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return -1
		}
		return len(fds)
	}))
	mux := http.NewServeMux()
	mux.Handle("/debug/vars", expvar.Handler())
	d := &debugServer{addr: ln.Addr().String(), hs: &http.Server{Handler: mux}, served: make(chan struct{})}
	go func() {
		defer close(d.served)
		d.hs.Serve(ln)
	}()
	return d, nil
}

func (d *debugServer) close() {
	d.hs.Close()
	<-d.served
}
