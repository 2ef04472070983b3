package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

// The tests of this file run resolve_credentials end to end with the AWS
// and the Azure backend: the real control plane and its HTTP API, a real
// agent over a real websocket, and the real SDK clients talking to the fake
// secret managers of secretstest. The fakes hold the harness's canary,
// which the harness searches for in the API answers, the frames, the logs
// (debug level) and the control plane's store at the end of each test.

// backendAgent is a running agent with prebuilt secret backends.
type backendAgent struct {
	id     string
	frames *frameLog
	logs   *lockedBuffer
}

// backendStartAgent registers and enrolls an agent over the API and runs it
// with the secret backends build makes (given the agent's logger) and a
// policy of rules, until the end of the test.
func backendStartAgent(t *testing.T, cp *controlPlane, name string, rules []policy.SecretRule, build func(log *zap.Logger) *secrets.Set) *backendAgent {
	t.Helper()
	_, token := cp.register(name)
	stateDir := filepath.Join(t.TempDir(), "state")
	id, err := cp.enroll(token, stateDir)
	if err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	cfg := agent.Config{
		ControlPlane: cp.URL(), StateDir: stateDir, InsecureAllowWS: true, Concurrency: 4, DrainGrace: 5 * time.Second,
		Log: agent.LogConfig{Format: "json", Level: "debug"},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindResolveCredentials)},
			Secrets:  rules,
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("agent config: %v", err)
	}
	p := &backendAgent{id: id.AgentID, frames: &frameLog{}, logs: &lockedBuffer{}}
	log := newLogger(p.logs)
	a, err := agent.New(agent.Options{
		Config: cfg, Identity: id, Secrets: build(log.Named("secrets")), Logger: log,
		Version: "e2e", Observe: p.frames.observe,
		Backoff: backoff.Options{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	cp.leaks.add(func() ([]evidence, error) {
		return []evidence{
			p.frames.evidence("frames of agent " + p.id),
			{name: "log of agent " + p.id, data: p.logs.Bytes()},
		}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		a.Abort()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("agent %s: Run did not return within 10s of Abort", p.id)
		}
		if t.Failed() {
			t.Logf("agent %s log:\n%s", p.id, tail(p.logs.String(), 20000))
		}
	})
	return p
}

// backendResolve submits resolve_credentials for ref through the API and
// waits for it to end. It returns the job and the API's answer as sent.
func backendResolve(t *testing.T, cp *controlPlane, agentID string, ref protocol.SecretRef) (protocol.JobView, []byte) {
	t.Helper()
	status, body := cp.do(http.MethodPost, "/api/v1/jobs?wait=10s", protocol.SubmitJobRequest{
		AgentID: agentID, Kind: protocol.KindResolveCredentials, Params: protocol.Params{Secret: &ref}, Timeout: protocol.Duration(jobTimeout),
	})
	if status != http.StatusCreated {
		t.Fatalf("submit: status %d: %s", status, body)
	}
	var j protocol.JobView
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatalf("decode the job: %v: %s", err, body)
	}
	if !j.State.Terminal() {
		t.Fatalf("job %s is still %s after the wait", j.ID, j.State)
	}
	if form, leaked := redact.Find(body, canary); leaked {
		t.Fatalf("the API answer holds the canary as %q: %s", form, body)
	}
	return j, body
}

// backendCheckSucceeded checks a succeeded resolve_credentials job's output.
func backendCheckSucceeded(t *testing.T, j protocol.JobView, ref protocol.SecretRef, version string, created time.Time) {
	t.Helper()
	if j.State != protocol.JobSucceeded || j.Result == nil || j.Result.Credentials == nil {
		t.Fatalf("job %s: state %s, error %v, result %+v; want succeeded with credentials", j.ID, j.State, j.Error, j.Result)
	}
	c := j.Result.Credentials
	if c.Backend != ref.Backend || c.Reference != ref {
		t.Errorf("output names %s %+v, want %s %+v", c.Backend, c.Reference, ref.Backend, ref)
	}
	if want := []string{"username", "password"}; !slices.Equal(c.KeysFound, want) {
		t.Errorf("keys_found = %q, want %q", c.KeysFound, want)
	}
	if c.VersionID != version {
		t.Errorf("version_id = %q, want %q", c.VersionID, version)
	}
	if c.VersionCreated == nil || !c.VersionCreated.Equal(created) {
		t.Errorf("version_created = %v, want %v", c.VersionCreated, created)
	}
	if !strings.HasPrefix(c.Fingerprint, "hmac-sha256:") || len(c.Fingerprint) != len("hmac-sha256:")+24 {
		t.Errorf("fingerprint %q is not hmac-sha256:<24 hex>", c.Fingerprint)
	}
}

