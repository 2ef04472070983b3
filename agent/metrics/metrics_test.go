package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/orchestrator/orchestrator/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestObserverCounts(t *testing.T) {
	t.Parallel()
	m := New("test")
	m.Connected("ses_1")
	m.JobDone(protocol.KindResolveCredentials, "succeeded", "", 10*time.Millisecond)
	m.JobDone(protocol.KindResolveCredentials, "failed", protocol.CodeSecretNotAllowed, time.Millisecond)
	m.SecretCall("aws", "ok", time.Millisecond)
	m.SecretCall("aws", "secret_access_denied", time.Millisecond)
	m.GitHubCall(200, nil, time.Millisecond)
	m.GitHubCall(0, errors.New("refused"), time.Millisecond)
	m.Disconnected(errors.New("lost"))
	m.Reconnecting(time.Second, errors.New("lost"))

	for _, tt := range []struct {
		name string
		got  float64
		want float64
	}{
		{"jobs succeeded", testutil.ToFloat64(m.jobs.WithLabelValues("resolve_credentials", "succeeded", "")), 1},
		{"jobs failed", testutil.ToFloat64(m.jobs.WithLabelValues("resolve_credentials", "failed", "secret_not_allowed")), 1},
		{"secret ok", testutil.ToFloat64(m.secretCalls.WithLabelValues("aws", "ok")), 1},
		{"secret denied", testutil.ToFloat64(m.secretCalls.WithLabelValues("aws", "secret_access_denied")), 1},
		{"github 200", testutil.ToFloat64(m.githubCalls.WithLabelValues("200")), 1},
		{"github error", testutil.ToFloat64(m.githubCalls.WithLabelValues("error")), 1},
		{"connected", testutil.ToFloat64(m.connected), 0},
		{"sessions", testutil.ToFloat64(m.sessions), 1},
		{"reconnects", testutil.ToFloat64(m.reconnects), 1},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestListener(t *testing.T) {
	t.Parallel()
	m := New("test")
	var running atomic.Int64
	running.Store(3)
	m.SetRunning(func() int { return int(running.Load()) })
	var connected atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, m.Handler(connected.Load), nil) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	}()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected") {
		t.Errorf("/readyz while disconnected = %d %q", code, body)
	}
	connected.Store(true)
	m.Connected("ses_1")
	m.JobDone(protocol.KindTestConnection, "succeeded", "", time.Second)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while connected = %d", code)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`orchestrator_agent_connected 1`,
		`orchestrator_agent_jobs_running 3`,
		`orchestrator_agent_jobs_total{error_code="",kind="test_connection",outcome="succeeded"} 1`,
		`orchestrator_agent_job_duration_seconds_count{kind="test_connection"} 1`,
		`orchestrator_agent_build_info{version="test"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
