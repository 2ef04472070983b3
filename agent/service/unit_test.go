package service

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/deploy"
)

// The unit has one source, deploy/orchestrator-agent.service. These tests
// prove that the template made from it renders back to it, that what the
// installer writes passes `systemd-analyze verify` without a word, and
// record its `systemd-analyze security` exposure. None installs anything.

func TestUnitTemplateRendersTheDeployFile(t *testing.T) {
	t.Parallel()
	tmpl, err := UnitTemplate(agent.DefaultDrainGrace)
	if err != nil {
		t.Fatal(err)
	}
	got := RenderUnit(tmpl, deploy.AgentUnitExecutable, []string{"run", "--config", deploy.AgentUnitConfig}, deploy.AgentUnitUser)
	if got != deploy.AgentUnit {
		t.Errorf("the rendered default unit differs from deploy/orchestrator-agent.service:\n--- rendered\n%s\n--- deploy\n%s", got, deploy.AgentUnit)
	}
	// Only the keys kardianos/service v1.3 fills, in its {{Key}} syntax.
	for _, m := range regexp.MustCompile(`\{\{[^}]*\}\}`).FindAllString(tmpl, -1) {
		switch m {
		case "{{Path | cmdEscape}}", "{{range Arguments}}", "{{. | cmd}}", "{{end}}", "{{if UserName}}", "{{UserName}}":
		default:
			t.Errorf("template action %s is not one kardianos/service v1.3 fills", m)
		}
	}
}

func TestUnitHardening(t *testing.T) {
	t.Parallel()
	want := []string{
		"Type=notify", "User=orchestrator-agent", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "StateDirectory=orchestrator-agent", "StateDirectoryMode=0700", "CapabilityBoundingSet=\n",
		"RestrictAddressFamilies=", "SystemCallFilter=@system-service", "Restart=on-failure", "RestartSec=5s",
		"StartLimitBurst=", "StartLimitIntervalSec=", "TimeoutStopSec=45s", "RestartPreventExitStatus=2 3",
	}
	for _, w := range want {
		if !strings.Contains(deploy.AgentUnit, w) {
			t.Errorf("deploy/orchestrator-agent.service lacks %q", w)
		}
	}
	// The stop timeout outlasts the drain grace, the results' flush and a
	// margin, whatever the grace.
	for _, grace := range []time.Duration{0, 30 * time.Second, 2 * time.Minute} {
		tmpl, err := UnitTemplate(grace)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`TimeoutStopSec=(\d+)s`).FindStringSubmatch(tmpl)
		if m == nil {
			t.Fatalf("grace %s: no TimeoutStopSec", grace)
		}
		secs, _ := strconv.Atoi(m[1])
		if d := time.Duration(secs) * time.Second; d < grace+15*time.Second {
			t.Errorf("grace %s: TimeoutStopSec %s is too short", grace, d)
		}
	}
}

func TestRenderUnitQuotes(t *testing.T) {
	t.Parallel()
	tmpl, err := UnitTemplate(0)
	if err != nil {
		t.Fatal(err)
	}
	got := RenderUnit(tmpl, "/opt/my agent/agent", []string{"run", "--config", `/etc/a "b".yaml`}, "")
	if !strings.Contains(got, `ExecStart=/opt/my\x20agent/agent "run" "--config" "/etc/a \"b\".yaml"`+"\n") {
		t.Errorf("ExecStart not rendered as kardianos/service does:\n%s", got)
	}
	if strings.Contains(got, "User=") {
		t.Errorf("no user: no User= line expected:\n%s", got)
	}
}

// systemdAnalyze returns the path of systemd-analyze, or skips.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	return p
}

// writeRenderedUnit writes the unit as the installer would for this test
// binary (an executable that exists) and returns its path.
func writeRenderedUnit(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := UnitTemplate(agent.DefaultDrainGrace)
	if err != nil {
		t.Fatal(err)
	}
	unit := RenderUnit(tmpl, exe, []string{"run", "--config", deploy.AgentUnitConfig}, deploy.AgentUnitUser)
	path := filepath.Join(t.TempDir(), Name+".service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUnitVerifies(t *testing.T) {
	t.Parallel()
	sa := systemdAnalyze(t)
	path := writeRenderedUnit(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, sa, "verify", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	// Unknown keys and other mistakes are only warnings on stderr (exit 0):
	// any word there fails the test.
	if err != nil || stderr.Len() > 0 || stdout.Len() > 0 {
		t.Errorf("systemd-analyze verify %s: %v\nstdout: %s\nstderr: %s", path, err, stdout.String(), stderr.String())
	}
}

// maxExposure is the highest `systemd-analyze security` exposure the unit
// may have (0 best, 10 worst). README ("Operating the agent") records the
// figure this test logs.
const maxExposure = 2.0

func TestUnitSecurityExposure(t *testing.T) {
	t.Parallel()
	sa := systemdAnalyze(t)
	path := writeRenderedUnit(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, "security", "--offline=true", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: overall exposure level %s %s", m[1], m[2])
	if level > maxExposure {
		t.Errorf("exposure %.1f is above %.1f:\n%s", level, maxExposure, out)
	}
}

func TestCheckUnitPaths(t *testing.T) {
	t.Parallel()
	good := agent.Config{StateDir: unitStateDir}
	for _, tt := range []struct {
		name, exe, cfg string
		c              agent.Config
		want           string
	}{
		{name: "ok", exe: "/usr/local/bin/orchestrator-agent", cfg: "/etc/orchestrator-agent/agent.yaml", c: good},
		{name: "binary in home", exe: "/home/op/agent", cfg: "/etc/a.yaml", c: good, want: "ProtectHome"},
		{name: "config in tmp", exe: "/usr/bin/agent", cfg: "/tmp/a.yaml", c: good, want: "PrivateTmp"},
		{name: "config in root's home", exe: "/usr/bin/agent", cfg: "/root/a.yaml", c: good, want: "/root"},
		{name: "other state dir", exe: "/usr/bin/agent", cfg: "/etc/a.yaml", c: agent.Config{StateDir: "/srv/agent"}, want: "state_dir"},
		{name: "log file elsewhere", exe: "/usr/bin/agent", cfg: "/etc/a.yaml",
			c: agent.Config{StateDir: unitStateDir, Log: agent.LogConfig{File: "/var/log/agent.log"}}, want: "LogsDirectory"},
		{name: "log file in the logs directory", exe: "/usr/bin/agent", cfg: "/etc/a.yaml",
			c: agent.Config{StateDir: unitStateDir, Log: agent.LogConfig{File: "/var/log/orchestrator-agent/agent.log"}}},
	} {
		err := checkUnitPaths(tt.exe, tt.cfg, tt.c)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want one naming %q", tt.name, err, tt.want)
		}
	}
}