// backendCheckFailed checks a failed job's error.
func backendCheckFailed(t *testing.T, j protocol.JobView, code protocol.ErrorCode, want ...string) {
	t.Helper()
	if j.State != protocol.JobFailed || j.Error == nil || j.Error.Code != code {
		t.Fatalf("job %s: state %s, error %v; want failed with %s", j.ID, j.State, j.Error, code)
	}
	for _, w := range want {
		if !strings.Contains(j.Error.Message, w) {
			t.Errorf("error message %q, want it to contain %q", j.Error.Message, w)
		}
	}
}

// backendCheckResultFrame checks that the agent sent the job's result, and
// that the control plane acknowledged it.
func backendCheckResultFrame(t *testing.T, p *backendAgent, jobID string) {
	t.Helper()
	eventually(t, 5*time.Second, "the result of "+jobID+" to be sent and acknowledged", func() bool {
		return p.frames.count("out", protocol.TypeResult, jobID) >= 1 && p.frames.count("in", protocol.TypeResultAck, jobID) >= 1
	})
}

func TestBackendAWSEndToEnd(t *testing.T) {
	t.Parallel()
	created := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: `{"username": "octo-bot", "token": "` + canary + `"}`, VersionID: "v-42", Created: created})
	fake.Put(secretstest.AWSSecret{Name: "ci/other", String: `{"username": "octo-bot", "token": "` + canary + `"}`})
	cp := newControlPlane(t)
	p := backendStartAgent(t, cp, "aws-agent",
		[]policy.SecretRule{{Backend: protocol.BackendAWS, SecretName: "ci/github"}},
		func(log *zap.Logger) *secrets.Set {
			b, err := secrets.NewAWS(context.Background(), secrets.AWSConfig{Region: fake.Region, Endpoint: fake.URL, MaxBackoff: 10 * time.Millisecond}, secrets.AWSOptions{
				Credentials: credentials.NewStaticCredentialsProvider(secretstest.AWSAccessKeyID, secretstest.AWSSecretAccessKey, ""),
				HTTPClient:  fake.Client(),
				Logger:      log.Named("aws"),
			})
			if err != nil {
				t.Fatalf("NewAWS: %v", err)
			}
			return secrets.NewSet(secrets.NewCache(b, secrets.CacheOptions{Logger: log}))
		})
	view := cp.waitAgentStatus(p.id, protocol.AgentOnline, 10*time.Second)
	if len(view.Backends) != 1 || view.Backends[0].Name != "aws" || view.Backends[0].Settings["region"] != "us-east-1" {
		t.Errorf("the API shows the agent's backends as %+v, want aws with region us-east-1", view.Backends)
	}

	ref := protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"}
	j, _ := backendResolve(t, cp, p.id, ref)
	backendCheckSucceeded(t, j, ref, "v-42", created)
	backendCheckResultFrame(t, p, j.ID)
	if fake.Calls() != 1 {
		t.Errorf("the fake got %d calls, want 1", fake.Calls())
	}
	// The operator sees the backend, the reference and the outcome.
	if !hasLog(p.logs.Bytes(), "job done", map[string]string{"job_id": j.ID, "backend": "aws", "secret_ref": "aws:ci/github", "ok": "true"}) ||
		!hasLog(p.logs.Bytes(), "secret manager call", map[string]string{"backend": "aws", "secret_ref": "aws:ci/github", "outcome": "ok"}) {
		t.Errorf("the agent's log lacks the job's backend, reference and outcome:\n%s", tail(p.logs.String(), 5000))
	}

	// Outside the policy: refused before any call.
	j, _ = backendResolve(t, cp, p.id, protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: "ci/other", PasswordKey: "token"})
	backendCheckFailed(t, j, protocol.CodeSecretNotAllowed, "policy.secrets")
	if fake.Calls() != 1 {
		t.Errorf("a refused reference made calls: the fake got %d, want 1", fake.Calls())
	}

	// The secret manager refuses: the code and an actionable message.
	fake.FailAlways(secretstest.AWSError{Status: 400, Type: "AccessDeniedException",
		Message: "User: arn:aws:sts::111122223333:assumed-role/agent/i-0abc is not authorized to perform: secretsmanager:GetSecretValue on resource: ci/github because no identity-based policy allows the secretsmanager:GetSecretValue action"})
	j, _ = backendResolve(t, cp, p.id, ref)
	backendCheckFailed(t, j, protocol.CodeSecretAccessDenied, "arn:aws:sts::111122223333:assumed-role/agent/i-0abc", "secretsmanager:GetSecretValue")
	if !hasLog(p.logs.Bytes(), "job done", map[string]string{"job_id": j.ID, "backend": "aws", "error_code": "secret_access_denied"}) {
		t.Errorf("the agent's log lacks the failed job's outcome")
	}
}

