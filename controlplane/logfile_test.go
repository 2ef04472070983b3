package controlplane

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestOpenLogWritesTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "logs", "controlplane.log")
	log, closeLog, err := OpenLog(LogConfig{Format: "json", Level: "info", File: path, MaxSizeMB: 1})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("job finished", zap.String("job_id", "job_1"))
	log.Debug("not at info")
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"job_id":"job_1"`) || strings.Contains(string(b), "not at info") {
		t.Errorf("log file:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("log file mode %v: readable by others", fi.Mode())
	}
	if _, _, err := OpenLog(LogConfig{File: path, MaxBackups: -1}); err == nil || !strings.Contains(err.Error(), "log.max_backups") {
		t.Errorf("a negative max_backups: %v", err)
	}
}

// TestExampleConfigLoads keeps deploy/controlplane.example.yaml in step
// with ServeConfig.
func TestExampleConfigLoads(t *testing.T) {
	t.Parallel()
	c, err := LoadServeConfig(filepath.Join("..", "deploy", "controlplane.example.yaml"))
	if err != nil {
		t.Fatalf("deploy/controlplane.example.yaml: %v", err)
	}
	if c.Listen == "" || c.Log.Level == "" {
		t.Errorf("example config = %+v", c)
	}
}

func TestCloseLabel(t *testing.T) {
	t.Parallel()
	for reason, want := range map[string]string{
		"agent closed: normal closure":   "agent_closed",
		"no heartbeat for 30s":           "heartbeat_timeout",
		"frame over the size limit":      "frame_too_large",
		"closed by the control plane":    "closed_by_control_plane",
		"connection lost: read tcp: EOF": "connection_lost",
	} {
		if got := closeLabel(reason); got != want {
			t.Errorf("closeLabel(%q) = %q, want %q", reason, got, want)
		}
	}
}
