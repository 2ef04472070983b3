// Package cli is the control plane's admin commands: `controlplane agents`,
// `controlplane connections` and `controlplane jobs` talk to a running
// control plane through its HTTP API v1, print tables for people and JSON
// (--json) for scripts.
//
// The control plane's URL comes from --url, else CONTROLPLANE_URL, else
// http://127.0.0.1:8080; the admin token from --token, else --token-file,
// else CONTROLPLANE_ADMIN_TOKEN. A protected connection's password comes
// from --password-file, else CONTROLPLANE_CONNECTION_PASSWORD; it is never
// taken as a flag value, which would show in the shell's history and in
// the process list.
//
// Exit codes: 0 done, 1 the API or the network said no (the error's code
// and message are printed), 2 the command line is wrong.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Env is what the commands use of the world; tests give their own.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// HTTPClient calls the control plane; nil means a client with a 2
	// minute timeout.
	HTTPClient *http.Client
}

// DefaultURL is the control plane's address when neither --url nor
// CONTROLPLANE_URL says.
const DefaultURL = "http://127.0.0.1:8080"

// Groups are the first words of the admin commands.
var Groups = []string{"agents", "connections", "jobs"}

// usageError is a wrong command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// command is one admin command.
type command struct {
	args    string // the positional arguments, for the usage line
	summary string
	run     func(r *runner, args []string) error
}

var commands = map[string]map[string]command{
	"agents": {
		"create": {"NAME", "register an agent; prints its single-use enrollment token", agentsCreate},
		"list":   {"", "list agents", agentsList},
		"get":    {"AGENT", "show an agent", agentsGet},
		"revoke": {"AGENT", "revoke an agent: its key is refused and its session closed", agentsRevoke},
		"token":  {"AGENT", "a new single-use enrollment token (to re-enroll)", agentsToken},
	},
	"connections": {
		"create":        {"", "save a GitHub connection", connectionsCreate},
		"list":          {"", "list saved connections", connectionsList},
		"get":           {"CONNECTION", "show a saved connection", connectionsGet},
		"update":        {"CONNECTION", "change a saved connection (only the flags given)", connectionsUpdate},
		"delete":        {"CONNECTION", "delete a saved connection", connectionsDelete},
		"test":          {"[CONNECTION]", "test a saved connection, or unsaved details given as flags", connectionsTest},
		"organizations": {"CONNECTION", "fetch the organizations the connection's account sees", connectionsOrganizations},
	},
	"jobs": {
		"get":    {"JOB", "show a job", jobsGet},
		"list":   {"", "list jobs, newest first", jobsList},
		"cancel": {"JOB", "cancel a job", jobsCancel},
	},
}

// Run runs the admin command in args ("agents", "list", ...) and returns
// the process's exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	if len(args) == 0 || commands[args[0]] == nil {
		usage(env.Stderr, "")
		return 2
	}
	group := args[0]
	if len(args) < 2 || args[1] == "-h" || args[1] == "--help" || args[1] == "help" {
		usage(env.Stderr, group)
		return 2
	}
	cmd, ok := commands[group][args[1]]
	if !ok {
		fmt.Fprintf(env.Stderr, "controlplane %s: no command %q\n", group, args[1])
		usage(env.Stderr, group)
		return 2
	}
	r := &runner{env: env, ctx: ctx, name: group + " " + args[1], cmd: cmd}
	err := cmd.run(r, args[2:])
	var ue *usageError
	var ae *apiError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 2
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "controlplane %s: %s\n", r.name, ue.msg)
		fmt.Fprintf(env.Stderr, "usage: controlplane %s %s [flags]   (-h for the flags)\n", r.name, cmd.args)
		return 2
	case errors.As(err, &ae):
		fmt.Fprintf(env.Stderr, "controlplane %s: %s: %s\n", r.name, ae.e.Code, ae.e.Message)
		return 1
	default:
		fmt.Fprintf(env.Stderr, "controlplane %s: %v\n", r.name, err)
		return 1
	}
}

// usage prints the commands of group, or of every group.
func usage(w io.Writer, group string) {
	groups := Groups
	if group != "" {
		groups = []string{group}
	}
	fmt.Fprintln(w, "usage:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, g := range groups {
		var names []string
		for n := range commands[g] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			c := commands[g][n]
			fmt.Fprintf(tw, "  controlplane %s\t%s\n", strings.TrimSpace(g+" "+n+" "+c.args), c.summary)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, `
common flags: --url URL (or CONTROLPLANE_URL; default `+DefaultURL+`)
              --token TOKEN | --token-file FILE (or CONTROLPLANE_ADMIN_TOKEN)
              --json (print the API's JSON instead of a table)
AGENT and CONNECTION are an id or a name. Exit codes: 0 done, 1 refused (code and message printed), 2 usage.`)
}

