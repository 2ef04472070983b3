package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

// The tests of this file run resolve_credentials with the AWS and Azure
// backends against the fake servers of secretstest, and the config of
// those backends.

const backendCanary = "canary-3b9e1f07-backends-SECRET"

// backendAgent is an Agent (not connected) whose secret backends are the
// real AWS and Azure backends in front of fakes, and whose policy allows
// only aws:ci/allowed and the secrets gh-* of the vault platform-kv.
func backendAgent(t *testing.T) (*Agent, *secretstest.AWS, *secretstest.KeyVault) {
	t.Helper()
	awsFake := secretstest.NewAWS(t)
	for _, name := range []string{"ci/allowed", "ci/other"} {
		awsFake.Put(secretstest.AWSSecret{Name: name, String: `{"username": "bot", "token": "` + backendCanary + `"}`, VersionID: "v-7"})
	}
	kv := secretstest.NewKeyVault(t)
	kv.Put(secretstest.KeyVaultSecret{Name: "gh-user", Value: "bot"})
	for _, name := range []string{"gh-pat", "other-pat"} {
		kv.Put(secretstest.KeyVaultSecret{Name: name, Value: backendCanary})
	}
	awsBackend, err := secrets.NewAWS(context.Background(), secrets.AWSConfig{Region: awsFake.Region, Endpoint: awsFake.URL}, secrets.AWSOptions{
		Credentials: credentials.NewStaticCredentialsProvider(secretstest.AWSAccessKeyID, secretstest.AWSSecretAccessKey, ""),
		HTTPClient:  awsFake.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	azureBackend, err := secrets.NewAzure(secrets.AzureConfig{}, secrets.AzureOptions{
		Credential: &secretstest.TokenCredential{}, Transport: kv.Client(),
		VaultURL: func(string) string { return kv.URL }, DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	fp := make([]byte, 32)
	rand.Read(seed)
	rand.Read(fp)
	a, err := New(Options{
		Config: Config{
			ControlPlane: "http://127.0.0.1:1", InsecureAllowWS: true, StateDir: t.TempDir(), Concurrency: 1,
			Policy: policy.Config{
				JobKinds: []string{string(protocol.KindResolveCredentials)},
				Secrets: []policy.SecretRule{
					{Backend: protocol.BackendAWS, SecretName: "ci/allowed"},
					{Backend: protocol.BackendAzure, VaultName: "platform-kv", SecretName: "gh-*"},
				},
			},
		},
		Identity: Identity{AgentID: "agt_backends", PrivateKey: seed, FingerprintKey: fp},
		Secrets:  secrets.NewSet(secrets.NewCache(awsBackend, secrets.CacheOptions{}), secrets.NewCache(azureBackend, secrets.CacheOptions{})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Abort)
	return a, awsFake, kv
}

func backendJob(ref protocol.SecretRef) *protocol.Job {
	return &protocol.Job{JobID: "job_1", Kind: protocol.KindResolveCredentials, Attempt: 1,
		Deadline: time.Now().Add(time.Minute), Params: protocol.Params{Secret: &ref}}
}

// TestBackendPolicyRefusalMakesNoCall: a reference outside the policy is
// refused before any call to AWS or Azure.
func TestBackendPolicyRefusalMakesNoCall(t *testing.T) {
	t.Parallel()
	a, awsFake, kv := backendAgent(t)
	refs := []protocol.SecretRef{
		{Backend: protocol.BackendAWS, SecretName: "ci/other", PasswordKey: "token"},
		{Backend: protocol.BackendAWS, SecretName: "arn:aws:secretsmanager:us-east-1:111122223333:secret:ci/allowed-AbCdEf", PasswordKey: "token"},
		{Backend: protocol.BackendAzure, VaultName: "other-kv", PasswordSecret: "gh-pat"},
		{Backend: protocol.BackendAzure, VaultName: "platform-kv", PasswordSecret: "other-pat"},
		{Backend: protocol.BackendAzure, VaultName: "platform-kv", UsernameSecret: "other-pat", PasswordSecret: "gh-pat"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ref := range refs {
		out, err := a.handlers[protocol.KindResolveCredentials](ctx, zap.NewNop(), backendJob(ref))
		var pe *protocol.Error
		if !errors.As(err, &pe) || pe.Code != protocol.CodeSecretNotAllowed || out != nil {
			t.Errorf("%s: got %v, %v; want secret_not_allowed", ref, out, err)
			continue
		}
		if !strings.Contains(pe.Message, "policy.secrets") {
			t.Errorf("%s: the refusal does not name the setting: %s", ref, pe.Message)
		}
	}
	if awsFake.Calls() != 0 || kv.Calls() != 0 {
		t.Errorf("refused references made calls: AWS %d, Key Vault %d; want 0", awsFake.Calls(), kv.Calls())
	}
}

// TestBackendResolveCredentials: allowed references resolve, and the
// output holds the metadata and a fingerprint, never the value.
func TestBackendResolveCredentials(t *testing.T) {
	t.Parallel()
	a, awsFake, kv := backendAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		ref         protocol.SecretRef
		wantVersion string
	}{
		{protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: "ci/allowed", UsernameKey: "username", PasswordKey: "token"}, "v-7"},
		{protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: "platform-kv", UsernameSecret: "gh-user", PasswordSecret: "gh-pat"}, ""},
	}
	var prints []string
	for _, tt := range tests {
		out, err := a.handlers[protocol.KindResolveCredentials](ctx, zap.NewNop(), backendJob(tt.ref))
		if err != nil {
			t.Fatalf("%s: %v", tt.ref, err)
		}
		c := out.Credentials
		if c.Backend != tt.ref.Backend || c.Reference != tt.ref || !slices.Equal(c.KeysFound, []string{"username", "password"}) ||
			c.VersionCreated == nil || !strings.HasPrefix(c.Fingerprint, "hmac-sha256:") || (tt.wantVersion != "" && c.VersionID != tt.wantVersion) || c.VersionID == "" {
			t.Errorf("%s: output %+v", tt.ref, c)
		}
		b, err := protocol.Encode(&protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{JobID: "job_1", Attempt: 1, OK: true, Output: out}})
		if err != nil {
			t.Fatal(err)
		}
		if form, leaked := redact.Find(b, backendCanary); leaked {
			t.Errorf("the result frame leaks the canary as %q: %s", form, b)
		}
		prints = append(prints, c.Fingerprint)
	}
	// The same username and token in both stores: the same fingerprint.
	if prints[0] != prints[1] {
		t.Errorf("fingerprints %q differ for equal credentials", prints)
	}
	if awsFake.Calls() != 1 || kv.Calls() != 3 {
		t.Errorf("calls: AWS %d, Key Vault %d; want 1 and 3 (challenge, two secrets)", awsFake.Calls(), kv.Calls())
	}
}

func backendWriteConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBackendConfig(t *testing.T) {
	t.Parallel()
	const base = "control_plane: https://cp.example.com\n"
	getenv := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	c, err := LoadConfig(backendWriteConfig(t, base+`secrets:
  cache_ttl: 30s
  aws:
    region: eu-west-1
    role_arn: arn:aws:iam::111122223333:role/reader
    external_id: x-1
    endpoint: https://vpce-1.secretsmanager.eu-west-1.vpce.amazonaws.com
    max_attempts: 4
    max_backoff: 500ms
  azure:
    credential: managed_identity
    client_id: 4c1d2f3e-0000-4000-8000-000000000001
    cloud: usgov
`), getenv(nil))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	aws, az := c.Secrets.AWS, c.Secrets.Azure
	if aws == nil || aws.Region != "eu-west-1" || aws.RoleARN == "" || aws.ExternalID != "x-1" || aws.MaxAttempts != 4 || aws.MaxBackoff != 500*time.Millisecond ||
		az == nil || az.Cloud != "usgov" || az.ClientID == "" || c.Secrets.CacheTTL != 30*time.Second {
		t.Errorf("secrets = %+v, aws %+v, azure %+v", c.Secrets, aws, az)
	}

	c, err = LoadConfig(backendWriteConfig(t, base+"secrets:\n  aws:\n    region: eu-west-1\n"), getenv(map[string]string{
		"AGENT_AWS_REGION": "us-east-2", "AGENT_AWS_ENDPOINT": "http://127.0.0.1:4566", "AGENT_AWS_PROFILE": "ra",
		"AGENT_AZURE_CLOUD": "china", "AGENT_AZURE_CREDENTIAL": "default", "AGENT_SECRETS_CACHE_TTL": "1m",
	}))
	if err != nil {
		t.Fatalf("LoadConfig with the environment: %v", err)
	}
	if c.Secrets.AWS.Region != "us-east-2" || c.Secrets.AWS.Endpoint != "http://127.0.0.1:4566" || c.Secrets.AWS.Profile != "ra" ||
		c.Secrets.Azure == nil || c.Secrets.Azure.Cloud != "china" || c.Secrets.Azure.Credential != "default" || c.Secrets.CacheTTL != time.Minute {
		t.Errorf("env over file: aws %+v, azure %+v, cache_ttl %s", c.Secrets.AWS, c.Secrets.Azure, c.Secrets.CacheTTL)
	}

	for _, tt := range []struct {
		yaml string
		env  map[string]string
		want string
	}{
		{yaml: "secrets:\n  aws: {}\n", want: "secrets.aws.region: required"},
		{yaml: "secrets:\n  aws:\n    region: eu-west-1\n    endpoint: http://sm.example.com\n", want: "secrets.aws.endpoint:"},
		{yaml: "secrets:\n  aws:\n    region: eu-west-1\n    secret_access_key: x\n", want: "secret_access_key"},
		{yaml: "secrets:\n  azure:\n    credential: password\n", want: "secrets.azure.credential:"},
		{yaml: "secrets:\n  azure:\n    cloud: mars\n", want: "secrets.azure.cloud:"},
		{yaml: "secrets:\n  azure:\n    client_secret: x\n", want: "client_secret"},
		{yaml: "secrets:\n  cache_ttl: 2h\n", want: "secrets.cache_ttl: 2h0m0s is outside 0s..15m0s"},
		{env: map[string]string{"AGENT_AWS_ENDPOINT": "https://x.example.com"}, want: "secrets.aws.region: required"},
		{env: map[string]string{"AGENT_SECRETS_CACHE_TTL": "soon"}, want: "AGENT_SECRETS_CACHE_TTL"},
	} {
		_, err := LoadConfig(backendWriteConfig(t, base+tt.yaml), getenv(tt.env))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadConfig(%q, %v) = %v, want an error containing %q", tt.yaml, tt.env, err, tt.want)
		}
	}
}

// TestBackendSecretsFromConfig builds the Azure backend from the config
// (no call to Azure is made) behind the cache. The AWS backend is built
// the same way, but it reads the AWS configuration of the machine, which
// tests never do.
func TestBackendSecretsFromConfig(t *testing.T) {
	t.Parallel()
	c := Config{Secrets: SecretsConfig{Azure: &secrets.AzureConfig{Cloud: "china"}, CacheTTL: 20 * time.Second}}
	set, err := SecretsFromConfig(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	infos := set.Infos()
	if len(infos) != 1 || infos[0].Name != "azure" || infos[0].Settings["cloud"] != "china" ||
		infos[0].Settings["credential"] != "managed_identity" || infos[0].Settings["cache_ttl"] != "20s" {
		t.Errorf("Infos() = %+v", infos)
	}
	c.Secrets.Azure.Credential = "client_secret"
	if _, err := SecretsFromConfig(context.Background(), c, nil); err == nil || !strings.Contains(err.Error(), "secrets.azure.tenant_id") {
		t.Errorf("SecretsFromConfig without a tenant = %v, want an error naming secrets.azure.tenant_id", err)
	}
}
