// Command agent is the on-premises agent. Installed as the system service
// orchestrator-agent, it runs `agent run`; the other commands enroll it,
// install and control the service, show its status, change its log level
// while it runs, and check its setup (agent doctor).
//
//	agent enroll --control-plane URL --token TOKEN [--config FILE]
//	agent run [--config FILE]
//	agent install [--config FILE] [--user NAME] | uninstall | start | stop | restart
//	agent status | log-level LEVEL [--for 15m] | doctor [--config FILE]
package main

import (
	"os"

	"github.com/orchestrator/orchestrator/agent/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Version: version}))
}
