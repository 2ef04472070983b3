package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// The tests in this file run the control plane and the agent as the built
// binaries, as an operator would, and kill them for real.

const binCanary = "canary-bin-8d41c7e2-DO-NOT-LEAK"

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binaries builds cmd/controlplane and cmd/agent once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries; skipped with -short")
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "orchestrator-e2e-bin-")
		if binErr != nil {
			return
		}
		for _, name := range []string{"controlplane", "agent"} {
			cmd := exec.Command("go", "build", "-race", "-o", filepath.Join(binDir, name), "github.com/orchestrator/orchestrator/cmd/"+name)
			if out, err := cmd.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("go build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// removeBinaries is called by TestMain after the run.
func removeBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// binProc is a running binary whose output is kept.
type binProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func startBin(t *testing.T, name string, args ...string) *binProc {
	t.Helper()
	return startBinEnv(t, name, nil, args...)
}

// startBinEnv starts a built binary with env added to the test's
// environment (a later value of a variable wins).
func startBinEnv(t *testing.T, name string, env []string, args ...string) *binProc {
	t.Helper()
	p := &binProc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binaries(t), name), args...)
	p.cmd.Env = append(append(os.Environ(), "AGENT_LOG_FORMAT=json"), env...)
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	var copied sync.WaitGroup
	copied.Add(1)
	go func() {
		defer copied.Done()
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			p.mu.Lock()
			p.out.Write(s.Bytes())
			p.out.WriteByte('\n')
			p.mu.Unlock()
		}
	}()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		w.Close()
		copied.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.output())
		}
	})
	return p
}

func (p *binProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *binProc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *binProc) signal(s os.Signal) { _ = p.cmd.Process.Signal(s) }

