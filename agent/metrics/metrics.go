// Package metrics is the agent's Prometheus metrics and its optional
// local listener (/healthz, /readyz, /metrics), off by default and on a
// loopback address unless the config says otherwise.
//
// Metrics implements agent.Observer: the agent tells it about sessions,
// jobs, secret reads and GitHub calls as they happen. It keeps its own
// registry (never the global default one), so that tests can build as many
// as they like.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/protocol"
)

// Namespace prefixes every metric name.
const Namespace = "orchestrator_agent"

// Metrics holds the agent's metrics. Build it with New.
type Metrics struct {
	reg *prometheus.Registry

	connected      prometheus.Gauge
	connectedSince prometheus.Gauge
	sessions       prometheus.Counter
	disconnects    prometheus.Counter
	reconnects     prometheus.Counter
	jobs           *prometheus.CounterVec
	jobDuration    *prometheus.HistogramVec
	secretCalls    *prometheus.CounterVec
	secretDuration *prometheus.HistogramVec
	githubCalls    *prometheus.CounterVec
	githubDuration prometheus.Histogram
}

var _ agent.Observer = (*Metrics)(nil)

// New builds the metrics in a registry of their own, with the Go runtime's
// and the process's collectors, and a build-info gauge for version.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{
		reg: reg,
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "connected",
			Help: "1 while a session with the control plane is established, else 0."}),
		connectedSince: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "connected_since_seconds",
			Help: "Unix time the current session was established; 0 while disconnected."}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "sessions_total",
			Help: "Sessions established with the control plane (handshake done)."}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "disconnects_total",
			Help: "Established sessions that ended."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "reconnects_total",
			Help: "Waits before dialing the control plane again, after a failed dial or an ended session."}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "jobs_total",
			Help: "Jobs run, by kind and outcome (succeeded, failed, canceled) and error code (empty on success)."},
			[]string{"kind", "outcome", "error_code"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "job_duration_seconds",
			Help: "How long jobs ran on the agent, by kind.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)},
			[]string{"kind"}),
		secretCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "secret_calls_total",
			Help: "Reads from a secret backend, by backend and code (ok, or the error code such as secret_access_denied)."},
			[]string{"backend", "code"}),
		secretDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "secret_call_duration_seconds",
			Help: "How long reads from a secret backend took, by backend.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10)},
			[]string{"backend"}),
		githubCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "github_calls_total",
			Help: "HTTP calls to GitHub, by the answer's status code (\"error\" when none came)."},
			[]string{"status"}),
		githubDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "github_call_duration_seconds",
			Help: "How long HTTP calls to GitHub took.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)}),
	}
	for _, c := range []prometheus.Collector{m.connected, m.connectedSince, m.sessions, m.disconnects, m.reconnects,
		m.jobs, m.jobDuration, m.secretCalls, m.secretDuration, m.githubCalls, m.githubDuration} {
		f(c)
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the version label is the agent's build version.", ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	f(build)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the metrics' registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetRunning registers the jobs_running gauge, read from running at each
// scrape. Call it once, after the agent exists.
func (m *Metrics) SetRunning(running func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "jobs_running",
		Help: "Jobs running now."}, func() float64 { return float64(running()) }))
}

// Connected implements agent.Observer.
func (m *Metrics) Connected(string) {
	m.connected.Set(1)
	m.connectedSince.Set(float64(time.Now().Unix()))
	m.sessions.Inc()
}

// Disconnected implements agent.Observer.
func (m *Metrics) Disconnected(error) {
	m.connected.Set(0)
	m.connectedSince.Set(0)
	m.disconnects.Inc()
}

// Reconnecting implements agent.Observer.
func (m *Metrics) Reconnecting(time.Duration, error) { m.reconnects.Inc() }

// JobDone implements agent.Observer.
func (m *Metrics) JobDone(kind protocol.JobKind, outcome string, code protocol.ErrorCode, d time.Duration) {
	m.jobs.WithLabelValues(string(kind), outcome, string(code)).Inc()
	m.jobDuration.WithLabelValues(string(kind)).Observe(d.Seconds())
}

// SecretCall implements agent.Observer.
func (m *Metrics) SecretCall(backend, code string, d time.Duration) {
	m.secretCalls.WithLabelValues(backend, code).Inc()
	m.secretDuration.WithLabelValues(backend).Observe(d.Seconds())
}

// GitHubCall implements agent.Observer.
func (m *Metrics) GitHubCall(status int, _ error, d time.Duration) {
	s := "error"
	if status > 0 {
		s = strconv.Itoa(status)
	}
	m.githubCalls.WithLabelValues(s).Inc()
	m.githubDuration.Observe(d.Seconds())
}

// Handler serves /healthz (the process answers), /readyz (ready() says
// the agent is connected to the control plane) and /metrics.
func (m *Metrics) Handler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil && !ready() {
			writeStatus(w, http.StatusServiceUnavailable, "not connected to the control plane")
			return
		}
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError}))
	return mux
}

func writeStatus(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text + "\n"))
}

// Serve serves h on ln until ctx ends, then shuts the server down (bounded
// by five seconds).
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute,
		MaxHeaderBytes: 16 << 10, ErrorLog: zap.NewStdLog(log)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(shut)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}
