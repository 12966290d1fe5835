package websocket

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spriteproxy/spriteproxy/dialer"
)

// Metrics counts a Server's tunnels for Prometheus. Make one with
// NewMetrics, register it with a prometheus.Registerer (it is a
// prometheus.Collector), and set it as Server.Metrics:
//
//	m := websocket.NewMetrics()
//	reg.MustRegister(m)
//	srv := &websocket.Server{Metrics: m}
//
// Nothing is registered globally: each server's Metrics goes where its
// embedder registers it. Two servers in one process each take their own,
// in registries of their own or in one registry under a label that tells
// them apart (prometheus.WrapRegistererWith); servers that share one
// Metrics add up in it.
//
// Labels never carry a token, a sprite name or a target address: their
// values are the fixed sets below. The metrics (README.md, "Operations",
// says more):
//
//   - spriteproxy_tunnels_open (gauge): tunnels between their "connected"
//     reply and their end.
//   - spriteproxy_tunnels_total{result} (counter): tunnels the server
//     answered, one count each, by result: ok, and refused, forbidden,
//     timeout, unreachable, bad_request (a reply's error code), and
//     unauthorized, forbidden, unknown_sprite, over_limit, unreachable,
//     bad_request (an HTTP refusal of an upgrade to the proxy endpoint).
//   - spriteproxy_tunnel_bytes_total{direction} (counter): payload bytes
//     that ended tunnels carried, to_target and from_target, added when
//     each tunnel ends.
//   - spriteproxy_handshake_seconds (histogram): from the upgrade request
//     (on a reused connection, the first message) to the reply.
//   - spriteproxy_target_dial_seconds (histogram): each target dial,
//     failed ones included.
//   - spriteproxy_connections_idle (gauge): connections waiting for a next
//     tunnel (the reuse extension).
//   - spriteproxy_http_refusals_total{code} (counter): upgrades refused
//     with an HTTP status, by status (on any path; health checks aside).
type Metrics struct {
	tunnelsOpen prometheus.Gauge
	tunnels     *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	handshake   prometheus.Histogram
	dial        prometheus.Histogram
	idle        prometheus.Gauge
	refusals    *prometheus.CounterVec
	resumes     *prometheus.CounterVec // the resume extension, by result
	detached    prometheus.Gauge       // resumable tunnels waiting for their client

	// The counters of each label value, looked up once.
	result             map[string]prometheus.Counter
	toTarget, fromTarg prometheus.Counter
}

// The results of spriteproxy_tunnels_total.
const (
	resultOK            = "ok"
	resultRefused       = "refused"
	resultForbidden     = "forbidden"
	resultTimeout       = "timeout"
	resultUnreachable   = "unreachable"
	resultBadRequest    = "bad_request"
	resultUnauthorized  = "unauthorized"
	resultUnknownSprite = "unknown_sprite"
	resultOverLimit     = "over_limit"
)

var results = []string{resultOK, resultRefused, resultForbidden, resultTimeout, resultUnreachable,
	resultBadRequest, resultUnauthorized, resultUnknownSprite, resultOverLimit}

