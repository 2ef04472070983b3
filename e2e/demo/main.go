// Command demo runs the product end to end on embedded defaults: it builds
// the two binaries, starts a control plane on its embedded store, registers
// and enrolls a real agent process that connects over a real websocket,
// submits a resolve_credentials job against a local secrets file, and
// prints the outcome. Both processes keep running until Ctrl-C (or exit at
// once with -once).
//
//	go run ./e2e/demo
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

func main() {
	once := flag.Bool("once", false, "stop both processes after the job instead of waiting for Ctrl-C")
	dir := flag.String("dir", "", "work directory (default: a new temporary one)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *once); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demoSecret is what the local secrets file holds. The job's outcome shows
// that it was found, never the value.
const demoSecret = "ghp_demoDEMOdemoDEMOdemoDEMOdemo0000"

func run(ctx context.Context, dir string, once bool) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "orchestrator-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	say("work directory %s", dir)

	say("building bin/controlplane and bin/agent")
	bin := filepath.Join(dir, "bin")
	for _, name := range []string{"controlplane", "agent"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s (run the demo from the repository root): %w", name, err)
		}
	}

	var procs sync.WaitGroup
	defer procs.Wait()
	procCtx, stopProcs := context.WithCancel(context.Background())
	defer stopProcs()

	addrFile := filepath.Join(dir, "controlplane.addr")
	cp := start(procCtx, &procs, "controlplane", filepath.Join(bin, "controlplane"), "serve",
		"--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--log-format", "console")
	addr, err := waitFile(ctx, addrFile, cp)
	if err != nil {
		return err
	}
	base := "http://" + addr
	token, err := waitFile(ctx, filepath.Join(dir, "data", "admin-token"), cp)
	if err != nil {
		return err
	}
	api := &client{base: base, token: token}
	say("control plane on %s (admin token in %s)", base, filepath.Join(dir, "data", "admin-token"))

	var reg protocol.RegisterAgentResponse
	if err := api.do(ctx, "POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "demo-agent"}, &reg); err != nil {
		return err
	}
	say("registered agent %s (%s); single-use enrollment token issued, valid until %s", reg.Agent.Name, reg.Agent.ID, reg.EnrollmentToken.ExpiresAt.Format(time.RFC3339))

	secretsFile := filepath.Join(dir, "secrets.json")
	secrets := map[string]map[string]string{"ci/github": {"username": "octo-bot", "token": demoSecret}}
	if err := writeJSON(secretsFile, secrets); err != nil {
		return err
	}
	config := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf(`control_plane: %s
insecure_allow_ws: true   # plain http on loopback, for the demo only
state_dir: %s
concurrency: 4
drain_grace: 10s
log:
  format: console
secrets:
  file:
    path: %s
policy:
  job_kinds: [resolve_credentials]
  secrets:
    - backend: file
      secret_name: ci/github
`, base, filepath.Join(dir, "agent-state"), secretsFile)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		return err
	}
	enroll := exec.CommandContext(ctx, filepath.Join(bin, "agent"), "enroll", "--config", config, "--token", reg.EnrollmentToken.Token)
	enroll.Stdout, enroll.Stderr = prefixed("agent"), prefixed("agent")
	if err := enroll.Run(); err != nil {
		return fmt.Errorf("agent enroll: %w", err)
	}
	ag := start(procCtx, &procs, "agent", filepath.Join(bin, "agent"), "run", "--config", config)

	say("waiting for the agent to connect")
	for {
		var v protocol.AgentView
		if err := api.do(ctx, "GET", "/api/v1/agents/"+reg.Agent.ID, nil, &v); err != nil {
			return err
		}
		if v.Status == protocol.AgentOnline {
			say("agent online: session %s, backends %v, kinds %v", v.SessionID, backendNames(v.Backends), v.Kinds)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ag.done:
			return errors.New("the agent exited before connecting")
		case <-time.After(100 * time.Millisecond):
		}
	}

	say("submitting a resolve_credentials job and waiting for its result")
	var job protocol.JobView
	err = api.do(ctx, "POST", "/api/v1/jobs?wait=30s", protocol.SubmitJobRequest{
		AgentID: reg.Agent.ID, Kind: protocol.KindResolveCredentials,
		Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "file", SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"}},
	}, &job)
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(job, "", "  ")
	fmt.Printf("\n%s\n\n", out)
	if bytes.Contains(out, []byte(demoSecret)) {
		return errors.New("the secret value reached the API answer")
	}
	if job.State != protocol.JobSucceeded {
		return fmt.Errorf("the job ended %s", job.State)
	}
	c := job.Result.Credentials
	say("job %s %s in %dms: keys found %v, fingerprint %s; the secret's value stayed in the agent",
		job.ID, job.State, *job.DurationMS, c.KeysFound, c.Fingerprint)
	if once {
		return nil
	}
	say("both processes keep running; try: curl -H \"Authorization: Bearer $(cat %s)\" %s/api/v1/agents", filepath.Join(dir, "data", "admin-token"), base)
	say("press Ctrl-C to stop")
	select {
	case <-ctx.Done():
	case <-cp.done:
		return errors.New("the control plane exited")
	case <-ag.done:
		return errors.New("the agent exited")
	}
	return nil
}

type proc struct{ done chan struct{} }

// start runs a binary with its output prefixed; canceling ctx sends SIGTERM.
func start(ctx context.Context, wg *sync.WaitGroup, name, path string, args ...string) *proc {
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = prefixed(name), prefixed(name)
	p := &proc{done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		say("start %s: %v", name, err)
		close(p.done)
		return p
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
		case <-p.done:
		}
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p
}

func waitFile(ctx context.Context, path string, p *proc) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-p.done:
			return "", fmt.Errorf("the process exited before writing %s", path)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s did not appear within 30s", path)
}

type client struct{ base, token string }

func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

func writeJSON(path string, v any) error {
	b, _ := json.MarshalIndent(v, "", "  ")
	return os.WriteFile(path, b, 0o600)
}

func backendNames(bs []protocol.BackendInfo) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out
}

var outMu sync.Mutex

func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf("%-12s | "+format+"\n", append([]any{"demo"}, args...)...)
}

// prefixed writes each line with the process's name in front.
func prefixed(name string) io.Writer {
	r, w := io.Pipe()
	go func() {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			outMu.Lock()
			fmt.Printf("%-12s | %s\n", name, s.Text())
			outMu.Unlock()
		}
	}()
	return w
}
