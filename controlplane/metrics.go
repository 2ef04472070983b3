package controlplane

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// metricsNamespace prefixes every metric name of the control plane.
const metricsNamespace = "orchestrator_controlplane"

// metrics are the control plane's Prometheus metrics, in a registry of
// their own (never the global default one), served at GET /metrics.
type metrics struct {
	reg *prometheus.Registry

	sessionsOpened prometheus.Counter
	sessionsClosed *prometheus.CounterVec
	refused        *prometheus.CounterVec
	jobsSubmitted  *prometheus.CounterVec
	jobs           *prometheus.CounterVec
	queueWait      *prometheus.HistogramVec
	agentRun       *prometheus.HistogramVec
	endToEnd       *prometheus.HistogramVec
	storeLatency   *prometheus.HistogramVec
	storeErrors    *prometheus.CounterVec
}

// jobBuckets spans a job's times: from a millisecond (queue wait on an
// idle agent) to the maximum job timeout.
var jobBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

func newMetrics(version string) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		sessionsOpened: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "sessions_opened_total",
			Help: "Agent sessions established (handshake done)."}),
		sessionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "sessions_closed_total",
			Help: "Agent sessions ended, by reason: agent_closed, heartbeat_timeout, connection_lost, frame_too_large, closed_by_control_plane."},
			[]string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "handshakes_refused_total",
			Help: "Agent connections refused at the handshake, by reason: auth_failed, revoked, incompatible, protocol_error, unavailable."},
			[]string{"reason"}),
		jobsSubmitted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "jobs_submitted_total",
			Help: "Jobs queued, by kind."}, []string{"kind"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "jobs_total",
			Help: "Jobs that reached a terminal state, by kind, outcome (succeeded, failed, expired, canceled) and error code (empty on success)."},
			[]string{"kind", "outcome", "error_code"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "job_queue_wait_seconds",
			Help: "From a job's submission to its (last) dispatch to the agent, by kind.", Buckets: jobBuckets}, []string{"kind"}),
		agentRun: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "job_agent_run_seconds",
			Help: "From the agent's accepted to its result, by kind.", Buckets: jobBuckets}, []string{"kind"}),
		endToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "job_end_to_end_seconds",
			Help: "From a job's submission to its terminal state, by kind.", Buckets: jobBuckets}, []string{"kind"}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "store_latency_seconds",
			Help: "Store calls, by operation.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "store_errors_total",
			Help: "Store calls that failed (not found and conflicts excluded), by operation."}, []string{"op"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "build_info",
		Help: "Always 1; the version label is the control plane's build version.", ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	m.reg.MustRegister(m.sessionsOpened, m.sessionsClosed, m.refused, m.jobsSubmitted, m.jobs, m.queueWait, m.agentRun,
		m.endToEnd, m.storeLatency, m.storeErrors, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watch registers the gauges read from the dispatcher at each scrape.
func (m *metrics) watch(d *dispatcher) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "agents_connected",
			Help: "Agents with an established session now."}, func() float64 { return float64(d.connectedCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "dispatch_queue_depth",
			Help: "Jobs queued for their agent (offline, busy or draining) now."}, func() float64 { return float64(d.queueDepth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "jobs_open",
			Help: "Jobs not yet in a terminal state now."}, func() float64 { return float64(d.openCount()) }),
	)
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// jobFinished records a job that reached a terminal state.
func (m *metrics) jobFinished(j store.Job) {
	kind := string(j.Kind)
	code := ""
	if j.Error != nil {
		code = string(j.Error.Code)
	}
	m.jobs.WithLabelValues(kind, string(j.State), code).Inc()
	if j.FinishedAt == nil {
		return
	}
	m.endToEnd.WithLabelValues(kind).Observe(j.FinishedAt.Sub(j.CreatedAt).Seconds())
	if j.DispatchedAt != nil {
		m.queueWait.WithLabelValues(kind).Observe(j.DispatchedAt.Sub(j.CreatedAt).Seconds())
	}
	if j.AcceptedAt != nil && (j.State == protocol.JobSucceeded || j.State == protocol.JobFailed) {
		m.agentRun.WithLabelValues(kind).Observe(j.FinishedAt.Sub(*j.AcceptedAt).Seconds())
	}
}

// sessionClosed counts an ended session by the reason readLoop gave.
func (m *metrics) sessionClosed(reason string) {
	m.sessionsClosed.WithLabelValues(closeLabel(reason)).Inc()
}

// closeLabel turns readLoop's reason (a sentence) into a label of few
// values.
func closeLabel(reason string) string {
	switch {
	case strings.HasPrefix(reason, "agent closed"):
		return "agent_closed"
	case strings.HasPrefix(reason, "no heartbeat"):
		return "heartbeat_timeout"
	case strings.HasPrefix(reason, "frame over"):
		return "frame_too_large"
	case strings.HasPrefix(reason, "closed by the control plane"):
		return "closed_by_control_plane"
	}
	return "connection_lost"
}

// refusedLabel names a handshake refusal's close code.
func refusedLabel(code int) string {
	switch code {
	case protocol.CloseAuthFailed:
		return "auth_failed"
	case protocol.CloseRevoked:
		return "revoked"
	case protocol.CloseIncompatible:
		return "incompatible"
	case protocol.CloseProtocolError:
		return "protocol_error"
	}
	return "unavailable"
}

// connectedCount is how many agents have a session now.
func (d *dispatcher) connectedCount() int {
	n := 0
	for _, a := range d.agentList() {
		a.mu.Lock()
		if a.sess != nil {
			n++
		}
		a.mu.Unlock()
	}
	return n
}

// queueDepth is how many jobs wait in the agents' queues now.
func (d *dispatcher) queueDepth() int {
	n := 0
	for _, a := range d.agentList() {
		a.mu.Lock()
		n += len(a.queue)
		a.mu.Unlock()
	}
	return n
}

// openCount is how many jobs are not terminal.
func (d *dispatcher) openCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.jobs)
}

