// Package cli is the agent's command line: `agent enroll`, `run`, the
// service commands (install, uninstall, start, stop, restart, status),
// `log-level` and `doctor`. cmd/agent only calls Main.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/control"
	"github.com/orchestrator/orchestrator/agent/doctor"
	"github.com/orchestrator/orchestrator/agent/service"
)

// Env is what the commands read and write.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Version is the build version.
	Version string
}

const usage = `usage: agent COMMAND [flags]   (agent COMMAND -h for its flags)

  enroll     --control-plane URL --token TOKEN [--config FILE]   trade a token for this agent's identity
  run        [--config FILE]                 run the agent (what the service runs; also in the foreground)
  install    [--config FILE] [--user NAME] [--print]   install the system service (root)
  uninstall                                  stop and remove the system service (root)
  start | stop | restart                     control the system service (root)
  status     [--config FILE] [--json]        the service's state and the running agent's own status
  log-level  LEVEL [--for 15m] [--config FILE]   log at LEVEL for a while, without a restart
  doctor     [--config FILE]                 check everything the agent needs, with fixes
  version`

// Main runs the command in args (without the program name) and returns the
// exit code.
func Main(args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "enroll":
		return enroll(rest, env)
	case "run":
		fs, cfg := flags("run", env)
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		return service.Run(service.RunOptions{ConfigPath: *cfg, Version: env.Version, Getenv: env.Getenv, Stderr: env.Stderr})
	case "install":
		return install(rest, env)
	case "uninstall":
		return simple(cmd, rest, env, service.Uninstall, "the service is removed (the config, the state directory and the user stay)")
	case "start", "stop", "restart":
		return simple(cmd, rest, env, func() error { return service.Control(cmd) }, "done: "+cmd)
	case "status":
		return status(rest, env)
	case "log-level":
		return logLevel(rest, env)
	case "doctor":
		return runDoctor(rest, env)
	case "version", "--version", "-version":
		fmt.Fprintln(env.Stdout, env.Version)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprintln(env.Stdout, usage)
		return 0
	}
	fmt.Fprintf(env.Stderr, "agent: unknown command %q\n%s\n", cmd, usage)
	return 2
}

// flags returns a flag set with --config.
func flags(name string, env Env) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("agent "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	cfg := fs.String("config", service.DefaultConfigPath(), "agent config file (YAML)")
	return fs, cfg
}

func simple(name string, args []string, env Env, f func() error, done string) int {
	fs := flag.NewFlagSet("agent "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := f(); err != nil {
		fmt.Fprintf(env.Stderr, "agent %s: %v\n", name, err)
		return 1
	}
	fmt.Fprintln(env.Stdout, done)
	return 0
}

func install(args []string, env Env) int {
	fs, cfg := flags("install", env)
	user := fs.String("user", service.DefaultUser(), "account the service runs as")
	print := fs.Bool("print", false, "print the unit (Linux) and the checks, install nothing")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o := service.InstallOptions{ConfigPath: *cfg, User: *user, Getenv: env.Getenv}
	var plan *service.InstallPlan
	var err error
	if *print {
		plan, err = service.Plan(o)
	} else {
		plan, err = service.Install(o)
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, "agent install:", err)
		return 1
	}
	for _, w := range plan.Warnings {
		fmt.Fprintln(env.Stderr, "warning:", w)
	}
	if *print {
		if plan.CreateUser {
			fmt.Fprintf(env.Stdout, "# would create the system user %s\n", plan.Config.UserName)
		}
		fmt.Fprint(env.Stdout, plan.Unit)
		return 0
	}
	if plan.CreateUser {
		fmt.Fprintf(env.Stdout, "created the system user %s\n", plan.Config.UserName)
	}
	fmt.Fprintf(env.Stdout, "installed the service %s (runs: %s %s)\nstart it with: %s start\n",
		service.Name, plan.Config.Executable, strings.Join(plan.Config.Arguments, " "), plan.Config.Executable)
	return 0
}

