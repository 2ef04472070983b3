package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/controlplane/cli"
	"github.com/orchestrator/orchestrator/protocol"
)

// The saved-connection journey of the platform's users (issue 5), end to
// end: a platform admin registers an agent; the agent enrolls and runs
// (its file secrets backend holds the GitHub token, its policy sends it to
// the fake GitHub only, its github.ca_file trusts the fake's certificate);
// a platform user saves a GitHub connection (the secret backend picked from
// the agent), tests it, fetches the organizations through the agent, picks
// one, protects the connection with a password, and every route refuses a
// missing or wrong password. Once for GitHub Enterprise Server and once for
// github.com (the fake at its root). The token is the harness's canary: it
// must appear in no API answer, log line, frame or store file; nor may the
// connection's password.

const (
	connJourneyPassword = "e2e-connection-PASSWORD-d41c"
	// connRevokedToken is a token GitHub refuses.
	connRevokedToken = "ghp_e2eCANARYconnRevoked5e1fDO-NOT-LEAK"
)

// connJourneyOptions: a cheap bcrypt cost, and heartbeats slow enough that
// a busy test machine does not take the agent for offline mid-journey.
func connJourneyOptions(o *controlplane.Options) {
	o.PasswordCost = 4
	o.HeartbeatInterval = time.Second
}

// connJourneyFake starts a fake GitHub whose canary token is a classic PAT
// of an account in two organizations (and one behind SSO, which GitHub
// leaves out of the list).
func connJourneyFake(t *testing.T, mode githubtest.Mode) *githubtest.Server {
	t.Helper()
	fake := githubtest.New(githubtest.Options{Mode: mode})
	t.Cleanup(fake.Close)
	fake.AddToken(canary, githubtest.Token{Type: githubtest.Classic, Login: "svc-platform", UserID: 701,
		Scopes: []string{"repo", "workflow", "read:org"},
		Orgs: []githubtest.Org{
			{Login: "Platform", ID: 2001, Description: "Platform team"},
			{Login: "payments", ID: 2002},
			{Login: "sso-only", ID: 2003, SSO: true},
		}})
	fake.AddToken(connRevokedToken, githubtest.Token{Type: githubtest.Classic, Login: "gone", UserID: 702,
		Faults: []githubtest.Fault{{Kind: githubtest.BadCredentials}}})
	return fake
}

