package service

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"

	ks "github.com/kardianos/service"

	"github.com/orchestrator/orchestrator/agent"
)

// Where the hardened unit lets the agent write (StateDirectory=,
// LogsDirectory=); everything else is read-only to it (ProtectSystem=strict).
const (
	unitStateDir = "/var/lib/orchestrator-agent"
	unitLogsDir  = "/var/log/orchestrator-agent"
)

// InstallOptions configure Install and Plan.
type InstallOptions struct {
	// ConfigPath is the agent's config file; the service runs
	// `agent run --config ConfigPath` (made absolute).
	ConfigPath string
	// User is the account the service runs as; default DefaultUser().
	User string
	// Executable is the agent's binary; default this process's.
	Executable string
	// Getenv reads the environment for the config; default os.Getenv.
	Getenv func(string) string
}

// InstallPlan is what Install would do.
type InstallPlan struct {
	// Config is the kardianos/service configuration.
	Config *ks.Config
	// Unit is the systemd unit as it will be written (Linux).
	Unit string
	// CreateUser is set when the default user does not exist yet and
	// Install will create it (Linux).
	CreateUser bool
	// Warnings are things to fix that do not stop the install.
	Warnings []string
}

// Plan checks the options and the config, and returns what Install would
// write, without changing anything.
func Plan(o InstallOptions) (*InstallPlan, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.User == "" {
		o.User = DefaultUser()
	}
	if o.ConfigPath == "" {
		return nil, errors.New("--config: required (the service runs the agent with it)")
	}
	cfgPath, err := filepath.Abs(o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	c, err := agent.LoadConfig(cfgPath, o.Getenv)
	if err != nil {
		return nil, err
	}
	exe := o.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find this binary: %w", err)
		}
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return nil, err
	}
	plan := &InstallPlan{}
	if _, err := agent.LoadIdentity(c.StateDir); err != nil {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("no identity in %s yet: run `agent enroll --config %s --token TOKEN` before starting the service", c.StateDir, cfgPath))
	}
	unit := ""
	if runtime.GOOS == "linux" {
		if err := checkUnitPaths(exe, cfgPath, c); err != nil {
			return nil, err
		}
		if unit, err = UnitTemplate(c.DrainGrace); err != nil {
			return nil, err
		}
		if _, err := user.Lookup(o.User); err != nil {
			if o.User != DefaultUser() {
				return nil, fmt.Errorf("--user %s: no such user; create it first (useradd --system %s)", o.User, o.User)
			}
			plan.CreateUser = true
		} else if w := readableWarning(cfgPath, o.User); w != "" {
			plan.Warnings = append(plan.Warnings, w)
		}
	}
	args := []string{"run", "--config", cfgPath}
	plan.Config = serviceConfig(args, o.User, unit)
	plan.Config.Executable = exe
	if unit != "" {
		plan.Unit = RenderUnit(unit, exe, args, o.User)
	}
	return plan, nil
}

// checkUnitPaths refuses what the hardened unit would break: a binary or
// config where ProtectHome= or PrivateTmp= hide it, a state or log
// directory it cannot write.
func checkUnitPaths(exe, cfgPath string, c agent.Config) error {
	for _, f := range []struct{ what, path string }{{"the agent binary", exe}, {"the config file", cfgPath}} {
		for _, hidden := range []string{"/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/"} {
			if strings.HasPrefix(f.path, hidden) {
				return fmt.Errorf("%s %s is under %s, which the hardened unit hides from the service (ProtectHome=, PrivateTmp=); copy it to %s", f.what, f.path, strings.TrimSuffix(hidden, "/"), suggested(f.what))
			}
		}
	}
	if filepath.Clean(c.StateDir) != unitStateDir {
		return fmt.Errorf("state_dir: the service keeps its state in %s (StateDirectory=); set state_dir: %s in the config (and enroll there)", unitStateDir, unitStateDir)
	}
	if c.Log.File != "" && !strings.HasPrefix(filepath.Clean(c.Log.File), unitLogsDir+"/") {
		return fmt.Errorf("log.file: the service may write logs only under %s (LogsDirectory=); set log.file: %s/agent.log", unitLogsDir, unitLogsDir)
	}
	return nil
}

func suggested(what string) string {
	if what == "the config file" {
		return "/etc/orchestrator-agent/agent.yaml"
	}
	return "/usr/local/bin/orchestrator-agent"
}

// Install installs the service: on Linux it writes the hardened unit to
// /etc/systemd/system/orchestrator-agent.service (creating the default
// user if missing) and enables it; on Windows it registers the service
// with restart on failure; on macOS it writes the launchd plist. It does
// not start the service. It needs root (Administrator).
func Install(o InstallOptions) (*InstallPlan, error) {
	plan, err := Plan(o)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS == "linux" && ks.Platform() != "linux-systemd" {
		return nil, fmt.Errorf("agent install supports systemd on Linux; this machine's init is %s: run `agent run --config FILE` under your own supervisor", ks.Platform())
	}
	if plan.CreateUser {
		cmd := exec.Command("useradd", "--system", "--user-group", "--home-dir", unitStateDir, "--no-create-home",
			"--shell", "/usr/sbin/nologin", "--comment", "orchestrator agent", plan.Config.UserName)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("create the user %s: %v: %s", plan.Config.UserName, err, strings.TrimSpace(string(out)))
		}
	}
	s, err := ks.New(nopProgram{}, plan.Config)
	if err != nil {
		return nil, err
	}
	if err := s.Install(); err != nil {
		return nil, fmt.Errorf("install the service: %w", err)
	}
	return plan, nil
}

// Uninstall stops the service if it runs and removes it. The config, the
// state directory (the identity) and the user stay.
func Uninstall() error {
	s, err := controlService()
	if err != nil {
		return err
	}
	if st, err := s.Status(); err == nil && st == ks.StatusRunning {
		_ = s.Stop()
	}
	if err := s.Uninstall(); err != nil {
		return fmt.Errorf("uninstall the service: %w", err)
	}
	return nil
}

// Control runs start, stop or restart on the installed service.
func Control(action string) error {
	s, err := controlService()
	if err != nil {
		return err
	}
	if err := ks.Control(s, action); err != nil {
		return fmt.Errorf("%s the service: %w", action, err)
	}
	return nil
}

// State is the service manager's view of the service: "running",
// "stopped", "not installed" or "unknown (…)".
func State() string {
	if runtime.GOOS == "linux" && ks.Platform() != "linux-systemd" {
		return "not managed (no systemd on this machine: " + ks.Platform() + ")"
	}
	s, err := controlService()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, ks.ErrNotInstalled):
		return "not installed"
	case err != nil:
		return "unknown (" + err.Error() + ")"
	case st == ks.StatusRunning:
		return "running"
	case st == ks.StatusStopped:
		return "stopped"
	}
	return "unknown"
}

func controlService() (ks.Service, error) {
	return ks.New(nopProgram{}, serviceConfig(nil, "", ""))
}

// nopProgram is the Interface of the control commands, which never run
// the agent.
type nopProgram struct{}

func (nopProgram) Start(ks.Service) error { return nil }
func (nopProgram) Stop(ks.Service) error  { return nil }