// stateDir finds the state directory from the config, falling back to the
// default when the config cannot be read (a user without access to it).
func stateDir(configPath string, env Env) string {
	if c, err := agent.LoadConfig(configPath, env.Getenv); err == nil {
		return c.StateDir
	}
	if v := env.Getenv("AGENT_STATE_DIR"); v != "" {
		return v
	}
	return agent.DefaultStateDir()
}

func status(args []string, env Env) int {
	fs, cfg := flags("status", env)
	asJSON := fs.Bool("json", false, "print the running agent's report as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	state := service.State()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := control.NewClient(stateDir(*cfg, env)).Status(ctx)
	if *asJSON {
		if err != nil {
			fmt.Fprintln(env.Stderr, "agent status:", err)
			return 1
		}
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
		return 0
	}
	fmt.Fprintf(env.Stdout, "service:        %s (%s)\n", state, service.Name)
	if err != nil {
		fmt.Fprintf(env.Stdout, "agent:          %v\n", err)
		if errors.Is(err, control.ErrNotRunning) {
			return 3
		}
		return 1
	}
	w := func(k, v string) { fmt.Fprintf(env.Stdout, "%-15s %s\n", k+":", v) }
	w("agent", fmt.Sprintf("%s (version %s, pid %d, up since %s)", r.AgentID, r.Version, r.PID, r.StartedAt.Local().Format(time.RFC3339)))
	w("control plane", r.ControlPlane)
	if r.Connected {
		since := ""
		if r.ConnectedSince != nil {
			since = fmt.Sprintf(" since %s (%s)", r.ConnectedSince.Local().Format(time.RFC3339), time.Since(*r.ConnectedSince).Round(time.Second))
		}
		w("connection", "connected"+since+", session "+r.SessionID)
	} else {
		w("connection", "NOT connected")
	}
	if r.LastError != "" {
		w("last error", r.LastError)
	}
	w("jobs running", fmt.Sprint(r.JobsRunning))
	lvl := r.LogLevel
	if r.LogLevelUntil != nil {
		lvl += fmt.Sprintf(" until %s, then %s", r.LogLevelUntil.Local().Format(time.RFC3339), r.ConfiguredLogLevel)
	}
	w("log level", lvl)
	if r.MetricsListen != "" {
		w("metrics", "http://"+r.MetricsListen+"/metrics")
	}
	if !r.Connected {
		return 1
	}
	return 0
}

func logLevel(args []string, env Env) int {
	fs, cfg := flags("log-level", env)
	d := fs.Duration("for", control.DefaultLevelFor, "how long, then back to the configured level (at most 24h)")
	// The level comes first (agent log-level debug --for 15m); flags may
	// come before or after it.
	var level string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		level, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if level == "" && fs.NArg() > 0 {
		level = fs.Arg(0)
	}
	if level == "" {
		fmt.Fprintln(env.Stderr, "usage: agent log-level debug|info|warn|error [--for 15m] [--config FILE]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := control.NewClient(stateDir(*cfg, env)).SetLevel(ctx, level, *d)
	if err != nil {
		fmt.Fprintln(env.Stderr, "agent log-level:", err)
		return 1
	}
	if r.Until != nil {
		fmt.Fprintf(env.Stdout, "logging at %s until %s, then at %s again\n", r.Level, r.Until.Local().Format(time.RFC3339), r.Configured)
	} else {
		fmt.Fprintf(env.Stdout, "logging at %s (the configured level)\n", r.Level)
	}
	return 0
}

func runDoctor(args []string, env Env) int {
	fs, cfg := flags("doctor", env)
	timeout := fs.Duration("timeout", 10*time.Second, "bound of each network check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := doctor.Run(ctx, doctor.Options{ConfigPath: *cfg, Getenv: env.Getenv, Version: env.Version, Timeout: *timeout})
	rep.Write(env.Stdout)
	if rep.Blocking() {
		return 1
	}
	return 0
}
