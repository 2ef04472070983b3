package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/protocol"
)

// githubAgent is an Agent (not connected) whose policy sends the file
// secrets ci/* to a fake GHES, and whose github.ca_file trusts it. The
// secret ci/github holds the canary, which the fake knows as a classic
// token.
func githubAgent(t *testing.T) (*Agent, *githubtest.Server, *gateBackend, *recorder) {
	t.Helper()
	fake := githubtest.New(githubtest.Options{Mode: githubtest.GHES})
	t.Cleanup(fake.Close)
	fake.AddToken(canary, githubtest.Token{Type: githubtest.Classic, Login: "svc-agent", UserID: 7,
		Scopes: []string{"repo", "read:org"}, Orgs: []githubtest.Org{{Login: "platform", ID: 1001}}})
	ca, err := fake.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := writeSecretsFile(t)
	cfg := Config{
		ControlPlane: "http://127.0.0.1:1", InsecureAllowWS: true, StateDir: t.TempDir(), Concurrency: 2, DrainGrace: time.Second,
		Log:     LogConfig{Format: "json", Level: "debug"},
		Secrets: SecretsConfig{File: &FileSecretsConfig{Path: path}},
		Policy: policy.Config{
			JobKinds: []string{"test_connection", "list_organizations"},
			Secrets: []policy.SecretRule{
				{Backend: protocol.BackendFile, SecretName: "ci/*", Hosts: []string{fake.URL(), "http://localhost:8080"}},
				{Backend: protocol.BackendFile, SecretName: "other/*"},
			},
			AllowHTTPHosts: []string{"localhost:8080"},
		},
		GitHub: github.Config{CAFile: ca, Proxy: github.ProxyDirect},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	backend := newGateBackend(t, path)
	logs := &recorder{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logs), zapcore.DebugLevel))
	a, err := New(Options{Config: cfg, Identity: testIdentity(t, "agt_github"), Secrets: secrets.NewSet(backend), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.github.Close()
		checkNoCanary(t, "an agent log line", logs)
	})
	return a, fake, backend, logs
}

func githubJob(id string, kind protocol.JobKind, secretName, url string) *protocol.Job {
	return &protocol.Job{JobID: id, Kind: kind, Attempt: 1, Deadline: time.Now().Add(30 * time.Second), Params: protocol.Params{
		Secret:     &protocol.SecretRef{Backend: protocol.BackendFile, SecretName: secretName, PasswordKey: "token"},
		GitHubURL:  url,
		GitHubKind: protocol.GitHubEnterpriseServer,
	}}
}

// TestGitHubPolicyBeforeSecret: every refusal comes before the secret is
// read.
func TestGitHubPolicyBeforeSecret(t *testing.T) {
	t.Parallel()
	a, fake, backend, _ := githubAgent(t)
	tests := []struct {
		name   string
		job    *protocol.Job
		code   protocol.ErrorCode
		expect string
	}{
		{name: "secret not allowed", job: githubJob("j1", protocol.KindTestConnection, "prod/github", fake.URL()),
			code: protocol.CodeSecretNotAllowed, expect: "policy.secrets"},
		{name: "host not allowed", job: githubJob("j2", protocol.KindTestConnection, "ci/github", "https://git.example.com"),
			code: protocol.CodeHostNotAllowed, expect: `add "https://git.example.com" to policy.secrets[0].hosts`},
		{name: "lookalike host", job: githubJob("j3", protocol.KindListOrganizations, "ci/github", strings.Replace(fake.URL(), "127.0.0.1", "127.0.0.1.evil.com", 1)),
			code: protocol.CodeHostNotAllowed},
		{name: "secret sent nowhere", job: githubJob("j4", protocol.KindTestConnection, "other/x", fake.URL()),
			code: protocol.CodeHostNotAllowed, expect: "policy.secrets[1].hosts"},
		{name: "plain http not allowed", job: githubJob("j5", protocol.KindTestConnection, "ci/github", strings.Replace(fake.URL(), "https", "http", 1)),
			code: protocol.CodeHostNotAllowed, expect: "policy.allow_http_hosts"},
		{name: "a page, not the instance", job: githubJob("j6", protocol.KindTestConnection, "ci/github", fake.URL()+"/orgs/platform"),
			code: protocol.CodeInvalidParams, expect: "params.github_url"},
		{name: "organization that would change the path", job: func() *protocol.Job {
			j := githubJob("j7", protocol.KindTestConnection, "ci/github", fake.URL())
			j.Params.Organization = "../user"
			return j
		}(), code: protocol.CodeInvalidParams, expect: "params.organization"},
	}
	for _, tt := range tests {
		h := a.handlers[tt.job.Kind]
		_, err := h(testCtx(t), zap.NewNop(), tt.job)
		pe, ok := err.(*protocol.Error)
		if !ok || pe.Code != tt.code || !strings.Contains(pe.Message, tt.expect) {
			t.Errorf("%s: err = %v, want %s with %q", tt.name, err, tt.code, tt.expect)
		}
	}
	if n := backend.calls.Load(); n != 0 {
		t.Errorf("the secret was read %d times for jobs the policy refuses", n)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("GitHub got %d requests for jobs the policy refuses", n)
	}
}

