package policy_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/protocol"
)

const canary = "canary-7f3c9e1d-SECRET"

// testConfig is a policy with a rule of each shape. The comments give the
// rule indexes that messages name.
func testConfig() policy.Config {
	return policy.Config{
		JobKinds: []string{"test_connection", "resolve_credentials"},
		Secrets: []policy.SecretRule{
			/* 0 */ {Backend: "aws", SecretName: "ci/*", Hosts: []string{"https://git.example.com"}},
			/* 1 */ {Backend: "file", SecretName: "local/github", Hosts: []string{"https://api.github.com", "http://localhost:8080"}},
			/* 2 */ {Backend: "azure", VaultName: "platform-*", Hosts: []string{"https://api.github.com/"}},
			/* 3 */ {Backend: "azure", VaultName: "Restricted-KV", SecretName: "gh-*", Hosts: []string{"https://git.example.com:8443/api/v3"}},
			/* 4 */ {Backend: "aws", SecretName: "resolve-only"},
			/* 5 */ {Backend: "aws", SecretName: "arn:aws:secretsmanager:*:*:secret:ci/*", Hosts: []string{"https://git.example.com"}},
			/* 6 */ {Backend: "aws", SecretName: "ci/github", Hosts: []string{"HTTPS://API.GITHUB.COM:443"}},
		},
		AllowHTTPHosts: []string{"localhost:8080", "127.0.0.1"},
	}
}