// wait waits for the process to exit and returns its exit code.
func (p *binProc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("%s did not exit within %s", p.name, d)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitLog waits until a line of the output contains every part.
func (p *binProc) waitLog(d time.Duration, parts ...string) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.output(), "\n") {
			all := true
			for _, part := range parts {
				all = all && strings.Contains(line, part)
			}
			if all {
				return line
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("%s: no log line with %q within %s", p.name, parts, d)
	return ""
}

// binSetup is a control plane binary with one enrolled agent's files ready.
type binSetup struct {
	t        *testing.T
	dir      string
	addr     string
	token    string
	agentID  string
	config   string
	cp       *binProc
	answers  bytes.Buffer // every API answer, for the canary search
	answerMu sync.Mutex
	client   *http.Client
}

func newBinSetup(t *testing.T) *binSetup {
	t.Helper()
	s := &binSetup{t: t, dir: t.TempDir(), client: &http.Client{Transport: &http.Transport{}, Timeout: 40 * time.Second}}
	t.Cleanup(s.client.CloseIdleConnections)
	cpConfig := filepath.Join(s.dir, "controlplane.yaml")
	if err := os.WriteFile(cpConfig, []byte("heartbeat_interval: 500ms\nlog:\n  format: json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.startControlPlane("127.0.0.1:0")
	b, err := os.ReadFile(filepath.Join(s.dir, "data", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(b))

	var reg protocol.RegisterAgentResponse
	s.api("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "bin-agent"}, http.StatusCreated, &reg)
	s.agentID = reg.Agent.ID

	secrets := filepath.Join(s.dir, "secrets.json")
	if err := os.WriteFile(secrets, []byte(`{"ci/github":{"username":"octo","token":"`+binCanary+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s.config = filepath.Join(s.dir, "agent.yaml")
	cfg := fmt.Sprintf(`control_plane: http://%s
insecure_allow_ws: true
state_dir: %s
drain_grace: 5s
log: {format: json, level: debug}
secrets:
  file: {path: %s}
policy:
  job_kinds: [resolve_credentials]
  secrets:
    - {backend: file, secret_name: ci/github}
`, s.addr, filepath.Join(s.dir, "agent-state"), secrets)
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	enroll := exec.Command(filepath.Join(binaries(t), "agent"), "enroll", "--config", s.config, "--token", reg.EnrollmentToken.Token)
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("agent enroll: %v\n%s", err, out)
	}
	t.Cleanup(s.checkCanary)
	return s
}

func (s *binSetup) startControlPlane(listen string) {
	s.t.Helper()
	addrFile := filepath.Join(s.dir, "addr")
	os.Remove(addrFile)
	s.cp = startBin(s.t, "controlplane", "serve", "--data", filepath.Join(s.dir, "data"), "--listen", listen,
		"--addr-file", addrFile, "--config", filepath.Join(s.dir, "controlplane.yaml"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			s.addr = strings.TrimSpace(string(b))
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the control plane did not start:\n%s", s.cp.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *binSetup) startAgent() *binProc {
	return startBin(s.t, "agent", "run", "--config", s.config)
}

// api calls the control plane and decodes the answer, which must have the
// wanted status.
func (s *binSetup) api(method, path string, in any, want int, out any) {
	s.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+s.addr+path, body)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s.answerMu.Lock()
	s.answers.Write(b)
	s.answerMu.Unlock()
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

func (s *binSetup) waitStatus(status string, d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	var v protocol.AgentView
	for time.Now().Before(deadline) {
		s.api("GET", "/api/v1/agents/"+s.agentID, nil, http.StatusOK, &v)
		if v.Status == status {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("agent status %q, want %q after %s", v.Status, status, d)
}

func (s *binSetup) resolve() protocol.JobView {
	s.t.Helper()
	var j protocol.JobView
	s.api("POST", "/api/v1/jobs?wait=20s", protocol.SubmitJobRequest{
		AgentID: s.agentID, Kind: protocol.KindResolveCredentials,
		Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "file", SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"}},
	}, http.StatusCreated, &j)
	return j
}

// checkCanary searches both processes' output, every API answer and every
// store file for the canary in its encoded forms.
func (s *binSetup) checkCanary() {
	s.t.Helper()
	s.answerMu.Lock()
	answers := s.answers.Bytes()
	s.answerMu.Unlock()
	places := map[string][]byte{"api answers": answers}
	for _, p := range []*binProc{s.cp} {
		places[p.name+" output"] = []byte(p.output())
	}
	entries, _ := os.ReadDir(filepath.Join(s.dir, "data"))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.dir, "data", e.Name()))
		if err == nil {
			places["store file "+e.Name()] = b
		}
	}
	for where, b := range places {
		if form, found := redact.Find(b, binCanary); found {
			s.t.Errorf("the canary secret (%s form) leaked into %s", form, where)
		}
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	s := newBinSetup(t)
	ag := s.startAgent()
	s.waitStatus(protocol.AgentOnline, 20*time.Second)
	j := s.resolve()
	if j.State != protocol.JobSucceeded || j.Result == nil || j.Result.Credentials == nil {
		t.Fatalf("job %+v, want succeeded with credentials", j)
	}
	if got := j.Result.Credentials.KeysFound; len(got) != 2 {
		t.Errorf("keys_found %v, want username and password", got)
	}
	// One grep follows the job across both sides.
	s.cp.waitLog(5*time.Second, `"job finished"`, j.ID)
	ag.waitLog(5*time.Second, `"job done"`, j.ID)
	if form, found := redact.Find([]byte(ag.output()), binCanary); found {
		t.Errorf("the canary (%s form) is in the agent's log", form)
	}
}

func TestBinaryAgentSIGTERM(t *testing.T) {
	s := newBinSetup(t)
	ag := s.startAgent()
	s.waitStatus(protocol.AgentOnline, 20*time.Second)
	ag.signal(syscall.SIGTERM)
	if code := ag.wait(15 * time.Second); code != 0 {
		t.Fatalf("agent exit code %d after SIGTERM, want 0", code)
	}
	ag.waitLog(time.Second, `"draining"`)
	s.cp.waitLog(5*time.Second, `"agent disconnected"`, "agent stopped")
	s.waitStatus(protocol.AgentOffline, 5*time.Second)
}

func TestBinaryAgentKilledAndRestarted(t *testing.T) {
	s := newBinSetup(t)
	ag := s.startAgent()
	s.waitStatus(protocol.AgentOnline, 20*time.Second)
	ag.signal(syscall.SIGKILL)
	ag.wait(10 * time.Second)
	// Without a close frame the control plane notices by the missing heartbeats
	// (3 × 500ms) or the broken connection.
	s.waitStatus(protocol.AgentOffline, 10*time.Second)
	s.startAgent()
	s.waitStatus(protocol.AgentOnline, 20*time.Second)
	if j := s.resolve(); j.State != protocol.JobSucceeded {
		t.Fatalf("job after restart: %s %+v", j.State, j.Error)
	}
}

func TestBinaryControlPlaneKilledAndRestarted(t *testing.T) {
	s := newBinSetup(t)
	s.startAgent()
	s.waitStatus(protocol.AgentOnline, 20*time.Second)
	before := s.resolve()
	if before.State != protocol.JobSucceeded {
		t.Fatalf("job before the kill: %s", before.State)
	}
	s.cp.signal(syscall.SIGKILL)
	s.cp.wait(10 * time.Second)
	s.startControlPlane(s.addr) // the same address and data directory
	s.waitStatus(protocol.AgentOnline, 30*time.Second)

	var again protocol.JobView
	s.api("GET", "/api/v1/jobs/"+before.ID, nil, http.StatusOK, &again)
	if again.State != protocol.JobSucceeded || !again.FinishedAt.Equal(*before.FinishedAt) {
		t.Errorf("the job stored before the kill came back as %s finished %v, want succeeded at %v", again.State, again.FinishedAt, before.FinishedAt)
	}
	if j := s.resolve(); j.State != protocol.JobSucceeded {
		t.Fatalf("job after the restart: %s %+v", j.State, j.Error)
	}
}
