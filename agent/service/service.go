// Package service runs the agent as a system service and installs it as
// one, with github.com/kardianos/service: systemd on Linux (the hardened
// unit of deploy/), the Service Control Manager on Windows, launchd on
// macOS.
//
// Run is what `agent run` does, under a service manager or in the
// foreground: it builds the logger (its level changeable while running),
// the metrics, the local control socket and the optional metrics
// listener around an agent.Agent, reports readiness to systemd after the
// first handshake, and drains on stop. Install, Uninstall and Control are
// the `agent install`, `uninstall`, `start`, `stop` and `restart`
// commands.
package service

import (
	"runtime"

	ks "github.com/kardianos/service"
)

// Name is the service's name: the systemd unit orchestrator-agent.service,
// the Windows service and the launchd label.
const Name = "orchestrator-agent"

const (
	displayName = "Orchestrator agent"
	description = "Runs the control plane's GitHub jobs with secrets read locally; sends back only outcomes."
)

// DefaultConfigPath is where the agent's config lives when no --config is
// given.
func DefaultConfigPath() string {
	switch runtime.GOOS {
	case "windows":
		return `C:\ProgramData\orchestrator-agent\agent.yaml`
	case "darwin":
		return "/Library/Application Support/orchestrator-agent/agent.yaml"
	}
	return "/etc/orchestrator-agent/agent.yaml"
}

// DefaultUser is the account the service runs as when install is given no
// --user: an unprivileged system user on Linux (created if missing); the
// service manager's default elsewhere (LocalSystem on Windows, root on
// macOS), which --user should replace.
func DefaultUser() string {
	if runtime.GOOS == "linux" {
		return "orchestrator-agent"
	}
	return ""
}

// serviceConfig is the kardianos/service configuration of the agent's
// service. unit is the systemd unit template (UnitTemplate).
func serviceConfig(args []string, user, unit string) *ks.Config {
	return &ks.Config{
		Name:        Name,
		DisplayName: displayName,
		Description: description,
		UserName:    user,
		Arguments:   args,
		Option: ks.KeyValue{
			// systemd: the reviewed unit, not kardianos' built-in one.
			"SystemdScript": unit,
			// Windows: kardianos sets no recovery action unless told to.
			"OnFailure":              "restart",
			"OnFailureDelayDuration": "5s",
			"OnFailureResetPeriod":   86400,
			"StartType":              "automatic",
			"DelayedAutoStart":       true,
			// launchd: start at boot, restart when it exits.
			"RunAtLoad": true,
			"KeepAlive": true,
		},
	}
}