func mustNew(t *testing.T, c policy.Config) *policy.Policy {
	t.Helper()
	p, err := policy.New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// checkRefusal checks that e has code and holds each of want.
func checkRefusal(t *testing.T, e *protocol.Error, code protocol.ErrorCode, want ...string) {
	t.Helper()
	if e == nil {
		t.Fatalf("allowed; want %s", code)
	}
	if e.Code != code {
		t.Errorf("code = %s, want %s (message: %s)", e.Code, code, e.Message)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("the refusal is not valid on the wire: %v", err)
	}
	if strings.Contains(e.Message, canary) {
		t.Errorf("message %q holds the canary", e.Message)
	}
	for _, w := range want {
		if !strings.Contains(e.Message, w) {
			t.Errorf("message = %q, want it to contain %q", e.Message, w)
		}
	}
}

func aws(name string) protocol.SecretRef {
	return protocol.SecretRef{Backend: "aws", SecretName: name, PasswordKey: "token"}
}

func file(name string) protocol.SecretRef {
	return protocol.SecretRef{Backend: "file", SecretName: name, PasswordKey: "token"}
}

func azure(vault, username, password string) protocol.SecretRef {
	return protocol.SecretRef{Backend: "azure", VaultName: vault, UsernameSecret: username, PasswordSecret: password}
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		config  policy.Config
		wantErr []string // empty: valid
	}{
		{name: "empty", config: policy.Config{}},
		{name: "full", config: testConfig()},
		{
			name:    "unknown job kind",
			config:  policy.Config{JobKinds: []string{"test_connection", "deploy"}},
			wantErr: []string{`policy.job_kinds[1]: "deploy" is not a job kind; known kinds: resolve_credentials, test_connection, list_organizations`},
		},
		{
			name:    "missing backend",
			config:  policy.Config{Secrets: []policy.SecretRule{{SecretName: "x"}}},
			wantErr: []string{"policy.secrets[0].backend is required: one of aws, azure, file"},
		},
		{
			name:    "unknown backend",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws", SecretName: "x"}, {Backend: "vault", SecretName: "x"}}},
			wantErr: []string{`policy.secrets[1].backend: "vault" is not one of aws, azure, file`},
		},
		{
			name:    "aws without secret name",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws"}}},
			wantErr: []string{"policy.secrets[0].secret_name is required for the aws backend"},
		},
		{
			name:    "file with a vault name",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "file", SecretName: "x", VaultName: "kv"}}},
			wantErr: []string{"policy.secrets[0].vault_name is for the azure backend, not file"},
		},
		{
			name:    "azure without vault name",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "azure", SecretName: "x"}}},
			wantErr: []string{"policy.secrets[0].vault_name is required for the azure backend"},
		},
		{
			name:    "azure vault given as URL",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "azure", VaultName: "https://kv.vault.azure.net"}}},
			wantErr: []string{`policy.secrets[0].vault_name: "https://kv.vault.azure.net" must be the vault's name`},
		},
		{
			name:    "bad secret name pattern",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws", SecretName: "ci/["}}},
			wantErr: []string{`policy.secrets[0].secret_name: "ci/[" is not a valid pattern: syntax error in pattern`},
		},
		{
			name:    "bad vault pattern",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "azure", VaultName: `kv\`}}},
			wantErr: []string{`policy.secrets[0].vault_name: "kv\\" is not a valid pattern`},
		},
		{
			name: "ftp host",
			config: policy.Config{Secrets: []policy.SecretRule{
				{Backend: "aws", SecretName: "a"},
				{Backend: "aws", SecretName: "b"},
				{Backend: "aws", SecretName: "c", Hosts: []string{"ftp://x"}},
			}},
			wantErr: []string{`policy.secrets[2].hosts[0]: "ftp://x" is not an http(s) URL`},
		},
		{
			name:    "host with user info",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws", SecretName: "a", Hosts: []string{"https://git.example.com", "https://bot:" + canary + "@git.example.com"}}}},
			wantErr: []string{`policy.secrets[0].hosts[1]: "https://[REDACTED]@git.example.com" holds user info`},
		},
		{
			name:    "host without scheme",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws", SecretName: "a", Hosts: []string{"git.example.com"}}}},
			wantErr: []string{`policy.secrets[0].hosts[0]: "git.example.com" is not an http(s) URL`},
		},
		{
			name:    "host with query",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws", SecretName: "a", Hosts: []string{"https://git.example.com/?x=1"}}}},
			wantErr: []string{`policy.secrets[0].hosts[0]: "https://git.example.com/?x=1" must not hold a query or fragment`},
		},
		{
			name:    "host with bad port",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws", SecretName: "a", Hosts: []string{"https://git.example.com:70000"}}}},
			wantErr: []string{`policy.secrets[0].hosts[0]: "https://git.example.com:70000" has a port that is not a number from 1 to 65535`},
		},
		{
			name:    "plain http host not allowed",
			config:  policy.Config{Secrets: []policy.SecretRule{{Backend: "aws", SecretName: "a", Hosts: []string{"http://git.example.com"}}}},
			wantErr: []string{`policy.secrets[0].hosts[0]: "http://git.example.com" uses plain http; use https, or add git.example.com:80 to policy.allow_http_hosts`},
		},
		{
			name: "plain http host allowed on another port only",
			config: policy.Config{
				Secrets:        []policy.SecretRule{{Backend: "aws", SecretName: "a", Hosts: []string{"http://localhost"}}},
				AllowHTTPHosts: []string{"localhost:8080"},
			},
			wantErr: []string{"add localhost:80 to policy.allow_http_hosts"},
		},
		{
			name:    "allow_http_hosts with a scheme",
			config:  policy.Config{AllowHTTPHosts: []string{"localhost", "http://localhost:8080"}},
			wantErr: []string{`policy.allow_http_hosts[1]: "http://localhost:8080" must be host[:port], without a scheme, path or user info`},
		},
		{
			name:    "allow_http_hosts empty and bad port",
			config:  policy.Config{AllowHTTPHosts: []string{"", "localhost:http"}},
			wantErr: []string{`policy.allow_http_hosts[0]: "" is empty`, `policy.allow_http_hosts[1]: "localhost:http"`},
		},
		{
			name: "every error at once",
			config: policy.Config{
				JobKinds: []string{"nope"},
				Secrets:  []policy.SecretRule{{Backend: "aws"}, {Backend: "azure", VaultName: "kv", Hosts: []string{"ftp://x"}}},
			},
			wantErr: []string{"policy.job_kinds[0]", "policy.secrets[0].secret_name", "policy.secrets[1].hosts[0]"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := policy.New(tt.config)
			if len(tt.wantErr) == 0 {
				if err != nil || p == nil {
					t.Fatalf("New: %v; want a policy", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New succeeded; want an error containing %q", tt.wantErr)
			}
			if p != nil {
				t.Errorf("New returned a policy along with the error")
			}
			if strings.Contains(err.Error(), canary) {
				t.Errorf("the error holds the canary: %v", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error = %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestCheckKind(t *testing.T) {
	t.Parallel()
	p := mustNew(t, testConfig())
	empty := mustNew(t, policy.Config{})
	tests := []struct {
		name string
		p    *policy.Policy
		kind protocol.JobKind
		want []string // empty: allowed
	}{
		{name: "allowed", p: p, kind: protocol.KindTestConnection},
		{name: "allowed too", p: p, kind: protocol.KindResolveCredentials},
		{name: "not listed", p: p, kind: protocol.KindListOrganizations, want: []string{"this agent does not run list_organizations jobs; add it to policy.job_kinds in the agent config"}},
		{name: "empty policy", p: empty, kind: protocol.KindTestConnection, want: []string{"this agent does not run test_connection jobs; add it to policy.job_kinds in the agent config"}},
		{name: "unknown kind", p: p, kind: "deploy", want: []string{`this agent does not know the job kind "deploy"`}},
		{name: "empty kind", p: p, kind: "", want: []string{`does not know the job kind ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := tt.p.CheckKind(tt.kind)
			if len(tt.want) == 0 {
				if e != nil {
					t.Fatalf("CheckKind(%s) = %v, want allowed", tt.kind, e)
				}
				return
			}
			checkRefusal(t, e, protocol.CodeKindNotAllowed, tt.want...)
		})
	}
}

func TestKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		config policy.Config
		want   []protocol.JobKind
	}{
		{name: "protocol order, whatever the config order", config: testConfig(), want: []protocol.JobKind{protocol.KindResolveCredentials, protocol.KindTestConnection}},
		{name: "duplicates once", config: policy.Config{JobKinds: []string{"list_organizations", "list_organizations"}}, want: []protocol.JobKind{protocol.KindListOrganizations}},
		{name: "empty", config: policy.Config{}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := mustNew(t, tt.config)
			got := p.Kinds()
			if !slices.Equal(got, tt.want) {
				t.Errorf("Kinds() = %v, want %v", got, tt.want)
			}
			if len(got) > 0 {
				got[0] = "changed"
				if p.Kinds()[0] == "changed" {
					t.Errorf("Kinds() returned the policy's own slice")
				}
			}
		})
	}
}

func TestCheckSecret(t *testing.T) {
	t.Parallel()
	p := mustNew(t, testConfig())
	tests := []struct {
		name string
		ref  protocol.SecretRef
		want []string // empty: allowed
	}{
		{name: "aws pattern", ref: aws("ci/github")},
		{name: "aws pattern, other name", ref: aws("ci/gitlab")},
		{name: "aws with version", ref: protocol.SecretRef{Backend: "aws", SecretName: "ci/github", PasswordKey: "token", VersionStage: "AWSPREVIOUS"}},
		{name: "aws resolve-only rule", ref: aws("resolve-only")},
		{name: "aws arn pattern", ref: aws("arn:aws:secretsmanager:eu-west-1:123456789012:secret:ci/github-AbCdEf")},
		{name: "aws star does not cross a slash", ref: aws("ci/a/b"), want: []string{"aws:ci/a/b", "policy.secrets"}},
		{name: "aws names are case-sensitive", ref: aws("CI/github"), want: []string{"aws:CI/github"}},
		{name: "aws prefix only", ref: aws("ci"), want: []string{"aws:ci;"}},
		{name: "aws arn of another path", ref: aws("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/github"), want: []string{"prod/github"}},
		{name: "file exact", ref: file("local/github")},
		{name: "wrong backend: file name under an aws rule", ref: file("ci/github"), want: []string{"this agent's policy does not allow the secret file:ci/github; add a rule for it to policy.secrets in the agent config"}},
		{name: "wrong backend: aws name under a file rule", ref: aws("local/github"), want: []string{"aws:local/github"}},
		{name: "azure vault pattern", ref: azure("platform-kv", "", "pat")},
		{name: "azure vault case-insensitive", ref: azure("PLATFORM-KV", "user", "pat")},
		{name: "azure vault URL", ref: azure("https://platform-kv.vault.azure.net", "", "pat")},
		{name: "azure vault URL with slash and port", ref: azure("https://Platform-KV.vault.azure.net:443/", "", "pat")},
		{name: "azure vault URL in China cloud", ref: azure("https://platform-kv.vault.azure.cn", "", "pat")},
		{name: "azure vault URL on another domain", ref: azure("https://platform-kv.evil.example", "", "pat"), want: []string{"azure:https://platform-kv.evil.example/pat", "must be https://NAME.vault.azure.net"}},
		{name: "azure vault URL with a deeper name", ref: azure("https://platform-kv.evil.vault.azure.net", "", "pat"), want: []string{"policy.secrets"}},
		{name: "azure vault URL over http", ref: azure("http://platform-kv.vault.azure.net", "", "pat"), want: []string{"policy.secrets"}},
		{name: "azure vault URL with a path", ref: azure("https://platform-kv.vault.azure.net/secrets", "", "pat"), want: []string{"policy.secrets"}},
		{name: "azure vault URL with user info", ref: azure("https://u:"+canary+"@platform-kv.vault.azure.net", "", "pat"), want: []string{"azure:https://[REDACTED]@platform-kv.vault.azure.net/pat"}},
		{name: "azure other vault", ref: azure("other-kv", "", "pat"), want: []string{"azure:other-kv/pat"}},
		{name: "azure secret names allowed", ref: azure("restricted-kv", "gh-user", "gh-token")},
		{name: "azure secret names case-insensitive", ref: azure("restricted-kv", "", "GH-token")},
		{name: "azure password secret not allowed", ref: azure("restricted-kv", "gh-user", "token"), want: []string{"azure:restricted-kv/token"}},
		{name: "azure username secret not allowed", ref: azure("restricted-kv", "user", "gh-token"), want: []string{"azure:restricted-kv/gh-token"}},
		{name: "azure fields on an aws reference", ref: protocol.SecretRef{Backend: "aws", VaultName: "platform-kv", PasswordSecret: "pat"}, want: []string{"policy.secrets"}},
		{name: "aws fields on an azure reference", ref: protocol.SecretRef{Backend: "azure", SecretName: "ci/github", PasswordKey: "token"}, want: []string{"policy.secrets"}},
		{name: "unknown backend", ref: protocol.SecretRef{Backend: "vault", SecretName: "ci/github"}, want: []string{"policy.secrets"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := p.CheckSecret(tt.ref)
			if len(tt.want) == 0 {
				if e != nil {
					t.Fatalf("CheckSecret(%s) = %v, want allowed", tt.ref, e)
				}
				return
			}
			checkRefusal(t, e, protocol.CodeSecretNotAllowed, tt.want...)
		})
	}
}

