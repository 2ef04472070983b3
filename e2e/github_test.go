package e2e

import (
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
	"github.com/orchestrator/orchestrator/protocol"
)

// The GitHub jobs end to end: the platform submits test_connection and
// list_organizations through the control plane's HTTP API; a real agent
// (enrolled over the API, its file secrets backend holding the tokens, its
// policy allowing the fake's host, its github.ca_file holding the fake's
// certificate) runs them with the real go-github client against the fake
// GitHub (githubtest), over HTTPS on 127.0.0.1. Every token is a canary:
// none may appear in an API answer, a frame, a log line or the store.

// The tokens of the fake GitHub's accounts. ghTokClassic is the harness's
// canary, so that its check covers it; the others are checked here.
const (
	ghTokClassic     = canary
	ghTokFineGrained = "github_pat_e2eCANARYfine7c41d09aDO-NOT-LEAK"
	ghTokApp         = "ghs_e2eCANARYapp3b8e5f21DO-NOT-LEAK"
	ghTokRevoked     = "ghp_e2eCANARYrevoked9d2a6c47DO-NOT-LEAK"
)

var ghTokens = []string{ghTokClassic, ghTokFineGrained, ghTokApp, ghTokRevoked}

// ghSecrets maps the secret names of the agent's secrets file to tokens.
var ghSecrets = map[string]string{
	"gh/classic": ghTokClassic,
	"gh/fine":    ghTokFineGrained,
	"gh/app":     ghTokApp,
	"gh/revoked": ghTokRevoked,
}

var ghExpiry = time.Date(2027, 1, 31, 23, 59, 59, 0, time.UTC)

// ghFake starts a fake GitHub in mode with the accounts of the tokens.
func ghFake(t *testing.T, mode githubtest.Mode) *githubtest.Server {
	t.Helper()
	fake := githubtest.New(githubtest.Options{Mode: mode})
	t.Cleanup(fake.Close)
	orgs := []githubtest.Org{
		{Login: "platform", ID: 1001, Description: "Platform team"},
		{Login: "payments", ID: 1002},
		{Login: "octo-sso", ID: 1003, SSO: true},
	}
	fake.AddToken(ghTokClassic, githubtest.Token{Type: githubtest.Classic, Login: "svc-orchestrator", UserID: 501,
		Scopes: []string{"repo", "workflow", "read:org", "read:packages", "notifications"}, Orgs: orgs, ExpiresAt: ghExpiry})
	fake.AddToken(ghTokFineGrained, githubtest.Token{Type: githubtest.FineGrained, Login: "svc-fine", UserID: 502, Orgs: orgs})
	fake.AddToken(ghTokApp, githubtest.Token{Type: githubtest.AppInstallation, Orgs: orgs[:1], ExpiresAt: ghExpiry})
	fake.AddToken(ghTokRevoked, githubtest.Token{Type: githubtest.Classic, Login: "gone", UserID: 503,
		Faults: []githubtest.Fault{{Kind: githubtest.BadCredentials}}})
	return fake
}

