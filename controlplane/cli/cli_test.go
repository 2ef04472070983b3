package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
	"github.com/orchestrator/orchestrator/protocol"
)

// The admin commands against a real control plane (its handler behind
// httptest, the SQLite store in a temporary directory) and a small fake
// agent on a real websocket that answers GitHub jobs.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const cliToken = "cli-test-admin-token-0123456789"

// cliCP is a control plane under test.
type cliCP struct {
	t   *testing.T
	url string
	ts  *httptest.Server
}

func newCLICP(t *testing.T) *cliCP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	st, err := sqlite.Open(ctx, t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := controlplane.New(controlplane.Options{Store: st, AdminToken: cliToken, PasswordCost: 4, HeartbeatInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		ts.Close()
		st.Close()
	})
	return &cliCP{t: t, url: ts.URL, ts: ts}
}

// cliResult is what a command did.
type cliResult struct {
	code           int
	stdout, stderr string
}

// run runs an admin command with the environment env (the URL and token
// are added unless env sets them).
func (c *cliCP) run(env map[string]string, args ...string) cliResult {
	c.t.Helper()
	vars := map[string]string{"CONTROLPLANE_URL": c.url, "CONTROLPLANE_ADMIN_TOKEN": cliToken}
	for k, v := range env {
		vars[k] = v
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := Run(ctx, args, Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return vars[k] }, HTTPClient: c.ts.Client()})
	return cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
}

