package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/control"
	"github.com/orchestrator/orchestrator/agent/metrics"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/protocol"
)

// Operating both sides (issue 6): the metrics of both move with the jobs,
// the log lines that follow a job carry the fields an operator greps for,
// and the agent's log level changes at runtime without a restart, to debug,
// which still holds no secret.

// opsAgent is an agent wired as `agent run` wires it: metrics observer,
// local metrics listener, control socket with a runtime log level.
type opsAgent struct {
	id         string
	stateDir   string
	metricsURL string
	logs       *lockedBuffer
	level      zap.AtomicLevel
}

func startOpsAgent(t *testing.T, cp *controlPlane) *opsAgent {
	t.Helper()
	_, token := cp.register("ops-agent")
	// Short: the control socket's path must fit a unix socket address.
	base, err := os.MkdirTemp("", "ops")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	stateDir := filepath.Join(base, "s")
	if _, err := cp.enroll(token, stateDir); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	id, err := agent.LoadIdentity(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	p := &opsAgent{id: id.AgentID, stateDir: stateDir, logs: &lockedBuffer{}, level: zap.NewAtomicLevelAt(zapcore.InfoLevel)}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey, ec.MessageKey = "ts", "msg"
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(p.logs), p.level))
	cp.leaks.add(func() ([]evidence, error) {
		return []evidence{{name: "log of the ops agent", data: p.logs.Bytes()}}, nil
	})

	cfg := agent.Config{
		ControlPlane: cp.URL(), StateDir: stateDir, InsecureAllowWS: true, Concurrency: 2, DrainGrace: 5 * time.Second,
		Log:     agent.LogConfig{Format: "json", Level: "info"},
		Secrets: agent.SecretsConfig{File: &agent.FileSecretsConfig{Path: writeSecretsFile(t)}},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindResolveCredentials)},
			Secrets:  []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: allowedSecret}},
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := metrics.New("e2e")
	a, err := agent.New(agent.Options{Config: cfg, Identity: id, Logger: log, Version: "e2e", Observer: m,
		Backoff: backoff.Options{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	m.SetRunning(func() int { return a.Status().JobsRunning })
	ctl, err := control.Listen(control.Options{StateDir: stateDir, Level: p.level, Logger: log, Status: func() control.Report {
		s := a.Status()
		return control.Report{AgentID: id.AgentID, Connected: s.Connected, SessionID: s.SessionID, JobsRunning: s.JobsRunning}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.metricsURL = "http://" + ln.Addr().String() + "/metrics"

	ctx, cancel := context.WithCancel(context.Background())
	side, stopSide := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { _ = a.Run(ctx); done <- struct{}{} }()
	go func() { _ = ctl.Serve(side); done <- struct{}{} }()
	go func() {
		_ = metrics.Serve(side, ln, m.Handler(func() bool { return a.Status().Connected }), log)
		done <- struct{}{}
	}()
	t.Cleanup(func() {
		cancel()
		stopSide()
		for range 3 {
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				a.Abort()
				t.Error("the ops agent did not stop")
				return
			}
		}
		if t.Failed() {
			t.Logf("ops agent log:\n%s", tail(p.logs.String(), 20000))
		}
	})
	cp.waitAgentStatus(p.id, protocol.AgentOnline, 20*time.Second)
	return p
}

// scrape fetches a /metrics page.
func scrape(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// metricValue reads one sample (name with its labels as Prometheus writes
// them, sorted) from a /metrics page; -1 when absent.
func metricValue(page, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(page)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func wantMetric(t *testing.T, side, page, series string, want float64) {
	t.Helper()
	if got := metricValue(page, series); got != want {
		t.Errorf("%s: %s = %v, want %v", side, series, got, want)
	}
}

func TestMetricsAndLogsFollowJobs(t *testing.T) {
	cp := newControlPlane(t)
	p := startOpsAgent(t, cp)
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	before := scrape(t, client, cp.URL()+"/metrics")
	wantMetric(t, "control plane", before, `orchestrator_controlplane_agents_connected`, 1)
	wantMetric(t, "control plane", before, `orchestrator_controlplane_jobs_total{error_code="",kind="resolve_credentials",outcome="succeeded"}`, -1)

	// At info: no debug line.
	j1 := cp.submit(p.id, allowedSecret, jobTimeout, 20*time.Second)
	requireState(t, j1, protocol.JobSucceeded, 1)
	if hasLog(p.logs.Bytes(), "job started", nil) {
		t.Error("a debug line was logged at info level")
	}

	// Debug for a while, without a restart.
	ctx := testCtx(t, 20*time.Second)
	rep, err := control.NewClient(p.stateDir).SetLevel(ctx, "debug", time.Minute)
	if err != nil || rep.Level != "debug" || rep.Until == nil {
		t.Fatalf("SetLevel = %+v, %v", rep, err)
	}
	j2 := cp.submit(p.id, allowedSecret, jobTimeout, 20*time.Second)
	requireState(t, j2, protocol.JobSucceeded, 1)
	j3 := cp.submit(p.id, forbiddenSecret, jobTimeout, 20*time.Second)
	requireJobError(t, j3, protocol.JobFailed, protocol.CodeSecretNotAllowed)
	if !hasLog(p.logs.Bytes(), "job started", map[string]string{"job_id": j2.ID}) {
		t.Error("no debug line after the level changed to debug")
	}
	if hasLog(p.logs.Bytes(), "job started", map[string]string{"job_id": j1.ID}) {
		t.Error("a debug line for the job run at info")
	}

	// Both sides' metrics moved with the jobs.
	ag := scrape(t, client, p.metricsURL)
	wantMetric(t, "agent", ag, `orchestrator_agent_connected`, 1)
	wantMetric(t, "agent", ag, `orchestrator_agent_jobs_total{error_code="",kind="resolve_credentials",outcome="succeeded"}`, 2)
	wantMetric(t, "agent", ag, `orchestrator_agent_jobs_total{error_code="secret_not_allowed",kind="resolve_credentials",outcome="failed"}`, 1)
	wantMetric(t, "agent", ag, `orchestrator_agent_job_duration_seconds_count{kind="resolve_credentials"}`, 3)
	wantMetric(t, "agent", ag, `orchestrator_agent_secret_calls_total{backend="file",code="ok"}`, 2)
	wantMetric(t, "agent", ag, `orchestrator_agent_sessions_total`, 1)
	wantMetric(t, "agent", ag, `orchestrator_agent_jobs_running`, 0)

	cpm := scrape(t, client, cp.URL()+"/metrics")
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_jobs_total{error_code="",kind="resolve_credentials",outcome="succeeded"}`, 2)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_jobs_total{error_code="secret_not_allowed",kind="resolve_credentials",outcome="failed"}`, 1)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_jobs_submitted_total{kind="resolve_credentials"}`, 3)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_job_end_to_end_seconds_count{kind="resolve_credentials"}`, 3)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_job_queue_wait_seconds_count{kind="resolve_credentials"}`, 3)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_job_agent_run_seconds_count{kind="resolve_credentials"}`, 3)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_dispatch_queue_depth`, 0)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_sessions_opened_total`, 1)
	if metricValue(cpm, `orchestrator_controlplane_store_latency_seconds_count{op="create_job"}`) < 3 {
		t.Errorf("control plane: no store latency for create_job:\n%s", cpm)
	}

	// One grep of a job id follows it across both sides, with the fields
	// an operator needs.
	sess := cp.agent(p.id).SessionID
	if !hasLog(p.logs.Bytes(), "job done", map[string]string{
		"job_id": j3.ID, "agent_id": p.id, "session_id": sess, "kind": "resolve_credentials", "backend": "file",
		"outcome": "failed", "error_code": "secret_not_allowed",
	}) {
		t.Errorf("the agent's job done line lacks fields:\n%s", grepLines(p.logs.String(), j3.ID))
	}
	for _, l := range logLines(p.logs.Bytes()) {
		if l["msg"] == "job done" && l["job_id"] == j2.ID {
			for _, k := range []string{"secret_ref", "duration_ms"} {
				if _, ok := l[k]; !ok {
					t.Errorf("the agent's job done line lacks %s: %v", k, l)
				}
			}
		}
	}
	for _, msg := range []string{"job queued", "job dispatched", "job finished"} {
		if !hasLog(cp.logs.Bytes(), msg, map[string]string{"job_id": j3.ID, "agent_id": p.id, "kind": "resolve_credentials"}) {
			t.Errorf("the control plane has no %q line for %s:\n%s", msg, j3.ID, grepLines(cp.logs.String(), j3.ID))
		}
	}
	if !hasLog(cp.logs.Bytes(), "job finished", map[string]string{"job_id": j3.ID, "outcome": "failed", "error_code": "secret_not_allowed"}) {
		t.Errorf("the control plane's job finished line lacks fields:\n%s", grepLines(cp.logs.String(), j3.ID))
	}
	// No line per heartbeat at info.
	for _, l := range logLines(p.logs.Bytes()) {
		if strings.Contains(strings.ToLower(l["msg"].(string)), "heartbeat") {
			t.Errorf("a heartbeat log line: %v", l)
		}
	}
	// The canary check at the end of the test covers the debug lines.
}

// grepLines returns the lines of s that contain id.
func grepLines(s, id string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, id) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