func TestCheckHost(t *testing.T) {
	t.Parallel()
	p := mustNew(t, testConfig())
	tests := []struct {
		name string
		ref  protocol.SecretRef
		url  string
		code protocol.ErrorCode // empty: allowed
		want []string
	}{
		{name: "allowed", ref: aws("ci/gitlab"), url: "https://git.example.com"},
		{name: "ghes api path ignored", ref: aws("ci/gitlab"), url: "https://git.example.com/api/v3"},
		{name: "case and default port", ref: aws("ci/gitlab"), url: "HTTPS://GIT.Example.com:443/api/v3/"},
		{name: "trailing dot", ref: aws("ci/gitlab"), url: "https://git.example.com./api/v3"},
		{name: "second rule for the same secret", ref: aws("ci/github"), url: "https://api.github.com"},
		{name: "first rule for the same secret", ref: aws("ci/github"), url: "https://git.example.com"},
		{name: "arn rule", ref: aws("arn:aws:secretsmanager:eu-west-1:1:secret:ci/x"), url: "https://git.example.com"},
		{name: "file over allowed http", ref: file("local/github"), url: "http://localhost:8080/api/v3"},
		{name: "file over allowed http, case", ref: file("local/github"), url: "http://LOCALHOST:8080"},
		{name: "file over https", ref: file("local/github"), url: "https://api.github.com"},
		{name: "azure", ref: azure("platform-kv", "", "pat"), url: "https://api.github.com"},
		{name: "azure by URL", ref: azure("https://platform-kv.vault.azure.net/", "", "pat"), url: "https://api.github.com/"},
		{name: "azure with non-default port", ref: azure("restricted-kv", "gh-user", "gh-token"), url: "https://git.example.com:8443"},

		{
			name: "other port", ref: aws("ci/gitlab"), url: "https://git.example.com:8443",
			code: protocol.CodeHostNotAllowed,
			want: []string{`this agent's policy does not allow sending the secret aws:ci/gitlab to https://git.example.com:8443; add "https://git.example.com:8443" to policy.secrets[0].hosts in the agent config`},
		},
		{
			name: "other host", ref: aws("ci/gitlab"), url: "https://api.github.com",
			code: protocol.CodeHostNotAllowed,
			want: []string{"to https://api.github.com;", "policy.secrets[0].hosts"},
		},
		{
			name: "lookalike host", ref: aws("ci/gitlab"), url: "https://git.example.com.evil.example",
			code: protocol.CodeHostNotAllowed,
			want: []string{"https://git.example.com.evil.example"},
		},
		{
			name: "names every matching rule", ref: aws("ci/github"), url: "https://evil.example",
			code: protocol.CodeHostNotAllowed,
			want: []string{"policy.secrets[0].hosts or policy.secrets[6].hosts"},
		},
		{
			name: "plain http to an https host", ref: aws("ci/gitlab"), url: "http://git.example.com",
			code: protocol.CodeHostNotAllowed,
			want: []string{"this agent does not call git.example.com:80 over plain http; use https, or add git.example.com:80 to policy.allow_http_hosts in the agent config"},
		},
		{
			name: "plain http allowed host but not listed for the secret", ref: aws("ci/gitlab"), url: "http://localhost:8080",
			code: protocol.CodeHostNotAllowed,
			want: []string{`add "http://localhost:8080" to policy.secrets[0].hosts`},
		},
		{
			name: "https where the rule says http", ref: file("local/github"), url: "https://localhost:8080",
			code: protocol.CodeHostNotAllowed,
			want: []string{"https://localhost:8080", "policy.secrets[1].hosts"},
		},
		{
			name: "http on a port not allowed", ref: file("local/github"), url: "http://localhost",
			code: protocol.CodeHostNotAllowed,
			want: []string{"add localhost:80 to policy.allow_http_hosts"},
		},
		{
			name: "user info", ref: aws("ci/gitlab"), url: "https://bot:" + canary + "@git.example.com",
			code: protocol.CodeHostNotAllowed,
			want: []string{`the GitHub URL "https://[REDACTED]@git.example.com" holds user info`},
		},
		{
			name: "user name only", ref: aws("ci/gitlab"), url: "https://git.example.com@evil.example",
			code: protocol.CodeHostNotAllowed,
			want: []string{"holds user info"},
		},
		{
			name: "not http", ref: aws("ci/gitlab"), url: "ssh://git.example.com",
			code: protocol.CodeHostNotAllowed,
			want: []string{`the GitHub URL "ssh://git.example.com" is not an http(s) URL`},
		},
		{
			name: "resolve-only secret", ref: aws("resolve-only"), url: "https://git.example.com",
			code: protocol.CodeHostNotAllowed,
			want: []string{"aws:resolve-only", "policy.secrets[4].hosts"},
		},
		{
			name: "secret not allowed at all", ref: aws("prod/github"), url: "https://git.example.com",
			code: protocol.CodeSecretNotAllowed,
			want: []string{"aws:prod/github", "policy.secrets"},
		},
		{
			name: "secret not allowed comes before the URL", ref: aws("prod/github"), url: "https://u:" + canary + "@x",
			code: protocol.CodeSecretNotAllowed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := p.CheckHost(tt.ref, tt.url)
			if tt.code == "" {
				if e != nil {
					t.Fatalf("CheckHost(%s, %q) = %v, want allowed", tt.ref, tt.url, e)
				}
				if e := p.CheckSecret(tt.ref); e != nil {
					t.Errorf("CheckHost allowed a secret that CheckSecret refuses: %v", e)
				}
				return
			}
			checkRefusal(t, e, tt.code, tt.want...)
		})
	}
}