// ok runs a command that must succeed and returns its output.
func (c *cliCP) ok(args ...string) string {
	c.t.Helper()
	r := c.run(nil, args...)
	if r.code != 0 {
		c.t.Fatalf("controlplane %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// okJSON runs a command with --json and decodes its output.
func (c *cliCP) okJSON(out any, args ...string) {
	c.t.Helper()
	s := c.ok(append(args, "--json")...)
	if err := json.Unmarshal([]byte(s), out); err != nil {
		c.t.Fatalf("controlplane %s --json: %v: %s", strings.Join(args, " "), err, s)
	}
}

// fails runs a command that must exit with code and print each of want on
// stderr.
func (c *cliCP) fails(env map[string]string, code int, want []string, args ...string) cliResult {
	c.t.Helper()
	r := c.run(env, args...)
	if r.code != code {
		c.t.Errorf("controlplane %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			c.t.Errorf("controlplane %s: stderr %q, want it to say %q", strings.Join(args, " "), r.stderr, w)
		}
	}
	return r
}

func contains(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s: %q does not say %q", what, s, w)
		}
	}
}

// cliAgent is a fake agent: it enrolls with the token, says hello over a
// real websocket, and answers test_connection and list_organizations jobs
// (a secret named "ci/bad" fails with github_bad_credentials).
type cliAgent struct {
	conn *websocket.Conn
	mu   sync.Mutex // guards writes
	done chan struct{}
}

func startCLIAgent(t *testing.T, c *cliCP, token string) *cliAgent {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.EnrollRequest{Token: token, PublicKey: protocol.EncodePublicKey(pub)})
	resp, err := c.ts.Client().Post(c.url+protocol.EnrollPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var er protocol.EnrollResponse
	err = json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("enroll: %d %v", resp.StatusCode, err)
	}
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, wresp, err := d.Dial("ws"+strings.TrimPrefix(c.url, "http")+protocol.ConnectPath, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	wresp.Body.Close()
	a := &cliAgent{conn: conn, done: make(chan struct{})}
	m := a.read(t)
	if m.Type != protocol.TypeChallenge {
		t.Fatalf("first message %s", m.Type)
	}
	sig := ed25519.Sign(priv, protocol.SigningPayload(er.AgentID, m.Challenge.Nonce, protocol.Version))
	a.send(t, &protocol.Message{Type: protocol.TypeHello, Hello: &protocol.Hello{
		AgentID: er.AgentID, Signature: base64.RawURLEncoding.EncodeToString(sig), ProtocolVersion: protocol.Version,
		AgentVersion: "cli-test", Hostname: "cli-host", OS: "linux/amd64",
		Backends: []protocol.BackendInfo{{Name: protocol.BackendFile}}, Kinds: protocol.JobKinds, Concurrency: 4,
	}})
	if m := a.read(t); m.Type != protocol.TypeWelcome {
		t.Fatalf("answer to hello: %s", m.Type)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go a.serve()
	t.Cleanup(func() {
		conn.Close()
		<-a.done
	})
	// The control plane attaches the session just after its welcome.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var v protocol.AgentView
		c.okJSON(&v, "agents", "get", er.AgentID)
		if v.Status == protocol.AgentOnline {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s is %s, not online", er.AgentID, v.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (a *cliAgent) read(t *testing.T) *protocol.Message {
	t.Helper()
	_ = a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := a.conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	m, err := protocol.Decode(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return m
}

func (a *cliAgent) send(t *testing.T, m *protocol.Message) {
	if err := a.write(m); err != nil && t != nil {
		t.Fatalf("write: %v", err)
	}
}

func (a *cliAgent) write(m *protocol.Message) error {
	b, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conn.WriteMessage(websocket.TextMessage, b)
}

// serve answers jobs until the connection ends.
func (a *cliAgent) serve() {
	defer close(a.done)
	for {
		_, b, err := a.conn.ReadMessage()
		if err != nil {
			return
		}
		m, err := protocol.Decode(b)
		if err != nil || m.Type != protocol.TypeJob {
			continue
		}
		j := m.Job
		_ = a.write(&protocol.Message{Type: protocol.TypeAccepted, Accepted: &protocol.Accepted{JobID: j.JobID, Attempt: j.Attempt}})
		now := time.Now().UTC()
		r := &protocol.Result{JobID: j.JobID, Attempt: j.Attempt, OK: true, StartedAt: now, FinishedAt: now}
		orgs := []protocol.Organization{{Login: "acme", ID: 1, Description: "Acme"}, {Login: "tools", ID: 2}}
		switch {
		case j.Params.Secret != nil && j.Params.Secret.SecretName == "ci/bad":
			r.OK, r.Error = false, protocol.Errorf(protocol.CodeGitHubBadCredentials, "GitHub refused the token (401)")
		case j.Kind == protocol.KindTestConnection:
			r.Output = &protocol.Output{Connection: &protocol.ConnectionOutput{
				APIURL: j.Params.GitHubURL + "/api/v3/", GHESVersion: "3.19.1", Login: "octo-bot", TokenType: "classic_pat",
				ScopesListable: true, Scopes: []string{"repo"}, MissingScopes: []string{"workflow"}, Organizations: orgs, RateLimitRemaining: -1,
			}}
		case j.Kind == protocol.KindListOrganizations:
			r.Output = &protocol.Output{Organizations: &protocol.OrganizationsOutput{Organizations: orgs}}
		default:
			r.OK, r.Error = false, protocol.Errorf(protocol.CodeKindNotAllowed, "not in this fake")
		}
		_ = a.write(&protocol.Message{Type: protocol.TypeResult, Result: r})
	}
}

// TestCLIJourney walks the README's journey with the admin commands.
func TestCLIJourney(t *testing.T) {
	t.Parallel()
	c := newCLICP(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongFile := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrongFile, []byte("not the password"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Register an agent; the table shows the token once and how to enroll.
	out := c.ok("agents", "create", "vm-eu-1", "--label", "site=paris")
	contains(t, "agents create", out, "agent vm-eu-1 (agt_", "enrollment token", "oet_", "agent enroll --control-plane "+c.url)
	var reg protocol.RegisterAgentResponse
	c.okJSON(&reg, "agents", "token", "vm-eu-1")
	if reg.Agent.Name != "vm-eu-1" || reg.Agent.Labels["site"] != "paris" || !strings.HasPrefix(reg.EnrollmentToken.Token, "oet_") {
		t.Fatalf("agents token --json = %+v", reg)
	}
	startCLIAgent(t, c, reg.EnrollmentToken.Token)
	contains(t, "agents list", c.ok("agents", "list"), "ID", "STATUS", "vm-eu-1", "online", "cli-host", "file")
	contains(t, "agents get", c.ok("agents", "get", "vm-eu-1"), "status:", "online", "labels:", "site=paris", "test_connection")

	// Save a GHES connection: the backend comes from the agent.
	out = c.ok("connections", "create", "--name", "Prod GHES", "--github-url", "https://git.example.com/api/v3/",
		"--agent", "vm-eu-1", "--secret-name", "ci/github", "--username-key", "username", "--password-key", "token")
	contains(t, "connections create", out, "connection Prod GHES (con_", "saved", "https://git.example.com", "backend=file", "secret_name=ci/github", "last test:", "never")
	contains(t, "connections list", c.ok("connections", "list"), "Prod GHES", "ghes", "https://git.example.com", "never")

	// Test it, fetch the organizations, pick one.
	out = c.ok("connections", "test", "prod ghes")
	contains(t, "connections test", out, "test of connection prod ghes: ok", "octo-bot", "classic_pat", "3.19.1", "missing scopes:", "workflow")
	out = c.ok("connections", "organizations", "Prod GHES")
	contains(t, "connections organizations", out, "LOGIN", "acme", "Acme", "tools", "connections update con_")
	out = c.ok("connections", "update", "Prod GHES", "--organization", "ACME")
	contains(t, "connections update", out, "updated", "organization:", "acme")
	contains(t, "organizations again", c.ok("connections", "organizations", "Prod GHES"), "*  acme")

	// Protect it with a password.
	out = c.ok("connections", "update", "Prod GHES", "--new-password-file", pwFile)
	contains(t, "set a password", out, "protected:", "yes")
	if strings.Contains(out, "correct horse") {
		t.Errorf("the password is printed: %s", out)
	}
	contains(t, "list, protected", c.ok("connections", "list"), "(locked)")
	for _, args := range [][]string{
		{"connections", "get", "Prod GHES"},
		{"connections", "update", "Prod GHES", "--active=false"},
		{"connections", "test", "Prod GHES"},
		{"connections", "organizations", "Prod GHES"},
		{"connections", "delete", "Prod GHES"},
	} {
		c.fails(nil, 1, []string{"password_required", "X-Connection-Password"}, args...)
	}
	for _, args := range [][]string{{"connections", "get", "Prod GHES"}, {"connections", "delete", "Prod GHES"}} {
		c.fails(nil, 1, []string{"password_invalid"}, append(args, "--password-file", wrongFile)...)
	}
	contains(t, "get with the password", c.ok("connections", "get", "Prod GHES", "--password-file", pwFile), "github url:", "https://git.example.com")
	r := c.run(map[string]string{"CONTROLPLANE_CONNECTION_PASSWORD": "correct horse battery"}, "connections", "test", "Prod GHES")
	if r.code != 0 || !strings.Contains(r.stdout, "ok") {
		t.Errorf("test with the password in the environment: %d %s %s", r.code, r.stdout, r.stderr)
	}
	var v protocol.ConnectionView
	c.okJSON(&v, "connections", "get", "Prod GHES", "--password-file", pwFile)
	if !v.Protected || v.Organization != "acme" || v.LastTest == nil || !v.LastTest.OK {
		t.Errorf("connections get --json = %+v", v)
	}

	// A failing test exits 1 with the code; the same for github.com.
	c.ok("connections", "create", "--name", "cloud", "--kind", "github_cloud", "--github-url", "https://github.com",
		"--agent", "vm-eu-1", "--secret-name", "ci/bad", "--password-key", "token", "--scope", "repo,read:org", "--inactive")
	r = c.fails(nil, 1, []string{"github_bad_credentials", "refused the token"}, "connections", "test", "cloud")
	contains(t, "failed test", r.stdout, "test of connection cloud: github_bad_credentials")
	c.fails(nil, 1, []string{"github_bad_credentials"}, "connections", "organizations", "cloud")
	contains(t, "cloud in the list", c.ok("connections", "list", "--name", "CLOUD"), "github_cloud", "https://github.com", "no", "github_bad_credentials")

	// Unsaved details.
	out = c.ok("connections", "test", "--github-url", "https://git.example.com", "--agent", "vm-eu-1", "--secret-name", "ci/github", "--password-key", "token")
	contains(t, "unsaved test", out, "test of the details given: ok")

	// Jobs.
	var jobs protocol.JobList
	c.okJSON(&jobs, "jobs", "list", "--agent", "vm-eu-1")
	if len(jobs.Jobs) < 5 || jobs.Jobs[len(jobs.Jobs)-1].ConnectionID != v.ID {
		t.Fatalf("jobs list --json = %d jobs", len(jobs.Jobs))
	}
	contains(t, "jobs list", c.ok("jobs", "list", "--state", "failed"), "KIND", "test_connection", "failed", "github_bad_credentials")
	id := jobs.Jobs[0].ID
	contains(t, "jobs get", c.ok("jobs", "get", id, "--wait", "1s"), "id:", id, "connection:", "state:")
	c.fails(nil, 1, []string{"job_not_cancellable"}, "jobs", "cancel", id)

	// Delete, revoke.
	contains(t, "delete", c.ok("connections", "delete", "Prod GHES", "--password-file", pwFile), "deleted")
	c.fails(nil, 1, []string{`no connection named "Prod GHES"`}, "connections", "get", "Prod GHES")
	contains(t, "revoke", c.ok("agents", "revoke", "vm-eu-1"), "revoked")
	contains(t, "revoked agent", c.ok("agents", "list"), "revoked")
	c.fails(nil, 1, []string{"agent_revoked"}, "connections", "test", "cloud")
}

func TestCLIUsageAndErrors(t *testing.T) {
	t.Parallel()
	c := newCLICP(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(cliToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want []string
	}{
		{"nothing", nil, nil, 2, []string{"usage:", "controlplane agents create NAME"}},
		{"unknown group", nil, []string{"things"}, 2, []string{"usage:"}},
		{"group only", nil, []string{"jobs"}, 2, []string{"controlplane jobs cancel JOB"}},
		{"unknown command", nil, []string{"agents", "frob"}, 2, []string{`no command "frob"`}},
		{"missing argument", nil, []string{"agents", "get"}, 2, []string{"missing AGENT"}},
		{"extra argument", nil, []string{"agents", "list", "x"}, 2, []string{"unexpected arguments: x"}},
		{"unknown flag", nil, []string{"agents", "list", "--colour"}, 2, []string{"flag provided but not defined"}},
		{"help", nil, []string{"connections", "create", "-h"}, 2, []string{"-github-url", "-secret-name", "-new-password-file"}},
		{"create without name", nil, []string{"connections", "create", "--github-url", "https://g.example", "--agent", "a"}, 2, []string{"--name is required"}},
		{"bad label", nil, []string{"agents", "create", "x", "--label", "nokey"}, 2, []string{"not key=value"}},
		{"no token", map[string]string{"CONTROLPLANE_ADMIN_TOKEN": ""}, []string{"agents", "list"}, 2, []string{"no admin token"}},
		{"bad url", map[string]string{"CONTROLPLANE_URL": "cp.example.com"}, []string{"agents", "list"}, 2, []string{"must start with http"}},
		{"wrong token", map[string]string{"CONTROLPLANE_ADMIN_TOKEN": "wrong-token-wrong-token"}, []string{"agents", "list"}, 1, []string{"unauthorized"}},
		{"unknown agent id", nil, []string{"agents", "get", "agt_nope"}, 1, []string{"not_found", "agent not found"}},
		{"unknown agent name", nil, []string{"agents", "revoke", "nope"}, 1, []string{`no agent named "nope"`}},
		{"invalid name", nil, []string{"agents", "create", "bad name"}, 1, []string{"invalid_params"}},
		{"unreachable", map[string]string{"CONTROLPLANE_URL": "http://127.0.0.1:1"}, []string{"jobs", "list"}, 1, []string{"connection refused"}},
		{"bad state", nil, []string{"jobs", "list", "--state", "asleep"}, 1, []string{"invalid_params"}},
		{"agent never connected", nil, []string{"connections", "create", "--name", "x", "--github-url", "https://g.example", "--agent", "fresh"}, 1,
			[]string{"invalid_params", "never connected"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "agent never connected" {
				c.ok("agents", "create", "fresh")
			}
			c := &cliCP{t: t, url: c.url, ts: c.ts}
			c.fails(tc.env, tc.code, tc.want, tc.args...)
		})
	}
	// The token from a file, the URL from a flag.
	r := c.run(map[string]string{"CONTROLPLANE_ADMIN_TOKEN": "", "CONTROLPLANE_URL": ""}, "agents", "list", "--token-file", tokenFile, "--url", c.url+"/")
	if r.code != 0 || !strings.Contains(r.stdout, "ID") {
		t.Errorf("--token-file and --url: %d %s %s", r.code, r.stdout, r.stderr)
	}
}