// connJourneyAgent runs a real agent, already enrolled in stateDir, for the
// fake GitHub.
func connJourneyAgent(t *testing.T, cp *controlPlane, fake *githubtest.Server, stateDir string) *agentProc {
	t.Helper()
	id, err := agent.LoadIdentity(stateDir)
	if err != nil {
		t.Fatalf("load the identity: %v", err)
	}
	dir := t.TempDir() // outside the directories the canary check reads
	b, _ := json.Marshal(map[string]map[string]string{
		"github/platform": {"username": "svc-platform", "token": canary},
		"github/revoked":  {"username": "gone", "token": connRevokedToken},
	})
	secretsPath := filepath.Join(dir, "secrets.json")
	if err := os.WriteFile(secretsPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	caFile, err := fake.WriteCAFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		ControlPlane: cp.URL(), StateDir: stateDir, InsecureAllowWS: true, Concurrency: 2, DrainGrace: 5 * time.Second,
		Log:     agent.LogConfig{Format: "json", Level: "debug"},
		Secrets: agent.SecretsConfig{File: &agent.FileSecretsConfig{Path: secretsPath}},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindTestConnection), string(protocol.KindListOrganizations)},
			Secrets:  []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: "github/*", Hosts: []string{fake.URL()}}},
		},
		GitHub: github.Config{CAFile: caFile, Timeout: 10 * time.Second},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("agent config: %v", err)
	}
	p := &agentProc{t: t, ID: id.AgentID, StateDir: stateDir, frames: &frameLog{}, logs: &lockedBuffer{}, done: make(chan struct{})}
	p.Agent, err = agent.New(agent.Options{
		Config: cfg, Identity: id, Logger: newLogger(p.logs), Version: "e2e", Observe: p.frames.observe,
		Backoff: backoff.Options{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	agentEvidence := func() ([]evidence, error) {
		return []evidence{p.frames.evidence("frames of agent " + p.ID), {name: "log of agent " + p.ID, data: p.logs.Bytes()}}, nil
	}
	cp.leaks.add(agentEvidence)
	// The harness looks for its canary (the good token); this looks for the
	// other token and the connection's password, in the same places, once
	// everything has stopped.
	t.Cleanup(func() {
		var ev []evidence
		for _, src := range []func() ([]evidence, error){cp.evidence, agentEvidence} {
			e, _ := src()
			ev = append(ev, e...)
		}
		for _, e := range ev {
			for _, secret := range []string{connRevokedToken, connJourneyPassword} {
				if form, ok := redact.Find(e.data, secret); ok {
					t.Errorf("secret leaked: %s holds %.12s… as %q", e.name, secret, form)
				}
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		p.err = p.Agent.Run(ctx)
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Agent.Abort()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("agent %s: Run did not return within 10s of Abort", p.ID)
		}
		cancel()
		if t.Failed() {
			t.Logf("agent %s log:\n%s", p.ID, tail(p.logs.String(), 20000))
		}
	})
	return p
}

// connCall sends an API request with the admin token and, when set, the
// connection's password; the answer is recorded for the canary check.
func connCall(cp *controlPlane, method, path string, body any, password string) (int, http.Header, []byte) {
	t := cp.t
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	var req *http.Request
	var err error
	if rd != nil {
		req, err = http.NewRequestWithContext(cp.ctx, method, cp.URL()+path, rd)
	} else {
		req, err = http.NewRequestWithContext(cp.ctx, method, cp.URL()+path, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if password != "" {
		req.Header.Set(protocol.PasswordHeader, password)
	}
	resp, err := cp.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, buf.Bytes()
}

func connCallOK(cp *controlPlane, method, path string, body any, password string, status int, out any) {
	t := cp.t
	t.Helper()
	got, _, b := connCall(cp, method, path, body, password)
	if got != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

func connCallError(cp *controlPlane, method, path string, body any, password string, status int, code protocol.ErrorCode) {
	t := cp.t
	t.Helper()
	got, _, b := connCall(cp, method, path, body, password)
	if got != status || apiError(t, b).Code != code {
		t.Errorf("%s %s (password %t): %d %s, want %d %s", method, path, password != "", got, b, status, code)
	}
}

func TestConnectionJourney(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode githubtest.Mode
		kind protocol.GitHubKind
	}{
		{"ghes", githubtest.GHES, protocol.GitHubEnterpriseServer},
		{"github.com", githubtest.Cloud, protocol.GitHubCloud},
	} {
		t.Run(mode.name, func(t *testing.T) {
			cp := newControlPlane(t, connJourneyOptions)
			fake := connJourneyFake(t, mode.mode)

			// A platform admin registers an agent; it enrolls on its VM and runs.
			agentID, token := cp.register("vm-" + strings.ReplaceAll(mode.name, ".", "-"))
			stateDir := filepath.Join(t.TempDir(), "state")
			if _, err := cp.enroll(token, stateDir); err != nil {
				t.Fatalf("enroll: %v", err)
			}
			p := connJourneyAgent(t, cp, fake, stateDir)
			a := cp.waitAgentStatus(agentID, "online", 10*time.Second)
			if len(a.Backends) != 1 || a.Backends[0].Name != protocol.BackendFile {
				t.Fatalf("the agent's backends: %+v", a.Backends)
			}

			// A platform user saves a connection, as typed in the screen: the
			// URL with /api/v3 (GHES) or a trailing slash, no backend.
			typed, want := fake.URL()+"/", fake.URL()
			if mode.mode == githubtest.GHES {
				typed = fake.URL() + "/api/v3"
			}
			var conn protocol.ConnectionView
			connCallOK(cp, "POST", "/api/v1/connections", protocol.CreateConnectionRequest{
				Name: "Platform " + mode.name, Kind: mode.kind, GitHubURL: typed, AgentID: agentID,
				Secret: protocol.SecretRef{SecretName: "github/platform", UsernameKey: "username", PasswordKey: "token"},
			}, "", http.StatusCreated, &conn)
			if conn.GitHubURL != want || conn.Secret.Backend != protocol.BackendFile || !conn.Active || conn.Protected {
				t.Fatalf("saved connection: %+v", conn)
			}
			path := "/api/v1/connections/" + conn.ID

			// Test Connection.
			var ans protocol.ConnectionTestAnswer
			connCallOK(cp, "POST", path+"/test?wait=20s", nil, "", http.StatusOK, &ans)
			tt := ans.Test
			if tt == nil || !tt.OK || tt.Login != "svc-platform" || tt.TokenType != github.TokenClassic || tt.APIURL != fake.APIURL() ||
				tt.Organizations != 2 || !slices.Contains(tt.MissingScopes, "admin:org") || slices.Contains(tt.MissingScopes, "repo") {
				t.Fatalf("test: %+v (job %+v)", tt, ans.Job.Error)
			}
			if wantVersion := map[githubtest.Mode]string{githubtest.GHES: "3.19.0"}[mode.mode]; tt.GHESVersion != wantVersion {
				t.Errorf("ghes_version %q, want %q", tt.GHESVersion, wantVersion)
			}
			if ans.Job.ConnectionID != conn.ID || ans.Connection.LastTest == nil || ans.Connection.LastTest.JobID != ans.Job.ID {
				t.Errorf("the test is not kept on the connection: %+v", ans.Connection)
			}

			// Fetch the organizations, pick one.
			var orgs protocol.ConnectionOrganizations
			connCallOK(cp, "GET", path+"/organizations", nil, "", http.StatusOK, &orgs)
			var logins []string
			for _, o := range orgs.Organizations {
				logins = append(logins, o.Login)
			}
			if !slices.Equal(logins, []string{"Platform", "payments"}) {
				t.Fatalf("organizations %v, want Platform and payments", logins)
			}
			connCallError(cp, "PUT", path, map[string]string{"organization": "sso-only"}, "", http.StatusBadRequest, protocol.CodeInvalidParams)
			connCallOK(cp, "PUT", path, map[string]string{"organization": "platform"}, "", http.StatusOK, &conn)
			if conn.Organization != "Platform" {
				t.Errorf("organization %q, want GitHub's spelling Platform", conn.Organization)
			}
			// The test now checks the organization too.
			connCallOK(cp, "POST", path+"/test", nil, "", http.StatusOK, &ans)
			if !ans.Test.OK || ans.Job.Params.Organization != "Platform" {
				t.Errorf("test with the organization: %+v", ans.Test)
			}

			// Protect it with a password.
			connCallOK(cp, "PUT", path, map[string]string{"password": connJourneyPassword}, "", http.StatusOK, &conn)
			if !conn.Protected {
				t.Fatalf("not protected: %+v", conn)
			}
			var list protocol.ConnectionList
			connCallOK(cp, "GET", "/api/v1/connections", nil, "", http.StatusOK, &list)
			if len(list.Connections) != 1 || !list.Connections[0].Locked || list.Connections[0].Secret != nil {
				t.Errorf("listed: %+v, want it locked", list.Connections)
			}

			// Refused everywhere without it, and with a wrong one.
			routes := []struct {
				method, path string
				body         any
			}{
				{"GET", path, nil},
				{"PUT", path, map[string]bool{"active": false}},
				{"POST", path + "/test", nil},
				{"GET", path + "/organizations", nil},
				{"DELETE", path, nil},
			}
			jobsBefore := len(cp.listJobs("agent_id=" + agentID))
			for _, r := range routes {
				connCallError(cp, r.method, r.path, r.body, "", http.StatusForbidden, protocol.CodePasswordRequired)
			}
			for i, r := range routes {
				if i == 4 {
					// Four failures so far: the right password resets the
					// count before a fifth would pause the connection.
					connCallOK(cp, "GET", path, nil, connJourneyPassword, http.StatusOK, nil)
				}
				connCallError(cp, r.method, r.path, r.body, "not-the-password", http.StatusForbidden, protocol.CodePasswordInvalid)
			}
			if n := len(cp.listJobs("agent_id=" + agentID)); n != jobsBefore {
				t.Errorf("refused calls started %d jobs", n-jobsBefore)
			}
			connCallOK(cp, "GET", path, nil, connJourneyPassword, http.StatusOK, &conn)
			if conn.Active != true || conn.Organization != "Platform" {
				t.Errorf("a refused call changed the connection: %+v", conn)
			}

			// With the password, everything works.
			connCallOK(cp, "POST", path+"/test", nil, connJourneyPassword, http.StatusOK, &ans)
			if !ans.Test.OK {
				t.Errorf("test with the password: %+v", ans.Test)
			}
			connCallOK(cp, "GET", path+"/organizations", nil, connJourneyPassword, http.StatusOK, &orgs)
			if orgs.Organization != "Platform" || len(orgs.Organizations) != 2 {
				t.Errorf("organizations with the password: %+v", orgs)
			}

			// A token GitHub refuses: the test says so, and is kept.
			var bad protocol.ConnectionView
			connCallOK(cp, "POST", "/api/v1/connections", protocol.CreateConnectionRequest{
				Name: "revoked " + mode.name, Kind: mode.kind, GitHubURL: fake.URL(), AgentID: agentID,
				Secret: protocol.SecretRef{SecretName: "github/revoked", PasswordKey: "token"},
			}, "", http.StatusCreated, &bad)
			connCallOK(cp, "POST", "/api/v1/connections/"+bad.ID+"/test", nil, "", http.StatusOK, &ans)
			if ans.Test.OK || ans.Test.Error == nil || ans.Test.Error.Code != protocol.CodeGitHubBadCredentials {
				t.Errorf("test of a revoked token: %+v", ans.Test)
			}

			// The agent stops: a test is refused at once.
			if err := p.Stop(10 * time.Second); err != nil {
				t.Errorf("agent Stop: %v", err)
			}
			cp.waitAgentStatus(agentID, "offline", 10*time.Second)
			start := time.Now()
			connCallError(cp, "POST", path+"/test?wait=30s", nil, connJourneyPassword, http.StatusConflict, protocol.CodeAgentOffline)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("agent_offline came after %s", d)
			}

			// The control plane's log names the connection in its lines.
			if !hasLog(cp.logs.Bytes(), "connection tested", map[string]string{"connection_id": conn.ID, "ok": "true"}) ||
				!hasLog(cp.logs.Bytes(), "job dispatched", map[string]string{"connection_id": conn.ID}) {
				t.Errorf("the control plane's log does not name the connection")
			}
		})
	}
}

// TestConnectionJourneyCLI walks the same journey with the admin commands
// that the README shows, through the control plane's recording client.
func TestConnectionJourneyCLI(t *testing.T) {
	cp := newControlPlane(t, connJourneyOptions)
	fake := connJourneyFake(t, githubtest.GHES)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "connection-password")
	if err := os.WriteFile(pwFile, []byte(connJourneyPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(wantCode int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		code := cli.Run(cp.ctx, args, cli.Env{
			Stdout: &out, Stderr: &errOut, HTTPClient: cp.client,
			Getenv: func(k string) string {
				return map[string]string{"CONTROLPLANE_URL": cp.URL(), "CONTROLPLANE_ADMIN_TOKEN": adminToken}[k]
			},
		})
		cp.record("CLI "+strings.Join(args, " "), append(out.Bytes(), errOut.Bytes()...))
		if code != wantCode {
			t.Fatalf("controlplane %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}

	var reg protocol.RegisterAgentResponse
	if err := json.Unmarshal([]byte(run(0, "agents", "create", "vm-eu-1", "--json")), &reg); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	if _, err := cp.enroll(reg.EnrollmentToken.Token, stateDir); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	connJourneyAgent(t, cp, fake, stateDir)
	cp.waitAgentStatus(reg.Agent.ID, "online", 10*time.Second)

	out := run(0, "connections", "create", "--name", "prod-ghes", "--kind", "ghes", "--github-url", fake.URL()+"/api/v3/",
		"--agent", "vm-eu-1", "--secret-name", "github/platform", "--username-key", "username", "--password-key", "token")
	for _, w := range []string{"saved", "backend=file", fake.URL()} {
		if !strings.Contains(out, w) {
			t.Errorf("connections create: %q lacks %q", out, w)
		}
	}
	out = run(0, "connections", "test", "prod-ghes")
	for _, w := range []string{"ok", "svc-platform", "classic_pat", "3.19.0"} {
		if !strings.Contains(out, w) {
			t.Errorf("connections test: %q lacks %q", out, w)
		}
	}
	out = run(0, "connections", "organizations", "prod-ghes")
	if !strings.Contains(out, "Platform") || !strings.Contains(out, "payments") {
		t.Errorf("connections organizations: %q", out)
	}
	run(0, "connections", "update", "prod-ghes", "--organization", "payments")
	run(0, "connections", "update", "prod-ghes", "--new-password-file", pwFile)
	out = run(1, "connections", "test", "prod-ghes")
	if !strings.Contains(out, "password_required") {
		t.Errorf("test without the password: %q", out)
	}
	out = run(0, "connections", "test", "prod-ghes", "--password-file", pwFile)
	if !strings.Contains(out, "test of connection prod-ghes: ok") {
		t.Errorf("test with the password: %q", out)
	}
	if out := run(0, "connections", "list"); !strings.Contains(out, "(locked)") {
		t.Errorf("connections list: %q", out)
	}
}

// TestConnectionURLNormalisationAgrees: the control plane stores what
// protocol.NormalizeGitHubURL makes of a URL, and the agent derives the API
// from it with github.Normalize. Both accept and refuse the same URLs, and
// the agent's instance is the control plane's canonical form.
func TestConnectionURLNormalisationAgrees(t *testing.T) {
	allowHTTP := func(string) bool { return true } // plain http is the agent's policy, not a syntax rule
	inputs := []string{
		"https://git.example.com", "https://git.example.com/", "https://git.example.com/api/v3", "https://git.example.com/api/v3/",
		"HTTPS://Git.Example.COM:443/api/v3", "https://git.example.com.", "https://git.example.com:8443", "https://git.example.com:08443/",
		"http://git.example.com", "http://git.example.com:80/", "https://10.1.2.3", "https://[::1]:8443/api/v3", "https://[fe80::1%25eth0]",
		"https://git.example.com//", "https://git.example.com/api", "https://git.example.com/orgs/acme", "https://git.example.com/api/v3/x",
		"https://user@git.example.com", "https://u:p@git.example.com", "https://@git.example.com", "https://git.example.com?x",
		"https://git.example.com/#", "https://git.example.com\\@evil", "https:// git.example.com", "git.example.com", "ftp://git.example.com",
		"https://", "https:///api/v3", "", "https://gït.example.com", "https://xn--gt-yia.example.com", "https://10.0.0.300",
		"https://-bad.example.com", "https://a_b.example.com", "https://git.example.com:0", "https://git.example.com:65536",
		"https://github.com", "https://github.com/", "https://www.github.com", "https://api.github.com/", "http://github.com",
		"https://github.com:8443", "https://github.com/api/v3", "https://github.com/acme", "https://acme.ghe.com", "https://api.acme.ghe.com",
		"https://ACME.ghe.com/", "https://a.b.ghe.com", "https://ghe.com", "https://api.ghe.com", "https://github.com.evil.example",
		"https://127.0.0.1:9443/", "http://gateway.internal:8080",
	}
	for _, kind := range []protocol.GitHubKind{protocol.GitHubEnterpriseServer, protocol.GitHubCloud} {
		for _, in := range inputs {
			canonical, cpErr := protocol.NormalizeGitHubURL(kind, in)
			ep, agentErr := github.Normalize(kind, in, allowHTTP)
			if (cpErr == nil) != (agentErr == nil) {
				t.Errorf("%s %q: control plane %q, %v; agent %+v, %v", kind, in, canonical, cpErr, ep, agentErr)
				continue
			}
			if cpErr != nil {
				continue
			}
			if canonical != ep.Instance {
				t.Errorf("%s %q: control plane %q, agent's instance %q", kind, in, canonical, ep.Instance)
			}
			again, err := github.Normalize(kind, canonical, allowHTTP)
			if err != nil || again.APIURL != ep.APIURL {
				t.Errorf("%s %q: the agent reads the canonical %q as %+v, %v; the typed URL as %s", kind, in, canonical, again, err, ep.APIURL)
			}
		}
	}
}
