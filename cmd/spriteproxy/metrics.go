package main

import (
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// metricsServer serves /metrics in Prometheus's text format on a listener
// of its own: the server's tunnel metrics, and the Go runtime's and the
// process's (goroutines, memory, open descriptors, CPU). Each serve has a
// registry of its own, so two in one process do not collide.
type metricsServer struct {
	addr   string
	hs     *http.Server
	served chan struct{}
}

func startMetrics(addr string, m *websocket.Metrics) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ms := &metricsServer{
		addr:   ln.Addr().String(),
		hs:     &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		served: make(chan struct{}),
	}
	go func() {
		defer close(ms.served)
		ms.hs.Serve(ln)
	}()
	return ms, nil
}

func (ms *metricsServer) close() {
	ms.hs.Close()
	<-ms.served
}
