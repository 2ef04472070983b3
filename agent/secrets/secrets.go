// Package secrets reads credentials from the secret backends the agent has,
// for the job runner.
//
// A [Backend] resolves a [protocol.SecretRef] into [Credentials], whose
// values are [redact.Secret]s so that they print as [REDACTED] wherever they
// travel. A [Set] routes each reference to the backend it names. The
// backends are [AWS] (AWS Secrets Manager), [Azure] (Azure Key Vault), both
// through their official SDKs with the machine's own cloud identity, and
// [File] (a local file); a [Cache] in front of a backend shares concurrent
// fetches of one reference and can keep values for a short while.
// Package secretstest holds fake AWS and Azure servers for tests.
//
// The contract every backend keeps: Resolve returns a *[protocol.Error]
// with one of the codes secret_not_found, secret_access_denied,
// secret_malformed, secret_backend_unavailable (or invalid_params for a
// reference it cannot serve), or ctx.Err() when the context ended first.
// Messages name the secret, its keys and the setting to change so that a
// person can act on them, and never hold a secret value: they are sent to
// the control plane.
package secrets

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// Names of the referenced keys in [Credentials.KeysFound].
const (
	KeyUsername = "username"
	KeyPassword = "password"
)

// Credentials are what a backend read. The values are [redact.Secret]s: use
// Reveal only where the value is handed to GitHub or to the fingerprint.
type Credentials struct {
	// Username is empty when the reference names no username key.
	Username redact.Secret
	// Password is the token or password; never empty on success.
	Password redact.Secret
	// KeysFound lists which referenced keys exist: [KeyUsername],
	// [KeyPassword], in that order.
	KeysFound []string
	// VersionID identifies the secret's version where the backend has
	// versions; empty otherwise.
	VersionID string
	// VersionCreated is when that version was made (for the file backend:
	// the file's modification time); nil when the backend cannot say.
	VersionCreated *time.Time
}

// Backend reads credentials from one secret store.
//
// Implementations are safe for concurrent use by the runner's workers.
type Backend interface {
	// Name is the backend's name in references: "file", "aws", "azure".
	Name() string
	// Info is the backend's non-secret settings, advertised in hello.
	Info() protocol.BackendInfo
	// Resolve reads the credentials ref points at. It returns a
	// *protocol.Error (see the package doc) or ctx.Err().
	Resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, error)
}

// Set routes a reference to the backend it names. Its methods are safe for
// concurrent use, and a nil *Set is an empty set.
type Set struct {
	byName map[string]Backend
	names  []string // sorted
}

// NewSet returns a Set of backends. It panics if a backend is nil or two
// share a name: the agent builds its backends from its config, one per
// name, so either is a programming error.
func NewSet(backends ...Backend) *Set {
	s := &Set{byName: make(map[string]Backend, len(backends))}
	for i, b := range backends {
		if b == nil {
			panic(fmt.Sprintf("secrets.NewSet: backend %d is nil", i))
		}
		name := b.Name()
		if _, dup := s.byName[name]; dup {
			panic(fmt.Sprintf("secrets.NewSet: two backends named %q", name))
		}
		s.byName[name] = b
		s.names = append(s.names, name)
	}
	slices.Sort(s.names)
	return s
}

// Resolve checks ref and hands it to the backend it names. A reference to a
// backend the agent does not have gets secret_backend_unavailable; an
// invalid reference gets invalid_params.
func (s *Set) Resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, error) {
	if err := ref.Validate(); err != nil {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams, "%v", err)
	}
	b, ok := s.backend(ref.Backend)
	if !ok {
		return Credentials{}, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"this agent has no %s secret backend; configure secrets.%s in the agent config (backends here: %s)",
			ref.Backend, ref.Backend, s.namesText())
	}
	return b.Resolve(ctx, ref)
}

// Infos returns the backends' non-secret settings, sorted by name.
func (s *Set) Infos() []protocol.BackendInfo {
	if s == nil {
		return nil
	}
	out := make([]protocol.BackendInfo, 0, len(s.names))
	for _, n := range s.names {
		out = append(out, s.byName[n].Info())
	}
	return out
}

// Has reports whether the set has a backend named name.
func (s *Set) Has(name string) bool {
	_, ok := s.backend(name)
	return ok
}

// Names returns the backends' names, sorted.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.names)
}

func (s *Set) backend(name string) (Backend, bool) {
	if s == nil {
		return nil, false
	}
	b, ok := s.byName[name]
	return b, ok
}

func (s *Set) namesText() string {
	if s == nil || len(s.names) == 0 {
		return "none"
	}
	return strings.Join(s.names, ", ")
}