// runner holds what a command needs while it runs.
type runner struct {
	env  Env
	ctx  context.Context
	name string
	cmd  command
	fs   *flag.FlagSet

	url, token, tokenFile string
	json                  bool
	// passwordFile is the connection's password (commands on a
	// connection).
	passwordFile string
}

// flags returns the command's flag set with the common flags.
func (r *runner) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("controlplane "+r.name, flag.ContinueOnError)
	// Parse errors are printed once, by Run; -h prints the usage below.
	fs.SetOutput(io.Discard)
	fs.StringVar(&r.url, "url", "", "the control plane's URL (default $CONTROLPLANE_URL, else "+DefaultURL+")")
	fs.StringVar(&r.token, "token", "", "the admin token (default $CONTROLPLANE_ADMIN_TOKEN)")
	fs.StringVar(&r.tokenFile, "token-file", "", "a file holding the admin token")
	fs.BoolVar(&r.json, "json", false, "print the API's JSON answer")
	fs.Usage = func() {
		fmt.Fprintf(r.env.Stderr, "usage: controlplane %s %s [flags]\n  %s\n\nflags:\n", r.name, r.cmd.args, r.cmd.summary)
		fs.SetOutput(r.env.Stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	r.fs = fs
	return fs
}

// passwordFlag adds --password-file.
func (r *runner) passwordFlag(fs *flag.FlagSet) {
	fs.StringVar(&r.passwordFile, "password-file", "", "a file holding the connection's password (- reads stdin; default $CONTROLPLANE_CONNECTION_PASSWORD)")
}

// parse parses flags anywhere among the arguments and checks the number
// of positional arguments.
func (r *runner) parse(args []string, minPos, maxPos int) ([]string, error) {
	var pos []string
	for {
		if err := r.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				r.fs.Usage()
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		args = r.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	switch {
	case len(pos) < minPos:
		return nil, usagef("missing %s", r.cmd.args)
	case len(pos) > maxPos:
		return nil, usagef("unexpected arguments: %s", strings.Join(pos[maxPos:], " "))
	}
	return pos, nil
}

// isSet reports whether the flag was given.
func (r *runner) isSet(name string) bool {
	set := false
	r.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// client builds the API client from the flags and the environment.
func (r *runner) client() (*client, error) {
	base := r.url
	if base == "" {
		base = r.env.Getenv("CONTROLPLANE_URL")
	}
	if base == "" {
		base = DefaultURL
	}
	base = strings.TrimRight(base, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, usagef("--url %q must start with http:// or https://", base)
	}
	token := r.token
	if token == "" && r.tokenFile != "" {
		b, err := os.ReadFile(r.tokenFile)
		if err != nil {
			return nil, usagef("--token-file: %v", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		token = r.env.Getenv("CONTROLPLANE_ADMIN_TOKEN")
	}
	if token == "" {
		return nil, usagef("no admin token: give --token-file FILE (the control plane's DATA/admin-token) or set CONTROLPLANE_ADMIN_TOKEN")
	}
	hc := r.env.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	c := &client{base: base, token: token, hc: hc}
	if r.passwordFile != "" || r.env.Getenv("CONTROLPLANE_CONNECTION_PASSWORD") != "" {
		p, err := r.readPassword(r.passwordFile, "CONTROLPLANE_CONNECTION_PASSWORD")
		if err != nil {
			return nil, err
		}
		c.password = p
	}
	return c, nil
}

// readPassword reads a password from file ("-" is stdin: its first line),
// else from the environment variable env.
func (r *runner) readPassword(file, env string) (string, error) {
	if file == "" {
		return r.env.Getenv(env), nil
	}
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(io.LimitReader(r.env.Stdin, 4096))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return "", usagef("read the password: %v", err)
	}
	p, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(p, "\r"), nil
}

// out prints v as indented JSON (--json) or calls table.
func (r *runner) out(v any, table func(w io.Writer)) error {
	if r.json {
		enc := json.NewEncoder(r.env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	table(r.env.Stdout)
	return nil
}

// stringList is a repeatable flag; each value may hold a comma-separated
// list.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