func (d *dispatcher) agentList() []*agentState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*agentState, 0, len(d.agents))
	for _, a := range d.agents {
		out = append(out, a)
	}
	return out
}

// measuredStore times the store's agent and job calls. It embeds the
// store, so that the methods it does not time (connections, and any added
// later) go through unchanged.
type measuredStore struct {
	store.Store
	m *metrics
}

func (s measuredStore) observe(op string, start time.Time, err error) {
	s.m.storeLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !isExpectedStoreError(err) {
		s.m.storeErrors.WithLabelValues(op).Inc()
	}
}

func isExpectedStoreError(err error) bool {
	for _, e := range []error{store.ErrNotFound, store.ErrConflict, store.ErrTokenInvalid, store.ErrStale, context.Canceled} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s measuredStore) CreateAgent(ctx context.Context, a store.Agent, t store.Token) (err error) {
	defer func(start time.Time) { s.observe("create_agent", start, err) }(time.Now())
	return s.Store.CreateAgent(ctx, a, t)
}

func (s measuredStore) GetAgent(ctx context.Context, id string) (a store.Agent, err error) {
	defer func(start time.Time) { s.observe("get_agent", start, err) }(time.Now())
	return s.Store.GetAgent(ctx, id)
}

func (s measuredStore) ListAgents(ctx context.Context) (as []store.Agent, err error) {
	defer func(start time.Time) { s.observe("list_agents", start, err) }(time.Now())
	return s.Store.ListAgents(ctx)
}

func (s measuredStore) Enroll(ctx context.Context, hash, publicKey []byte, now time.Time) (a store.Agent, err error) {
	defer func(start time.Time) { s.observe("enroll", start, err) }(time.Now())
	return s.Store.Enroll(ctx, hash, publicKey, now)
}

func (s measuredStore) UpdateAgentInfo(ctx context.Context, id string, info store.AgentInfo) (err error) {
	defer func(start time.Time) { s.observe("update_agent_info", start, err) }(time.Now())
	return s.Store.UpdateAgentInfo(ctx, id, info)
}

func (s measuredStore) CreateJob(ctx context.Context, j store.Job) (err error) {
	defer func(start time.Time) {
		s.observe("create_job", start, err)
		if err == nil {
			s.m.jobsSubmitted.WithLabelValues(string(j.Kind)).Inc()
		}
	}(time.Now())
	return s.Store.CreateJob(ctx, j)
}

func (s measuredStore) GetJob(ctx context.Context, id string) (j store.Job, err error) {
	defer func(start time.Time) { s.observe("get_job", start, err) }(time.Now())
	return s.Store.GetJob(ctx, id)
}

func (s measuredStore) ListJobs(ctx context.Context, f store.JobFilter) (js []store.Job, err error) {
	defer func(start time.Time) { s.observe("list_jobs", start, err) }(time.Now())
	return s.Store.ListJobs(ctx, f)
}

func (s measuredStore) OpenJobs(ctx context.Context) (js []store.Job, err error) {
	defer func(start time.Time) { s.observe("open_jobs", start, err) }(time.Now())
	return s.Store.OpenJobs(ctx)
}

func (s measuredStore) UpdateJob(ctx context.Context, j store.Job, from ...protocol.JobState) (ok bool, err error) {
	defer func(start time.Time) { s.observe("update_job", start, err) }(time.Now())
	return s.Store.UpdateJob(ctx, j, from...)
}

func (s measuredStore) Ping(ctx context.Context) (err error) {
	defer func(start time.Time) { s.observe("ping", start, err) }(time.Now())
	return s.Store.Ping(ctx)
}
