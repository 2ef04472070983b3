package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/control"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(t *testing.T, getenv func(string) string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	code := Main(args, Env{Stdout: &out, Stderr: &errb, Getenv: getenv, Version: "1.2.3"})
	return code, out.String(), errb.String()
}

// writeConfig writes a minimal agent config whose state directory is
// short enough for a unix socket.
func writeConfig(t *testing.T) (config, state string) {
	t.Helper()
	base, err := os.MkdirTemp("", "cli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	state = filepath.Join(base, "s")
	config = filepath.Join(base, "agent.yaml")
	if err := os.WriteFile(config, []byte("control_plane: https://cp.example.com\nstate_dir: "+state+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	return config, state
}

func TestUsageAndVersion(t *testing.T) {
	if code, _, errs := run(t, nil); code != 2 || !strings.Contains(errs, "usage: agent") {
		t.Errorf("no command: %d %q", code, errs)
	}
	if code, _, errs := run(t, nil, "frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, errs)
	}
	if code, out, _ := run(t, nil, "version"); code != 0 || strings.TrimSpace(out) != "1.2.3" {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestInstallPrintRefusesHiddenPaths(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the unit's path checks are for systemd")
	}
	config, _ := writeConfig(t)
	code, _, errs := run(t, nil, "install", "--print", "--config", config)
	if code != 1 || !strings.Contains(errs, "PrivateTmp") {
		t.Errorf("install --print with a config in /tmp: %d %q", code, errs)
	}
}

func TestStatusAndLogLevel(t *testing.T) {
	config, state := writeConfig(t)
	code, out, _ := run(t, nil, "status", "--config", config)
	if code != 3 || !strings.Contains(out, "not running") {
		t.Errorf("status without an agent: %d %q", code, out)
	}
	if code, _, errs := run(t, nil, "log-level", "--config", config); code != 2 || !strings.Contains(errs, "usage") {
		t.Errorf("log-level without a level: %d %q", code, errs)
	}

	level := zap.NewAtomicLevel()
	srv, err := control.Listen(control.Options{StateDir: state, Level: level, Status: func() control.Report {
		return control.Report{AgentID: "agt_cli", ControlPlane: "https://cp.example.com", Connected: true, SessionID: "ses_cli"}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the control socket did not stop")
		}
	}()

	code, out, _ = run(t, nil, "status", "--config", config)
	if code != 0 || !strings.Contains(out, "agt_cli") || !strings.Contains(out, "connected") || !strings.Contains(out, "ses_cli") {
		t.Errorf("status: %d\n%s", code, out)
	}
	code, out, errs := run(t, nil, "log-level", "debug", "--for", "2m", "--config", config)
	if code != 0 || !strings.Contains(out, "logging at debug until") || level.Level() != zap.DebugLevel {
		t.Errorf("log-level debug: %d %q %q", code, out, errs)
	}
	code, out, _ = run(t, nil, "status", "--json", "--config", config)
	if code != 0 || !strings.Contains(out, `"log_level": "debug"`) || !strings.Contains(out, `"log_level_until"`) {
		t.Errorf("status --json: %d\n%s", code, out)
	}
	if code, _, errs := run(t, nil, "log-level", "loud", "--config", config); code != 1 || !strings.Contains(errs, "not debug, info, warn or error") {
		t.Errorf("log-level loud: %d %q", code, errs)
	}
}

func TestDoctorBadConfig(t *testing.T) {
	config, _ := writeConfig(t)
	if err := os.Chmod(config, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := run(t, nil, "doctor", "--config", config)
	if code != 1 || !strings.Contains(out, "[FAIL]  config") {
		t.Errorf("doctor with a world-readable config: %d\n%s", code, out)
	}
}
