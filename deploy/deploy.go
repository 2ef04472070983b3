// Package deploy holds the reviewed deployment files, and gives the agent
// the one that it installs: the hardened systemd unit, so that what
// `orchestrator-agent install` writes is exactly what was reviewed here.
// It imports nothing but embed.
package deploy

import _ "embed"

// AgentUnit is orchestrator-agent.service: the agent's systemd unit, as
// installed with the default binary path, config path and user.
//
//go:embed orchestrator-agent.service
var AgentUnit string

// Defaults the unit is written with; the installer substitutes its own.
const (
	// AgentUnitExecutable is the binary's path in AgentUnit.
	AgentUnitExecutable = "/usr/local/bin/orchestrator-agent"
	// AgentUnitConfig is the config file's path in AgentUnit.
	AgentUnitConfig = "/etc/orchestrator-agent/agent.yaml"
	// AgentUnitUser is the unprivileged user in AgentUnit.
	AgentUnitUser = "orchestrator-agent"
)
