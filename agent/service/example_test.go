package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent"
)

// TestExampleConfigLoads keeps deploy/agent.example.yaml in step with the
// config: every key it sets is known, every value valid.
func TestExampleConfigLoads(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "agent.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Uncomment the optional settings that need no file on this machine.
	text := string(b)
	for _, opt := range []string{"  # listen: 127.0.0.1:9464", "  # file: /var/log/orchestrator-agent/agent.log",
		"  # max_size_mb: 50", "  # max_backups: 5", "  # max_age_days: 30"} {
		if !strings.Contains(text, opt) {
			t.Fatalf("the example no longer has %q", opt)
		}
		text = strings.Replace(text, opt, strings.Replace(opt, "# ", "", 1), 1)
	}
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := agent.LoadConfig(path, func(string) string { return "" })
	if err != nil {
		t.Fatalf("deploy/agent.example.yaml: %v", err)
	}
	if c.Metrics.Listen != "127.0.0.1:9464" || c.Log.File == "" || c.StateDir != unitStateDir {
		t.Errorf("example config = %+v", c)
	}
	// What the unit needs of it.
	if err := checkUnitPaths("/usr/local/bin/orchestrator-agent", "/etc/orchestrator-agent/agent.yaml", c); err != nil {
		t.Errorf("the example config does not fit the unit: %v", err)
	}
}