// latencyBuckets span a loopback dial (well under a millisecond) to the
// default dial timeout (10 s).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics returns a server's metrics, all at zero, registered nowhere.
func NewMetrics() *Metrics {
	m := &Metrics{
		tunnelsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spriteproxy_tunnels_open",
			Help: "Tunnels open now: between their connected reply and their end.",
		}),
		tunnels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spriteproxy_tunnels_total",
			Help: "Tunnels the server answered (a reply to the first message, or an HTTP refusal of the upgrade), by result.",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spriteproxy_tunnel_bytes_total",
			Help: "Payload bytes carried by tunnels that ended, by direction (to_target, from_target).",
		}, []string{"direction"}),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "spriteproxy_handshake_seconds",
			Help:    "Time from the upgrade request (on a reused connection, the first message) to the reply.",
			Buckets: latencyBuckets,
		}),
		dial: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "spriteproxy_target_dial_seconds",
			Help:    "Time to dial a target, failed dials included.",
			Buckets: latencyBuckets,
		}),
		idle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spriteproxy_connections_idle",
			Help: "Connections waiting for their client's next tunnel (the reuse extension).",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spriteproxy_http_refusals_total",
			Help: "Upgrade requests refused with an HTTP status, by status code.",
		}, []string{"code"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spriteproxy_resumes_total",
			Help: "Resume requests and detached tunnels' ends (the resume extension), by result (ok, gone, forbidden, inconsistent, expired).",
		}, []string{"result"}),
		detached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spriteproxy_tunnels_detached",
			Help: "Resumable tunnels whose connection dropped, waiting for their client to resume them.",
		}),
		result: make(map[string]prometheus.Counter, len(results)),
	}
	for _, r := range results {
		m.result[r] = m.tunnels.WithLabelValues(r)
	}
	m.toTarget = m.bytes.WithLabelValues("to_target")
	m.fromTarg = m.bytes.WithLabelValues("from_target")
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.tunnelsOpen, m.tunnels, m.bytes, m.handshake, m.dial, m.idle, m.refusals, m.resumes, m.detached}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// The server's hooks: each is a no-op on a nil *Metrics, and none is
// called per message.

// answered counts a tunnel answered with a reply whose code is code
// (wire's error code, or "" for connected), start being when its request
// began.
func (m *Metrics) answered(code string, start time.Time) {
	if m == nil {
		return
	}
	m.handshake.Observe(time.Since(start).Seconds())
	switch code {
	case "":
		code = resultOK
	case dialer.CodeConnectionRefused:
		code = resultRefused
	case dialer.CodeUnavailable: // the last slot taken between upgrade and first message
		code = resultOverLimit
	}
	c, ok := m.result[code]
	if !ok {
		c = m.result[resultUnreachable] // as the client reads an unknown code
	}
	c.Inc()
}

// refused counts an HTTP refusal, and the tunnel it refused if the request
// was for a sprite's proxy endpoint (proxy).
func (m *Metrics) refused(status int, proxy bool) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(strconv.Itoa(status)).Inc()
	if !proxy {
		return
	}
	var r string
	switch status {
	case http.StatusUnauthorized:
		r = resultUnauthorized
	case http.StatusForbidden:
		r = resultForbidden
	case http.StatusNotFound:
		r = resultUnknownSprite
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		r = resultOverLimit // a cap, or the server shutting down
	case http.StatusBadGateway:
		r = resultUnreachable // the Resolver failed
	default:
		if status >= 500 {
			return // the server's own fault, not the tunnel's
		}
		r = resultBadRequest
	}
	m.result[r].Inc()
}

// dialed observes a target dial that began at start.
func (m *Metrics) dialed(start time.Time) {
	if m != nil {
		m.dial.Observe(time.Since(start).Seconds())
	}
}

// opened counts a tunnel open.
func (m *Metrics) opened() {
	if m != nil {
		m.tunnelsOpen.Inc()
	}
}

// closed counts an open tunnel ended, with the bytes it carried each way.
func (m *Metrics) closed(toTarget, fromTarget int64) {
	if m == nil {
		return
	}
	// Bytes first: a scrape that finds no tunnel open has all their bytes.
	m.toTarget.Add(float64(toTarget))
	m.fromTarg.Add(float64(fromTarget))
	m.tunnelsOpen.Dec()
}

// idled counts a connection that starts (+1) or stops (-1) waiting idle.
func (m *Metrics) idled(delta float64) {
	if m != nil {
		m.idle.Add(delta)
	}
}

// resumed counts a resume request (or a detached tunnel's expiry) by
// result.
func (m *Metrics) resumed(result string) {
	if m != nil {
		m.resumes.WithLabelValues(result).Inc()
	}
}

// resumeDetached counts a resumable tunnel that loses (+1) or gets back
// (-1) its connection, or ends while detached (-1).
func (m *Metrics) resumeDetached(delta float64) {
	if m != nil {
		m.detached.Add(delta)
	}
}