// TestGitHubJobsThroughRunner runs both kinds through the runner: the
// result, the secret step's timing, and the job's log line with
// github_host.
func TestGitHubJobsThroughRunner(t *testing.T) {
	t.Parallel()
	a, fake, backend, logs := githubAgent(t)
	results := make(chan protocol.Result, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newRunner(ctx, 2, a.handlers, a.policy.CheckKind, func(res protocol.Result) { results <- res }, a.log.Named("runner"))
	defer r.stop()
	for _, j := range []*protocol.Job{
		githubJob("job_tc", protocol.KindTestConnection, "ci/github", fake.URL()+"/api/v3/"),
		githubJob("job_lo", protocol.KindListOrganizations, "ci/github", fake.URL()),
	} {
		reply, start := r.submit(j)
		if reply == nil || reply.Type != protocol.TypeAccepted || start == nil {
			t.Fatalf("submit %s: %+v", j.JobID, reply)
		}
		start()
	}
	got := map[string]protocol.Result{}
	for range 2 {
		select {
		case res := <-results:
			got[res.JobID] = res
		case <-time.After(20 * time.Second):
			t.Fatal("no result")
		}
	}
	tc := got["job_tc"]
	if !tc.OK || tc.Output.Connection == nil {
		t.Fatalf("test_connection: %+v %v", tc, tc.Error)
	}
	c := tc.Output.Connection
	if c.Login != "svc-agent" || c.GHESVersion != "3.19.0" || c.TokenType != github.TokenClassic || c.APIURL != fake.APIURL() {
		t.Errorf("connection = %+v", c)
	}
	if _, ok := c.Timings["secret"]; !ok {
		t.Errorf("timings %v lack the secret step", c.Timings)
	}
	lo := got["job_lo"]
	if !lo.OK || len(lo.Output.Organizations.Organizations) != 1 {
		t.Fatalf("list_organizations: %+v %v", lo, lo.Error)
	}
	if backend.calls.Load() != 2 {
		t.Errorf("the secret was read %d times, want 2", backend.calls.Load())
	}
	host := strings.TrimPrefix(fake.URL(), "https://")
	if !logs.contains(`"msg":"job done"`) || !logs.contains(`"github_host":"`+host+`"`) {
		t.Errorf("no job done line with github_host %s", host)
	}
	if !logs.contains(`"msg":"github call","job_id":"job_tc"`) && !logs.contains(`"path":"/api/v3/user"`) {
		t.Errorf("no debug line per GitHub call")
	}
}

func TestGitHubHost(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"":                                  "",
		"https://Git.Example.com/api/v3":    "git.example.com",
		"https://git.example.com:8443":      "git.example.com:8443",
		"http://localhost:8080":             "localhost:8080",
		"https://bot:" + canary + "@x.com/": "",
		"not a url":                         "",
	} {
		if got := githubHost(raw); got != want {
			t.Errorf("githubHost(%q) = %q, want %q", raw, got, want)
		}
	}
}
