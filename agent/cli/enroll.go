package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/orchestrator/orchestrator/agent"
)

// enroll trades a single-use enrollment token for the agent's identity.
func enroll(args []string, env Env) int {
	fs := flag.NewFlagSet("agent enroll", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	cp := fs.String("control-plane", "", "control plane URL, https://host[:port]")
	token := fs.String("token", "", "single-use enrollment token (or $AGENT_ENROLLMENT_TOKEN)")
	stateDir := fs.String("state-dir", "", "where to keep the identity (default "+agent.DefaultStateDir()+")")
	configFile := fs.String("config", "", "agent config file, for control_plane, state_dir, ca_file, proxy and insecure_allow_ws")
	insecure := fs.Bool("insecure-allow-ws", false, "allow a plain http:// control plane (development only)")
	force := fs.Bool("force", false, "replace an existing identity")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	var c agent.Config
	if *configFile != "" {
		var err error
		if c, err = agent.LoadConfig(*configFile, env.Getenv); err != nil {
			fmt.Fprintln(env.Stderr, "agent enroll:", err)
			return 2
		}
	}
	if *cp != "" {
		c.ControlPlane = *cp
	}
	if *stateDir != "" {
		c.StateDir = *stateDir
	}
	if c.StateDir == "" {
		c.StateDir = agent.DefaultStateDir()
	}
	c.InsecureAllowWS = c.InsecureAllowWS || *insecure
	if *token == "" {
		*token = env.Getenv("AGENT_ENROLLMENT_TOKEN")
	}
	if *token == "" {
		fmt.Fprintln(env.Stderr, "agent enroll: --token is required")
		return 2
	}
	client, err := agent.HTTPClient(c)
	if err != nil {
		fmt.Fprintln(env.Stderr, "agent enroll:", err)
		return 2
	}
	host, _ := os.Hostname()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := agent.Enroll(ctx, agent.EnrollOptions{
		ControlPlane: c.ControlPlane, InsecureAllowWS: c.InsecureAllowWS, HTTPClient: client,
		Token: *token, StateDir: c.StateDir, Force: *force, Hostname: host, Version: env.Version,
	})
	if err != nil {
		fmt.Fprintln(env.Stderr, "agent enroll:", err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "enrolled as %s; identity saved in %s\n", id.AgentID, c.StateDir)
	return 0
}
