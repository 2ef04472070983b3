package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/control"
)

// The local checks: config, identity, the running agent.

func (d *doctor) checkConfig() bool {
	getenv := d.o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	c, err := agent.LoadConfig(d.o.ConfigPath, getenv)
	if err != nil {
		fix := "correct the setting the message names"
		if strings.Contains(err.Error(), "chmod") {
			fix = "make the file readable only by root and the agent's user, as the message says"
		} else if errors.Is(err, os.ErrNotExist) {
			fix = "give the config's path with --config (the service uses " + d.o.ConfigPath + ")"
		}
		d.add("config", Fail, err.Error(), fix)
		return false
	}
	d.cfg = c
	detail := d.o.ConfigPath + " is valid"
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(d.o.ConfigPath); err == nil {
			detail += fmt.Sprintf(" (mode %04o)", fi.Mode().Perm())
		}
	}
	d.add("config", OK, detail, "")
	return true
}

func (d *doctor) checkIdentity() {
	id, err := agent.LoadIdentity(d.cfg.StateDir)
	if err != nil {
		d.add("identity", Fail, err.Error(),
			fmt.Sprintf("enroll the agent: agent enroll --config %s --token TOKEN (a token from the control plane: POST /api/v1/agents, or /api/v1/agents/{id}/enrollment-token)", d.o.ConfigPath))
		return
	}
	d.identity = &id
	d.add("identity", OK, fmt.Sprintf("agent %s, key in %s", id.AgentID, filepath.Join(d.cfg.StateDir, agent.IdentityFile)), "")
}

// runningAgent is what the running agent said on its control socket.
type runningAgent struct {
	report control.Report
}

func (d *doctor) checkRunning(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r, err := control.NewClient(d.cfg.StateDir).Status(ctx)
	switch {
	case errors.Is(err, control.ErrNotRunning):
		d.add("running agent", OK, "no agent runs with this state directory (the checks below are this command's own)", "")
		return
	case err != nil:
		d.add("running agent", Warn, err.Error(), "run agent doctor as root or as the agent's user to see the running agent's status")
		return
	}
	d.running = &runningAgent{report: r}
	if r.Connected {
		since := ""
		if r.ConnectedSince != nil {
			since = " since " + r.ConnectedSince.Format(time.RFC3339)
		}
		d.add("running agent", OK, fmt.Sprintf("pid %d (version %s) is connected to %s%s (session %s), %d job(s) running",
			r.PID, r.Version, r.ControlPlane, since, r.SessionID, r.JobsRunning), "")
		return
	}
	detail := fmt.Sprintf("pid %d (version %s) is not connected to %s", r.PID, r.Version, r.ControlPlane)
	if r.LastError != "" {
		detail += ": " + r.LastError
	}
	d.add("running agent", Warn, detail, "see the checks below, and the agent's log (journalctl -u orchestrator-agent)")
}