func TestEmptyPolicyAllowsNothing(t *testing.T) {
	t.Parallel()
	for _, c := range []policy.Config{{}, {JobKinds: []string{}, Secrets: []policy.SecretRule{}, AllowHTTPHosts: []string{}}} {
		p := mustNew(t, c)
		if k := p.Kinds(); len(k) != 0 {
			t.Errorf("Kinds() = %v, want none", k)
		}
		for _, kind := range protocol.JobKinds {
			checkRefusal(t, p.CheckKind(kind), protocol.CodeKindNotAllowed, "policy.job_kinds")
		}
		for _, ref := range []protocol.SecretRef{aws("ci/github"), file("x"), azure("kv", "", "pat")} {
			checkRefusal(t, p.CheckSecret(ref), protocol.CodeSecretNotAllowed, "policy.secrets")
			checkRefusal(t, p.CheckHost(ref, "https://api.github.com"), protocol.CodeSecretNotAllowed, "policy.secrets")
		}
	}
}

func TestConfigTags(t *testing.T) {
	t.Parallel()
	// The yaml and json names agree and are snake_case, as the config file
	// documents them.
	want := map[string]string{
		"JobKinds": "job_kinds", "Secrets": "secrets", "AllowHTTPHosts": "allow_http_hosts",
		"Backend": "backend", "SecretName": "secret_name", "VaultName": "vault_name", "Hosts": "hosts",
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[policy.Config](), reflect.TypeFor[policy.SecretRule]()} {
		for i := range typ.NumField() {
			f := typ.Field(i)
			yamlName, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			jsonName, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if yamlName != want[f.Name] || jsonName != want[f.Name] {
				t.Errorf("%s.%s: yaml %q, json %q; want %q", typ.Name(), f.Name, yamlName, jsonName, want[f.Name])
			}
		}
	}
}
