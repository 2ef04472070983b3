// Package doctor is `agent doctor`: it checks, one by one, what the agent
// needs to work on this machine (its config and identity, the path to the
// control plane through DNS, TCP, a proxy and TLS, the clock, the
// websocket handshake and authentication, each secret backend's identity
// and permissions, each GitHub host) and says for each one a plain verdict
// and, when something is wrong, the fix.
//
// It never reads a secret's value from AWS or Azure: it asks for a
// secret's metadata (DescribeSecret, the versions' properties). Its
// websocket check is a probe session that the control plane closes after
// welcome, without disturbing the agent's own session.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/secrets"
)

// Verdict is how a check went.
type Verdict string

// Verdicts. Only Fail blocks the agent.
const (
	OK   Verdict = "ok"
	Warn Verdict = "warn"
	Fail Verdict = "FAIL"
	Skip Verdict = "skip"
)

// Result is one check's outcome.
type Result struct {
	// Check names what was checked: "config", "tls", "secrets aws", ...
	Check string
	// Verdict is how it went.
	Verdict Verdict
	// Detail says what was found, in a sentence or a few lines.
	Detail string
	// Fix says what to do, when the verdict is Warn or Fail.
	Fix string
}

// Options configure Run.
type Options struct {
	// ConfigPath is the agent's config file.
	ConfigPath string
	// Getenv reads the environment; default os.Getenv.
	Getenv func(string) string
	// Version is the agent's build version (sent in the probe's hello).
	Version string
	// Timeout bounds each network step; default 10s.
	Timeout time.Duration
	// AWS and Azure are handed to the cloud backends (tests set
	// credentials and transports here); zero values are what the agent
	// uses.
	AWS   secrets.AWSOptions
	Azure secrets.AzureOptions
}

// Report is every check's result, in order.
type Report struct {
	// Config is the config file checked.
	Config  string
	Results []Result
}

// Blocking reports whether a check failed: the agent cannot work until it
// is fixed.
func (r *Report) Blocking() bool {
	for _, x := range r.Results {
		if x.Verdict == Fail {
			return true
		}
	}
	return false
}

// Get returns the first result of the named check.
func (r *Report) Get(check string) (Result, bool) {
	for _, x := range r.Results {
		if x.Check == check {
			return x, true
		}
	}
	return Result{}, false
}

// Write prints the report for a person.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "agent doctor: %s\n\n", r.Config)
	width := 0
	for _, x := range r.Results {
		width = max(width, len(x.Check))
	}
	pad := strings.Repeat(" ", width+10)
	fails, warns := 0, 0
	for _, x := range r.Results {
		switch x.Verdict {
		case Fail:
			fails++
		case Warn:
			warns++
		}
		lines := strings.Split(x.Detail, "\n")
		fmt.Fprintf(w, "[%-4s]  %-*s  %s\n", x.Verdict, width, x.Check, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "%s%s\n", pad, l)
		}
		if x.Fix != "" && (x.Verdict == Fail || x.Verdict == Warn) {
			fmt.Fprintf(w, "%sfix: %s\n", pad, x.Fix)
		}
	}
	fmt.Fprintln(w)
	switch {
	case fails > 0:
		fmt.Fprintf(w, "%d check(s) failed: the agent cannot work until they are fixed.\n", fails)
	case warns > 0:
		fmt.Fprintf(w, "No check failed; %d warning(s).\n", warns)
	default:
		fmt.Fprintln(w, "Every check passed.")
	}
}

// doctor runs the checks of one Run.
type doctor struct {
	o   Options
	rep *Report
	cfg agent.Config

	identity *agent.Identity
	target   target
	// reachable is false once the path to the control plane is known to
	// be broken, so that the checks that need it are skipped.
	reachable bool
	running   *runningAgent
	skew      *skewReading
}

// skewReading is how far the control plane's clock is from this
// machine's, and how it was measured.
type skewReading struct {
	skew time.Duration
	from string
}

func (d *doctor) add(check string, v Verdict, detail, fix string) {
	d.rep.Results = append(d.rep.Results, Result{Check: check, Verdict: v, Detail: detail, Fix: fix})
}

func (d *doctor) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.o.Timeout)
}

// Run runs every check and returns the report; it fails only through the
// report.
func Run(ctx context.Context, o Options) *Report {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	d := &doctor{o: o, rep: &Report{Config: o.ConfigPath}, reachable: true}
	if !d.checkConfig() {
		return d.rep
	}
	d.checkIdentity()
	d.checkRunning(ctx)
	d.checkNetwork(ctx)
	d.checkSession(ctx)
	d.checkClock()
	d.checkSecrets(ctx)
	d.checkGitHub(ctx)
	return d.rep
}

// errText is an error's text on one line.
func errText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
