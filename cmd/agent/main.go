// Command agent is the on-premises agent.
//
//	agent enroll --control-plane URL --token TOKEN [--state-dir DIR]
//	agent run --config FILE
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "enroll":
		os.Exit(enroll(os.Args[2:]))
	case "run":
		os.Exit(run(os.Args[2:]))
	case "version":
		fmt.Println(version)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: agent enroll --control-plane URL --token TOKEN [--state-dir DIR] [--config FILE]
       agent run --config FILE
       agent version`)
	os.Exit(2)
}

func enroll(args []string) int {
	fs := flag.NewFlagSet("enroll", flag.ExitOnError)
	cp := fs.String("control-plane", "", "control plane URL, https://host[:port]")
	token := fs.String("token", "", "single-use enrollment token (or $AGENT_ENROLLMENT_TOKEN)")
	stateDir := fs.String("state-dir", "", "where to keep the identity (default "+agent.DefaultStateDir()+")")
	configFile := fs.String("config", "", "agent config file, for ca_file and insecure_allow_ws")
	insecure := fs.Bool("insecure-allow-ws", false, "allow a plain http:// control plane (development only)")
	force := fs.Bool("force", false, "replace an existing identity")
	_ = fs.Parse(args)

	var c agent.Config
	if *configFile != "" {
		var err error
		if c, err = agent.LoadConfig(*configFile, os.Getenv); err != nil {
			fmt.Fprintln(os.Stderr, "agent enroll:", err)
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
		*token = os.Getenv("AGENT_ENROLLMENT_TOKEN")
	}
	if *token == "" {
		fmt.Fprintln(os.Stderr, "agent enroll: --token is required")
		return 2
	}
	client, err := agent.HTTPClient(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent enroll:", err)
		return 2
	}
	host, _ := os.Hostname()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := agent.Enroll(ctx, agent.EnrollOptions{
		ControlPlane: c.ControlPlane, InsecureAllowWS: c.InsecureAllowWS, HTTPClient: client,
		Token: *token, StateDir: c.StateDir, Force: *force, Hostname: host, Version: version,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent enroll:", err)
		return 1
	}
	fmt.Printf("enrolled as %s; identity saved in %s\n", id.AgentID, c.StateDir)
	return 0
}

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	configFile := fs.String("config", "", "agent config file (YAML)")
	_ = fs.Parse(args)

	c, err := agent.LoadConfig(*configFile, os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 2
	}
	log, err := agent.NewLogger(c.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 2
	}
	defer log.Sync()
	id, err := agent.LoadIdentity(c.StateDir)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 2
	}
	a, err := agent.New(agent.Options{Config: c, Identity: id, Logger: log, Version: version})
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 2
	}

	// The first signal drains; a second one aborts.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		log.Info("signal received; draining (send it again to stop at once)", zap.String("signal", s.String()))
		cancel()
		s = <-sigs
		log.Warn("second signal; stopping at once", zap.String("signal", s.String()))
		a.Abort()
	}()
	log.Info("agent starting", zap.String("version", version), zap.String("control_plane", c.ControlPlane),
		zap.Int("concurrency", c.Concurrency), zap.Any("kinds", a.Kinds()))
	if err := a.Run(ctx); err != nil {
		var fe *agent.FatalError
		if errors.As(err, &fe) {
			return 3
		}
		log.Error("agent failed", zap.Error(err))
		return 1
	}
	return 0
}
