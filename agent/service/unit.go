package service

import (
	"fmt"
	"strings"
	"time"

	"github.com/orchestrator/orchestrator/deploy"
)

// The systemd unit has one source: deploy/orchestrator-agent.service, the
// reviewed file. UnitTemplate turns it into a kardianos/service template
// by making three lines template keys (v1.3 syntax: {{Path}}, not
// {{.Path}}), and RenderUnit renders such a template the way
// kardianos/service does, for tests and `install --print`.

// Template lines. kardianos/service fills Path, Arguments and UserName.
const (
	execStartTemplate = `ExecStart={{Path | cmdEscape}}{{range Arguments}} {{. | cmd}}{{end}}`
	userTemplate      = "{{if UserName}}User={{UserName}}\n{{end}}"
)

// minStopTimeout is the unit's TimeoutStopSec for the default drain grace
// (30s): the grace, the results' flush (5s) and a margin.
const minStopTimeout = 45 * time.Second

// StopTimeout is how long the service manager waits for the agent to stop
// before killing it: longer than the drain grace, the results' flush and
// a margin.
func StopTimeout(drainGrace time.Duration) time.Duration {
	return max(minStopTimeout, drainGrace+15*time.Second)
}

// UnitTemplate returns the systemd unit template for an agent whose
// drain grace is drainGrace.
func UnitTemplate(drainGrace time.Duration) (string, error) {
	var out strings.Builder
	seen := map[string]bool{}
	for _, line := range strings.SplitAfter(deploy.AgentUnit, "\n") {
		key, _, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch key {
		case "ExecStart":
			line = execStartTemplate + "\n"
		case "User":
			line = userTemplate
		case "TimeoutStopSec":
			line = fmt.Sprintf("TimeoutStopSec=%ds\n", int(StopTimeout(drainGrace).Seconds()))
		default:
			if strings.Contains(line, "{{") {
				return "", fmt.Errorf("deploy/orchestrator-agent.service: %q holds a template action", strings.TrimSpace(line))
			}
			out.WriteString(line)
			continue
		}
		seen[key] = true
		out.WriteString(line)
	}
	for _, k := range []string{"ExecStart", "User", "TimeoutStopSec"} {
		if !seen[k] {
			return "", fmt.Errorf("deploy/orchestrator-agent.service has no %s= line", k)
		}
	}
	return out.String(), nil
}

// RenderUnit renders a template from UnitTemplate as kardianos/service
// v1.3 does for the keys it holds: Path (spaces escaped), each of
// Arguments in double quotes, and UserName.
func RenderUnit(tmpl, path string, args []string, user string) string {
	var exec strings.Builder
	exec.WriteString("ExecStart=" + strings.ReplaceAll(path, " ", `\x20`))
	for _, a := range args {
		exec.WriteString(` "` + strings.ReplaceAll(a, `"`, `\"`) + `"`)
	}
	userLine := ""
	if user != "" {
		userLine = "User=" + user + "\n"
	}
	return strings.NewReplacer(execStartTemplate, exec.String(), userTemplate, userLine).Replace(tmpl)
}
