package secrets_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/protocol"
)

// fakeBackend answers every reference with a fixed password.
type fakeBackend struct {
	name string

	mu   sync.Mutex // guards the fields below
	refs []protocol.SecretRef
}

var _ secrets.Backend = (*fakeBackend)(nil)

func (b *fakeBackend) Name() string { return b.name }

func (b *fakeBackend) Info() protocol.BackendInfo {
	return protocol.BackendInfo{Name: b.name, Settings: map[string]string{"region": "test-" + b.name}}
}

func (b *fakeBackend) Resolve(_ context.Context, ref protocol.SecretRef) (secrets.Credentials, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refs = append(b.refs, ref)
	return secrets.Credentials{Password: redact.New(canary + "-" + b.name), KeysFound: []string{secrets.KeyPassword}}, nil
}

func (b *fakeBackend) calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.refs)
}

func TestSetResolve(t *testing.T) {
	t.Parallel()
	awsRef := protocol.SecretRef{Backend: "aws", SecretName: "ci/github", PasswordKey: "token"}
	azureRef := protocol.SecretRef{Backend: "azure", VaultName: "kv", PasswordSecret: "pat"}
	fileRef := protocol.SecretRef{Backend: "file", SecretName: "ci/github", PasswordKey: "token"}
	tests := []struct {
		name     string
		backends []string
		ref      protocol.SecretRef
		want     string // the password, when it succeeds
		code     protocol.ErrorCode
		message  string // the exact message, when it fails
	}{
		{name: "routes to aws", backends: []string{"file", "aws"}, ref: awsRef, want: canary + "-aws"},
		{name: "routes to file", backends: []string{"file", "aws"}, ref: fileRef, want: canary + "-file"},
		{name: "routes to azure", backends: []string{"azure"}, ref: azureRef, want: canary + "-azure"},
		{
			name:     "backend not configured",
			backends: []string{"file"},
			ref:      awsRef,
			code:     protocol.CodeSecretBackendUnavailable,
			message:  "this agent has no aws secret backend; configure secrets.aws in the agent config (backends here: file)",
		},
		{
			name:     "several others",
			backends: []string{"file", "aws"},
			ref:      azureRef,
			code:     protocol.CodeSecretBackendUnavailable,
			message:  "this agent has no azure secret backend; configure secrets.azure in the agent config (backends here: aws, file)",
		},
		{
			name:    "no backends",
			ref:     fileRef,
			code:    protocol.CodeSecretBackendUnavailable,
			message: "this agent has no file secret backend; configure secrets.file in the agent config (backends here: none)",
		},
		{
			name:     "invalid reference",
			backends: []string{"aws"},
			ref:      protocol.SecretRef{Backend: "aws", SecretName: "ci/github"},
			code:     protocol.CodeInvalidParams,
			message:  "secret.password_key is required for the aws backend",
		},
		{
			name:     "unknown backend",
			backends: []string{"aws"},
			ref:      protocol.SecretRef{Backend: "vault", SecretName: "x", PasswordKey: "y"},
			code:     protocol.CodeInvalidParams,
			message:  `secret.backend "vault" is not one of aws, azure, file`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var bs []secrets.Backend
			var fakes []*fakeBackend
			for _, n := range tt.backends {
				fb := &fakeBackend{name: n}
				fakes = append(fakes, fb)
				bs = append(bs, fb)
			}
			c, err := secrets.NewSet(bs...).Resolve(testContext(t), tt.ref)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if got := c.Password.Reveal(); got != tt.want {
					t.Errorf("Password = %q, want %q", got, tt.want)
				}
				return
			}
			checkError(t, err, tt.code)
			if got := err.(*protocol.Error).Message; got != tt.message {
				t.Errorf("message = %q\nwant      %q", got, tt.message)
			}
			for _, fb := range fakes {
				if n := fb.calls(); n != 0 {
					t.Errorf("backend %s was called %d times for a refused reference", fb.name, n)
				}
			}
		})
	}
}

func TestSetInfosAndHas(t *testing.T) {
	t.Parallel()
	path := writeSecrets(t, "s.json", `{}`, 0o600)
	file, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := secrets.NewSet(&fakeBackend{name: "azure"}, file, &fakeBackend{name: "aws"})
	infos := s.Infos()
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	if want := []string{"aws", "azure", "file"}; !slices.Equal(names, want) {
		t.Errorf("Infos() names = %q, want %q (sorted)", names, want)
	}
	if len(infos) == 3 && infos[2].Settings["path"] != path {
		t.Errorf("Infos()[2] = %+v, want the file backend's path", infos[2])
	}
	if got := s.Names(); !slices.Equal(got, []string{"aws", "azure", "file"}) {
		t.Errorf("Names() = %q", got)
	}
	for name, want := range map[string]bool{"aws": true, "azure": true, "file": true, "vault": false, "": false, "AWS": false} {
		if got := s.Has(name); got != want {
			t.Errorf("Has(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNilSet(t *testing.T) {
	t.Parallel()
	var s *secrets.Set
	if s.Has("file") || s.Infos() != nil || s.Names() != nil {
		t.Errorf("a nil Set has backends")
	}
	_, err := s.Resolve(testContext(t), protocol.SecretRef{Backend: "file", SecretName: "a", PasswordKey: "b"})
	checkError(t, err, protocol.CodeSecretBackendUnavailable, "(backends here: none)")
}

func TestNewSetPanics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		backends []secrets.Backend
		want     string
	}{
		{name: "duplicate", backends: []secrets.Backend{&fakeBackend{name: "aws"}, &fakeBackend{name: "aws"}}, want: `two backends named "aws"`},
		{name: "nil", backends: []secrets.Backend{&fakeBackend{name: "aws"}, nil}, want: "backend 1 is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Errorf("NewSet panicked with %v, want a panic containing %q", r, tt.want)
				}
			}()
			secrets.NewSet(tt.backends...)
		})
	}
}