func TestBackendAzureEndToEnd(t *testing.T) {
	t.Parallel()
	created := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	fake := secretstest.NewKeyVault(t)
	fake.Put(secretstest.KeyVaultSecret{Name: "gh-user", Value: "octo-bot"})
	pat := fake.Put(secretstest.KeyVaultSecret{Name: "gh-pat", Value: canary, Created: created})
	fake.Put(secretstest.KeyVaultSecret{Name: "other-pat", Value: canary})
	cred := &secretstest.TokenCredential{TenantID: secretstest.AzureTenantID}
	cp := newControlPlane(t)
	p := backendStartAgent(t, cp, "azure-agent",
		[]policy.SecretRule{{Backend: protocol.BackendAzure, VaultName: "platform-kv", SecretName: "gh-*"}},
		func(log *zap.Logger) *secrets.Set {
			b, err := secrets.NewAzure(secrets.AzureConfig{MaxBackoff: 10 * time.Millisecond}, secrets.AzureOptions{
				Credential: cred, Transport: fake.Client(),
				VaultURL:                             func(string) string { return fake.URL },
				DisableChallengeResourceVerification: true, // the fake is on 127.0.0.1, not a Key Vault domain
				Logger:                               log.Named("azure"),
			})
			if err != nil {
				t.Fatalf("NewAzure: %v", err)
			}
			return secrets.NewSet(secrets.NewCache(b, secrets.CacheOptions{Logger: log}))
		})
	view := cp.waitAgentStatus(p.id, protocol.AgentOnline, 10*time.Second)
	if len(view.Backends) != 1 || view.Backends[0].Name != "azure" || view.Backends[0].Settings["cloud"] != "public" ||
		view.Backends[0].Settings["credential"] != "managed_identity" {
		t.Errorf("the API shows the agent's backends as %+v, want azure, public, managed_identity", view.Backends)
	}

	ref := protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: "platform-kv", UsernameSecret: "gh-user", PasswordSecret: "gh-pat"}
	j, _ := backendResolve(t, cp, p.id, ref)
	backendCheckSucceeded(t, j, ref, pat.Version, created)
	backendCheckResultFrame(t, p, j.ID)
	if p := cred.Problems(); len(p) > 0 {
		t.Errorf("the credential was asked wrongly: %q", p)
	}
	calls := fake.Calls()
	if calls != 3 { // the challenge, then the two secrets
		t.Errorf("the fake got %d requests, want 3", calls)
	}
	if !hasLog(p.logs.Bytes(), "job done", map[string]string{"job_id": j.ID, "backend": "azure", "secret_ref": "azure:platform-kv/gh-pat", "ok": "true"}) ||
		!hasLog(p.logs.Bytes(), "secret manager call", map[string]string{"backend": "azure", "secret_ref": "azure:platform-kv/gh-pat", "outcome": "ok"}) {
		t.Errorf("the agent's log lacks the job's backend, reference and outcome:\n%s", tail(p.logs.String(), 5000))
	}

	// Outside the policy: refused before any call.
	for _, r := range []protocol.SecretRef{
		{Backend: protocol.BackendAzure, VaultName: "platform-kv", PasswordSecret: "other-pat"},
		{Backend: protocol.BackendAzure, VaultName: "other-kv", PasswordSecret: "gh-pat"},
	} {
		j, _ = backendResolve(t, cp, p.id, r)
		backendCheckFailed(t, j, protocol.CodeSecretNotAllowed, "policy.secrets")
	}
	if fake.Calls() != calls {
		t.Errorf("refused references made calls: the fake got %d, want %d", fake.Calls(), calls)
	}

	// The vault refuses: the code and an actionable message.
	fake.FailAlways(secretstest.Forbidden())
	j, _ = backendResolve(t, cp, p.id, ref)
	backendCheckFailed(t, j, protocol.CodeSecretAccessDenied, "oid="+secretstest.AzureObjectID, "Key Vault Secrets User role on the vault platform-kv")

	// A secret the vault does not have.
	fake.Fail(nil)
	j, _ = backendResolve(t, cp, p.id, protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: "platform-kv", PasswordSecret: "gh-missing"})
	backendCheckFailed(t, j, protocol.CodeSecretNotFound, "the Key Vault platform-kv has no secret gh-missing")
}
