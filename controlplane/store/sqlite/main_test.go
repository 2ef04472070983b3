package sqlite

import (
	"context"
	"crypto/sha256"
	"fmt"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// Every test closes what it opens: the writer goroutine and the pools'
// goroutines must all be gone at the end, so no goroutine is ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx is a context that ends with the test or after a minute.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openTest opens a store in a new temporary directory, closed at the end of
// the test.
func openTest(t testing.TB) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(testCtx(t), dir, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, dir
}

// base is a fixed time with nanoseconds, outside UTC, to show that
// instants round-trip exactly.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*3600))

func ptr[T any](v T) *T { return &v }

func tokenHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// newAgent is an agent with every field set.
func newAgent(id, name string) store.Agent {
	return store.Agent{
		ID:           id,
		Name:         name,
		Labels:       map[string]string{"env": "prod", "site": "paris-1"},
		PublicKey:    []byte("0123456789abcdef0123456789abcdef"),
		CreatedAt:    base,
		EnrolledAt:   ptr(base.Add(time.Second)),
		RevokedAt:    nil,
		AgentVersion: "1.2.3",
		Hostname:     "host-" + name,
		OS:           "linux/amd64",
		Backends: []protocol.BackendInfo{
			{Name: "aws", Settings: map[string]string{"region": "eu-west-3"}},
			{Name: "file"},
		},
		LastSeen: ptr(base.Add(2 * time.Second)),
	}
}

// newToken is a token for agent id, valid for an hour from base.
func newToken(id, text string) store.Token {
	return store.Token{Hash: tokenHash(text), AgentID: id, CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
}

// newJob is a queued job with params that name a secret reference.
func newJob(id, agentID string, created time.Time) store.Job {
	return store.Job{
		ID:      id,
		AgentID: agentID,
		Kind:    protocol.KindTestConnection,
		Params: protocol.Params{
			Secret: &protocol.SecretRef{
				Backend:      protocol.BackendAWS,
				SecretName:   "arn:aws:secretsmanager:eu-west-3:123456789012:secret:github-x1y2z3",
				UsernameKey:  "user",
				PasswordKey:  "token",
				VersionStage: "AWSCURRENT",
			},
			GitHubURL:      "https://git.example.com",
			GitHubKind:     protocol.GitHubEnterpriseServer,
			RequiredScopes: []string{"repo", "read:org"},
			Organization:   "platform",
		},
		State:     protocol.JobQueued,
		Timeout:   30 * time.Second,
		Deadline:  created.Add(30 * time.Second),
		CreatedAt: created,
	}
}

// mustCreateAgent stores a and a token for it.
func mustCreateAgent(t testing.TB, s *Store, a store.Agent, token string) {
	t.Helper()
	if err := s.CreateAgent(testCtx(t), a, newToken(a.ID, token)); err != nil {
		t.Fatalf("CreateAgent %s: %v", a.ID, err)
	}
}

func mustCreateJob(t testing.TB, s *Store, j store.Job) {
	t.Helper()
	if err := s.CreateJob(testCtx(t), j); err != nil {
		t.Fatalf("CreateJob %s: %v", j.ID, err)
	}
}

// normalized returns v with every time.Time in it, however deep, in UTC and
// without a monotonic reading, so that reflect.DeepEqual compares instants.
func normalized[T any](v T) T {
	rv := reflect.ValueOf(&v).Elem()
	normalize(rv)
	return v
}

var timeType = reflect.TypeFor[time.Time]()

func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == timeType {
			v.Set(reflect.ValueOf(v.Interface().(time.Time).UTC()))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				normalize(v.Field(i))
			}
		}
	case reflect.Pointer:
		if !v.IsNil() {
			c := reflect.New(v.Elem().Type())
			c.Elem().Set(v.Elem())
			normalize(c.Elem())
			v.Set(c)
		}
	case reflect.Slice:
		if !v.IsNil() {
			c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
			reflect.Copy(c, v)
			for i := range c.Len() {
				normalize(c.Index(i))
			}
			v.Set(c)
		}
	}
}

// assertEqual fails the test unless got and want hold the same values and
// the same instants.
func assertEqual[T any](t testing.TB, what string, got, want T) {
	t.Helper()
	g, w := normalized(got), normalized(want)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got  %s\n want %s", what, dump(g), dump(w))
	}
}

func dump(v any) string { return fmt.Sprintf("%+v", deref(reflect.ValueOf(v))) }

// deref prints pointers as what they point at.
func deref(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return "nil"
		}
		return fmt.Sprintf("&%v", deref(v.Elem()))
	case reflect.Struct:
		if v.Type() == timeType {
			return v.Interface().(time.Time).Format(time.RFC3339Nano)
		}
		s := "{"
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				continue
			}
			s += fmt.Sprintf("%s:%v ", v.Type().Field(i).Name, deref(v.Field(i)))
		}
		return s + "}"
	case reflect.Slice:
		if v.IsNil() {
			return "nil"
		}
		s := "["
		for i := range v.Len() {
			s += fmt.Sprintf("%v ", deref(v.Index(i)))
		}
		return s + "]"
	}
	if v.IsValid() && v.CanInterface() {
		return v.Interface()
	}
	return v
}
