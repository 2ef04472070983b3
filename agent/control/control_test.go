package control

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shortDir is a state directory whose socket path fits the unix bound.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type served struct {
	srv    *Server
	level  zap.AtomicLevel
	logs   *syncBuffer
	log    *zap.Logger
	client *Client
}

func serve(t *testing.T, dir string) *served {
	t.Helper()
	s := &served{level: zap.NewAtomicLevelAt(zapcore.InfoLevel), logs: &syncBuffer{}}
	s.log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(s.logs), s.level))
	srv, err := Listen(Options{StateDir: dir, Level: s.level, Logger: s.log, Status: func() Report {
		return Report{AgentID: "agt_1", Connected: true, SessionID: "ses_1", JobsRunning: 2}
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	s.client = NewClient(dir)
	return s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStatusAndSocketMode(t *testing.T) {
	t.Parallel()
	dir := shortDir(t)
	s := serve(t, dir)
	fi, err := os.Stat(SocketPath(dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, mode %v; want 0600", err, fi.Mode())
	}
	r, err := s.client.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.AgentID != "agt_1" || !r.Connected || r.JobsRunning != 2 || r.LogLevel != "info" || r.ConfiguredLogLevel != "info" || r.LogLevelUntil != nil {
		t.Errorf("status = %+v", r)
	}
}

func TestLogLevelForAWhile(t *testing.T) {
	t.Parallel()
	s := serve(t, shortDir(t))
	ctx := testCtx(t)
	s.log.Debug("before")
	rep, err := s.client.SetLevel(ctx, "debug", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Level != "debug" || rep.Configured != "info" || rep.Until == nil {
		t.Errorf("SetLevel = %+v", rep)
	}
	s.log.Debug("during")
	if r, _ := s.client.Status(ctx); r.LogLevel != "debug" || r.LogLevelUntil == nil {
		t.Errorf("status during: %+v", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.level.Level() != zapcore.InfoLevel {
		if time.Now().After(deadline) {
			t.Fatal("the level did not revert")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.log.Debug("after")
	logs := s.logs.String()
	if strings.Contains(logs, `"before"`) || !strings.Contains(logs, `"during"`) || strings.Contains(logs, `"after"`) {
		t.Errorf("debug lines logged outside the window:\n%s", logs)
	}
	for _, want := range []string{"log level changed", "log level reverted"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q line:\n%s", want, logs)
		}
	}
	if r, _ := s.client.Status(ctx); r.LogLevelUntil != nil {
		t.Errorf("until still set after the revert: %+v", r)
	}
}

func TestLogLevelRefusals(t *testing.T) {
	t.Parallel()
	s := serve(t, shortDir(t))
	ctx := testCtx(t)
	for _, tt := range []struct {
		level string
		d     time.Duration
		want  string
	}{
		{"loud", 0, "not debug, info, warn or error"},
		{"fatal", 0, "not debug"},
		{"debug", 25 * time.Hour, "duration"},
	} {
		if _, err := s.client.SetLevel(ctx, tt.level, tt.d); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("SetLevel(%q, %s) = %v, want %q", tt.level, tt.d, err, tt.want)
		}
	}
	// Back to the configured level: no timer.
	if _, err := s.client.SetLevel(ctx, "warn", time.Minute); err != nil {
		t.Fatal(err)
	}
	rep, err := s.client.SetLevel(ctx, "info", 0)
	if err != nil || rep.Until != nil || s.level.Level() != zapcore.InfoLevel {
		t.Errorf("SetLevel(info) = %+v, %v; level %s", rep, err, s.level.Level())
	}
}

func TestSecondAgentRefusedAndStaleSocketReplaced(t *testing.T) {
	t.Parallel()
	dir := shortDir(t)
	serve(t, dir)
	if _, err := Listen(Options{StateDir: dir, Level: zap.NewAtomicLevel(), Status: func() Report { return Report{} }}); err == nil ||
		!strings.Contains(err.Error(), "another agent is running") {
		t.Errorf("a second Listen on a live socket = %v", err)
	}

	// A socket file left behind by a killed agent is replaced.
	stale := shortDir(t)
	if err := os.WriteFile(SocketPath(stale), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := serve(t, stale)
	if _, err := s.client.Status(testCtx(t)); err != nil {
		t.Errorf("status after replacing a stale socket: %v", err)
	}
}

func TestClientNotRunning(t *testing.T) {
	t.Parallel()
	_, err := NewClient(shortDir(t)).Status(testCtx(t))
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("Status without an agent = %v, want ErrNotRunning", err)
	}
}