// ghAgent enrolls an agent over the API and runs it with the GitHub job
// kinds, the tokens in its file backend, a policy that sends gh/* to the
// fake's origin only, and the fake's certificate in github.ca_file.
func ghAgent(t *testing.T, cp *controlPlane, fake *githubtest.Server) (*agentProc, string) {
	t.Helper()
	_, token := cp.register("github-agent")
	stateDir := filepath.Join(t.TempDir(), "state")
	id, err := cp.enroll(token, stateDir)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	dir := t.TempDir() // outside what the canary check reads as the store
	secretsFile := map[string]map[string]string{}
	for name, tok := range ghSecrets {
		secretsFile[name] = map[string]string{"username": "octo-bot", "token": tok}
	}
	b, _ := json.Marshal(secretsFile)
	secretsPath := filepath.Join(dir, "secrets.json")
	if err := os.WriteFile(secretsPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	caFile, err := fake.WriteCAFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		ControlPlane: cp.URL(), StateDir: stateDir, InsecureAllowWS: true, Concurrency: 4, DrainGrace: 5 * time.Second,
		Log:     agent.LogConfig{Format: "json", Level: "debug"},
		Secrets: agent.SecretsConfig{File: &agent.FileSecretsConfig{Path: secretsPath}},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindTestConnection), string(protocol.KindListOrganizations)},
			Secrets:  []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: "gh/*", Hosts: []string{fake.URL()}}},
		},
		// The proxy setting is left to the environment, which never
		// proxies loopback addresses.
		GitHub: github.Config{CAFile: caFile, Timeout: 10 * time.Second},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("agent config: %v", err)
	}
	p := &agentProc{t: t, ID: id.AgentID, StateDir: stateDir, frames: &frameLog{}, logs: &lockedBuffer{}, done: make(chan struct{})}
	// Secrets from the config: the real file backend.
	p.Agent, err = agent.New(agent.Options{
		Config: cfg, Identity: id, Logger: newLogger(p.logs), Version: "e2e", Observe: p.frames.observe,
		Backoff: backoff.Options{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	agentEvidence := func() ([]evidence, error) {
		return []evidence{
			p.frames.evidence("frames of agent " + p.ID),
			{name: "log of agent " + p.ID, data: p.logs.Bytes()},
		}, nil
	}
	cp.leaks.add(agentEvidence)
	// The harness checks its canary (ghTokClassic); this checks the other
	// tokens in the same places, after everything stopped.
	ghCheckTokens(t, cp, agentEvidence)
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
	cp.waitAgentStatus(id.AgentID, "online", 10*time.Second)
	return p, dir
}

// ghCheckTokens searches the control plane's evidence (log, API answers,
// store) and the agent's (frames, log) for every token but the harness's
// canary, at the end of the test.
func ghCheckTokens(t *testing.T, cp *controlPlane, agentEvidence func() ([]evidence, error)) {
	t.Helper()
	t.Cleanup(func() {
		var ev []evidence
		for _, src := range []func() ([]evidence, error){cp.evidence, agentEvidence} {
			e, _ := src()
			ev = append(ev, e...)
		}
		for _, e := range ev {
			for _, tok := range ghTokens[1:] {
				if form, ok := redact.Find(e.data, tok); ok {
					t.Errorf("token leaked: %s holds a token as %q", e.name, form)
				}
			}
		}
	})
}

// ghSubmit runs a GitHub job through the API and waits for its end.
func ghSubmit(t *testing.T, cp *controlPlane, agentID string, kind protocol.JobKind, p protocol.Params) protocol.JobView {
	t.Helper()
	var j protocol.JobView
	cp.doJSON(http.MethodPost, "/api/v1/jobs?wait=10s", protocol.SubmitJobRequest{
		AgentID: agentID, Kind: kind, Params: p, Timeout: protocol.Duration(30 * time.Second),
	}, http.StatusCreated, &j)
	if !j.State.Terminal() {
		j = cp.waitJob(j.ID, 20*time.Second)
	}
	return j
}

func ghParams(secret, url string, kind protocol.GitHubKind) protocol.Params {
	return protocol.Params{
		Secret:    &protocol.SecretRef{Backend: protocol.BackendFile, SecretName: secret, UsernameKey: "username", PasswordKey: "token"},
		GitHubURL: url, GitHubKind: kind,
	}
}

func TestGitHubJobsEndToEnd(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode githubtest.Mode
		kind protocol.GitHubKind
	}{
		{"ghes", githubtest.GHES, protocol.GitHubEnterpriseServer},
		{"cloud", githubtest.Cloud, protocol.GitHubCloud},
	} {
		t.Run(mode.name, func(t *testing.T) {
			cp := newControlPlane(t)
			fake := ghFake(t, mode.mode)
			p, _ := ghAgent(t, cp, fake)
			// As a person types it: with /api/v3 for GHES, a trailing slash
			// for the cloud mode's root.
			url := fake.URL() + "/"
			if mode.mode == githubtest.GHES {
				url = fake.URL() + "/api/v3"
			}
			wantVersion := ""
			if mode.mode == githubtest.GHES {
				wantVersion = "3.19.0"
			}

			tests := []struct {
				secret    string
				login     string
				tokenType string
				listable  bool
				scopes    []string
				missing   []string
				orgs      []string
				expires   bool
			}{
				{secret: "gh/classic", login: "svc-orchestrator", tokenType: github.TokenClassic, listable: true,
					scopes:  []string{"notifications", "read:org", "read:packages", "repo", "workflow"},
					missing: []string{"write:packages", "delete:packages", "admin:org", "manage_runners:org", "user", "delete_repo", "admin:enterprise", "audit_log", "codespace", "project"},
					orgs:    []string{"platform", "payments"}, expires: true},
				{secret: "gh/fine", login: "svc-fine", tokenType: github.TokenFineGrained},
				{secret: "gh/app", tokenType: github.TokenApp, orgs: []string{"platform"}, expires: true},
			}
			for _, tt := range tests {
				j := ghSubmit(t, cp, p.ID, protocol.KindTestConnection, ghParams(tt.secret, url, mode.kind))
				if j.State != protocol.JobSucceeded || j.Result == nil || j.Result.Connection == nil {
					t.Fatalf("%s: test_connection %s: %+v", tt.secret, j.State, j.Error)
				}
				c := j.Result.Connection
				if c.APIURL != fake.APIURL() || c.GHESVersion != wantVersion || c.Login != tt.login || c.TokenType != tt.tokenType || c.ScopesListable != tt.listable {
					t.Errorf("%s: api %q version %q login %q type %q listable %v; want %q %q %q %q %v", tt.secret,
						c.APIURL, c.GHESVersion, c.Login, c.TokenType, c.ScopesListable, fake.APIURL(), wantVersion, tt.login, tt.tokenType, tt.listable)
				}
				if !slices.Equal(c.Scopes, tt.scopes) || !slices.Equal(c.MissingScopes, tt.missing) {
					t.Errorf("%s: scopes %q missing %q; want %q and %q", tt.secret, c.Scopes, c.MissingScopes, tt.scopes, tt.missing)
				}
				var orgs []string
				for _, o := range c.Organizations {
					orgs = append(orgs, o.Login)
				}
				if !slices.Equal(orgs, tt.orgs) {
					t.Errorf("%s: organizations %q, want %q", tt.secret, orgs, tt.orgs)
				}
				if tt.expires != (c.TokenExpiresAt != nil) || (tt.expires && !c.TokenExpiresAt.Equal(ghExpiry)) {
					t.Errorf("%s: token expiry %v, want %v", tt.secret, c.TokenExpiresAt, tt.expires)
				}
				for _, step := range []string{"secret", "github"} {
					if _, ok := c.Timings[step]; !ok {
						t.Errorf("%s: timings %v lack %q", tt.secret, c.Timings, step)
					}
				}
				if mode.mode == githubtest.GHES && tt.secret == "gh/classic" {
					b, _ := json.MarshalIndent(j.Result, "", "  ")
					t.Logf("sample test_connection result:\n%s", b)
				}

				lj := ghSubmit(t, cp, p.ID, protocol.KindListOrganizations, ghParams(tt.secret, url, mode.kind))
				if lj.State != protocol.JobSucceeded || lj.Result == nil || lj.Result.Organizations == nil {
					t.Fatalf("%s: list_organizations %s: %+v", tt.secret, lj.State, lj.Error)
				}
				var listed []string
				for _, o := range lj.Result.Organizations.Organizations {
					listed = append(listed, o.Login)
				}
				if !slices.Equal(listed, tt.orgs) {
					t.Errorf("%s: list_organizations %q, want %q", tt.secret, listed, tt.orgs)
				}
			}

			// The classic account sees octo-sso only after SSO: the API says so.
			j := ghSubmit(t, cp, p.ID, protocol.KindTestConnection, func() protocol.Params {
				pp := ghParams("gh/classic", url, mode.kind)
				pp.Organization = "octo-sso"
				return pp
			}())
			ghWantError(t, j, protocol.CodeGitHubSSORequired, "octo-sso", "/orgs/octo-sso/sso?authorization_request=")

			// A revoked token, and a host the policy does not list.
			j = ghSubmit(t, cp, p.ID, protocol.KindTestConnection, ghParams("gh/revoked", url, mode.kind))
			ghWantError(t, j, protocol.CodeGitHubBadCredentials, "401")
			j = ghSubmit(t, cp, p.ID, protocol.KindListOrganizations, ghParams("gh/classic", strings.Replace(fake.URL(), "127.0.0.1", "localhost", 1), mode.kind))
			ghWantError(t, j, protocol.CodeHostNotAllowed, "policy.secrets[0].hosts")

			// What reached the fake: authenticated calls only to paths GitHub
			// describes; nothing at the redirect target.
			for _, r := range fake.Requests() {
				if r.Template == "" {
					t.Errorf("the agent called %s %s", r.Method, r.Path)
				}
			}
			if n := len(fake.ElsewhereRequests()); n != 0 {
				t.Errorf("the other host got %d requests", n)
			}
			// The job's log line names the GitHub host.
			host := strings.TrimPrefix(fake.URL(), "https://")
			if !hasLog(p.logs.Bytes(), "job done", map[string]string{"github_host": host, "kind": string(protocol.KindTestConnection)}) {
				t.Errorf("no job done line with github_host %s", host)
			}
			// Every result frame went out without a token (the canary
			// checks say so for all of them; here: there were some).
			if n := len(p.frames.messages("out", protocol.TypeResult)); n < 9 {
				t.Errorf("only %d result frames", n)
			}
		})
	}
}

func ghWantError(t *testing.T, j protocol.JobView, code protocol.ErrorCode, want ...string) {
	t.Helper()
	if j.State != protocol.JobFailed || j.Error == nil || j.Error.Code != code {
		t.Fatalf("job %s: %s %+v, want failed with %s", j.ID, j.State, j.Error, code)
	}
	for _, w := range want {
		if !strings.Contains(j.Error.Message, w) {
			t.Errorf("job %s: message %q lacks %q", j.ID, j.Error.Message, w)
		}
	}
}

// TestGitHubTokenNeverFollowsRedirect: a GitHub that redirects to another
// host gets a github_not_found job, and the other host gets nothing.
func TestGitHubTokenNeverFollowsRedirect(t *testing.T) {
	cp := newControlPlane(t)
	fake := ghFake(t, githubtest.GHES)
	fake.AddToken(ghTokClassic, githubtest.Token{Type: githubtest.Classic, Login: "svc-orchestrator", UserID: 501, Scopes: []string{"repo"},
		Faults: []githubtest.Fault{{Kind: githubtest.RedirectElsewhere}}})
	p, _ := ghAgent(t, cp, fake)
	j := ghSubmit(t, cp, p.ID, protocol.KindTestConnection, ghParams("gh/classic", fake.URL(), protocol.GitHubEnterpriseServer))
	ghWantError(t, j, protocol.CodeGitHubNotFound, "redirect to "+fake.Elsewhere.URL, "never follows a redirect to another host with credentials")
	for _, r := range fake.ElsewhereRequests() {
		t.Errorf("the other host got %s %s (with an Authorization header: %v)", r.Method, r.Path, r.Authorization != "")
	}
}
