package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// newConnection is a connection of agent a1 with every field set.
func newConnection(id, name string) store.Connection {
	return store.Connection{
		ID:        id,
		Name:      name,
		Kind:      protocol.GitHubEnterpriseServer,
		GitHubURL: "https://git.example.com",
		AgentID:   "a1",
		Secret: protocol.SecretRef{
			Backend: protocol.BackendAWS, SecretName: "ci/github", UsernameKey: "user", PasswordKey: "token", VersionStage: "AWSCURRENT",
		},
		Organization:   "platform",
		RequiredScopes: []string{"repo", "workflow"},
		Active:         true,
		PasswordHash:   []byte("$2a$04$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012"),
		Revision:       1,
		CreatedAt:      base,
		UpdatedAt:      base.Add(time.Second),
		LastTest: &protocol.ConnectionTest{
			JobID: "j1", At: base.Add(2 * time.Second), OK: true, APIURL: "https://git.example.com/api/v3/",
			GHESVersion: "3.19.0", Login: "octo-bot", TokenType: "classic_pat", ScopesListable: true,
			Scopes: []string{"repo"}, MissingScopes: []string{"workflow"}, Organizations: 2,
		},
		Organizations: &store.FetchedOrganizations{
			JobID: "j2", At: base.Add(3 * time.Second),
			Organizations: []protocol.Organization{{Login: "platform", ID: 1, Description: "the platform"}, {Login: "tools", ID: 2}},
		},
	}
}

// connStore is a store with agents a1 and a2.
func connStore(t *testing.T) *Store {
	t.Helper()
	s, _ := openTest(t)
	mustCreateAgent(t, s, newAgent("a1", "alpha"), "tok-a1")
	mustCreateAgent(t, s, newAgent("a2", "bravo"), "tok-a2")
	return s
}

func mustCreateConnection(t *testing.T, s *Store, c store.Connection) {
	t.Helper()
	if err := s.CreateConnection(testCtx(t), c); err != nil {
		t.Fatalf("CreateConnection %s: %v", c.ID, err)
	}
}

func TestConnectionRoundTrip(t *testing.T) {
	t.Parallel()
	s := connStore(t)
	ctx := testCtx(t)

	bare := store.Connection{
		ID: "c-bare", Name: "bare", Kind: protocol.GitHubCloud, GitHubURL: "https://github.com", AgentID: "a2",
		Secret:   protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: "kv", PasswordSecret: "pat"},
		Revision: 1, CreatedAt: base, UpdatedAt: base,
	}
	failedTest := newConnection("c-failed", "failed")
	failedTest.LastTest = &protocol.ConnectionTest{JobID: "j3", At: base, Error: protocol.Errorf(protocol.CodeGitHubBadCredentials, "GitHub refused the token")}
	failedTest.PasswordHash = nil
	empty := newConnection("c-empty", "empty lists")
	empty.RequiredScopes = []string{}
	empty.Organizations.Organizations = []protocol.Organization{}
	for _, c := range []store.Connection{newConnection("c-full", "Full one"), bare, failedTest, empty,
		newConnection("c-odd", "ünïcode 'quoted' \"name\"; DROP TABLE connections")} {
		t.Run(c.ID, func(t *testing.T) {
			mustCreateConnection(t, s, c)
			got, err := s.GetConnection(ctx, c.ID)
			if err != nil {
				t.Fatal(err)
			}
			assertEqual(t, "connection", got, c)
		})
	}
}

func TestCreateConnectionErrors(t *testing.T) {
	t.Parallel()
	s := connStore(t)
	ctx := testCtx(t)
	mustCreateConnection(t, s, newConnection("c1", "prod"))

	mod := func(f func(*store.Connection)) store.Connection {
		c := newConnection("c2", "other")
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name               string
		c                  store.Connection
		conflict, notFound bool
		want               string
	}{
		{"name taken", newConnection("c2", "prod"), true, false, `name "prod" is taken`},
		{"name taken in another case", newConnection("c2", "PROD"), true, false, `name "PROD" is taken`},
		{"id taken", newConnection("c1", "other"), true, false, "id is taken"},
		{"unknown agent", mod(func(c *store.Connection) { c.AgentID = "nope" }), false, true, "agent nope"},
		{"no id", mod(func(c *store.Connection) { c.ID = "" }), false, false, "id is required"},
		{"no name", mod(func(c *store.Connection) { c.Name = "" }), false, false, "required"},
		{"no url", mod(func(c *store.Connection) { c.GitHubURL = "" }), false, false, "required"},
		{"no agent", mod(func(c *store.Connection) { c.AgentID = "" }), false, false, "required"},
		{"no revision", mod(func(c *store.Connection) { c.Revision = 0 }), false, false, "starts at 1"},
		{"no creation time", mod(func(c *store.Connection) { c.CreatedAt = time.Time{} }), false, false, "created_at is not set"},
		{"no update time", mod(func(c *store.Connection) { c.UpdatedAt = time.Time{} }), false, false, "updated_at is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CreateConnection(ctx, tc.c)
			if err == nil {
				t.Fatal("CreateConnection succeeded")
			}
			if errors.Is(err, store.ErrConflict) != tc.conflict || errors.Is(err, store.ErrNotFound) != tc.notFound {
				t.Errorf("error %v: conflict %v, not found %v; want %v, %v", err,
					errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound), tc.conflict, tc.notFound)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "store: create connection") {
				t.Errorf("error = %q, want it to say %q", err, tc.want)
			}
		})
	}
	list, err := s.ListConnections(ctx, store.ConnectionFilter{})
	if err != nil || len(list) != 1 {
		t.Errorf("ListConnections = %d connections, %v; want only c1", len(list), err)
	}
}

func TestGetConnectionNotFound(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	_, err := s.GetConnection(testCtx(t), "nope")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "get connection nope") {
		t.Errorf("GetConnection = %v, want ErrNotFound naming the id", err)
	}
}

func TestListConnections(t *testing.T) {
	t.Parallel()
	s := connStore(t)
	ctx := testCtx(t)
	empty, err := s.ListConnections(ctx, store.ConnectionFilter{})
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("ListConnections on an empty store = %#v, %v; want an empty list", empty, err)
	}
	for i, n := range []string{"mike", "Alpha", "zulu", "bravo", "Charlie"} {
		c := newConnection(fmt.Sprintf("c%d", i), n)
		if i%2 == 1 {
			c.AgentID = "a2"
		}
		mustCreateConnection(t, s, c)
	}
	names := func(f store.ConnectionFilter) string {
		t.Helper()
		list, err := s.ListConnections(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range list {
			out = append(out, c.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name string
		f    store.ConnectionFilter
		want string
	}{
		{"all, by name ignoring case", store.ConnectionFilter{}, "Alpha,bravo,Charlie,mike,zulu"},
		{"by agent", store.ConnectionFilter{AgentID: "a2"}, "Alpha,bravo"},
		{"by name", store.ConnectionFilter{Name: "charlie"}, "Charlie"},
		{"by agent and name", store.ConnectionFilter{AgentID: "a1", Name: "ZULU"}, "zulu"},
		{"by agent and name of another agent", store.ConnectionFilter{AgentID: "a2", Name: "zulu"}, ""},
		{"unknown name", store.ConnectionFilter{Name: "nope"}, ""},
	} {
		if got := names(tc.f); got != tc.want {
			t.Errorf("%s: names = %s, want %s", tc.name, got, tc.want)
		}
	}
	list, err := s.ListConnections(ctx, store.ConnectionFilter{Name: "mike"})
	if err != nil || len(list) != 1 {
		t.Fatalf("ListConnections(mike) = %v, %v", list, err)
	}
	assertEqual(t, "listed connection", list[0], newConnection("c0", "mike"))
}

func TestUpdateConnection(t *testing.T) {
	t.Parallel()
	s := connStore(t)
	ctx := testCtx(t)
	mustCreateConnection(t, s, newConnection("c1", "prod"))
	mustCreateConnection(t, s, newConnection("c2", "staging"))

	// Every field changes but the id and the creation time; nil clears.
	c := newConnection("c1", "Production")
	c.Kind, c.GitHubURL, c.AgentID = protocol.GitHubCloud, "https://acme.ghe.com", "a2"
	c.Secret = protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: "kv", PasswordSecret: "pat"}
	c.Organization, c.RequiredScopes, c.Active, c.PasswordHash = "", nil, false, nil
	c.LastTest, c.Organizations = nil, nil
	c.CreatedAt = base.Add(time.Hour) // ignored
	c.UpdatedAt = base.Add(time.Minute)
	if err := s.UpdateConnection(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetConnection(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	want := c
	want.Revision, want.CreatedAt = 2, base
	assertEqual(t, "updated connection", got, want)

	// The same revision again is stale; so is a revision from the future.
	for _, rev := range []int{1, 3} {
		c.Revision, c.Name = rev, "again"
		if err := s.UpdateConnection(ctx, c); !errors.Is(err, store.ErrStale) {
			t.Errorf("UpdateConnection at revision %d = %v, want ErrStale", rev, err)
		}
	}
	for _, tc := range []struct {
		name string
		mod  func(*store.Connection)
		is   error
		want string
	}{
		{"unknown id", func(c *store.Connection) { c.ID = "nope" }, store.ErrNotFound, "update connection nope"},
		{"name taken", func(c *store.Connection) { c.Name = "STAGING" }, store.ErrConflict, `name "STAGING" is taken`},
		{"unknown agent", func(c *store.Connection) { c.AgentID = "nope" }, store.ErrNotFound, "agent nope"},
		{"no update time", func(c *store.Connection) { c.UpdatedAt = time.Time{} }, nil, "updated_at is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := got
			tc.mod(&c)
			err := s.UpdateConnection(ctx, c)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("UpdateConnection = %v, want %v saying %q", err, tc.is, tc.want)
			}
		})
	}
	after, err := s.GetConnection(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "connection after failed updates", after, want)
}

// TestConcurrentConnectionUpdates: of updates made from one read, exactly
// one wins.
func TestConcurrentConnectionUpdates(t *testing.T) {
	t.Parallel()
	s := connStore(t)
	ctx := testCtx(t)
	mustCreateConnection(t, s, newConnection("c1", "prod"))
	const n = 16
	var (
		wg   sync.WaitGroup
		errs = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			c := newConnection("c1", fmt.Sprintf("prod-%d", i))
			errs[i] = s.UpdateConnection(ctx, c)
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("updates %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrStale):
			t.Errorf("update %d: %v, want ErrStale", i, err)
		}
	}
	got, err := s.GetConnection(ctx, "c1")
	if err != nil || winner < 0 || got.Name != fmt.Sprintf("prod-%d", winner) || got.Revision != 2 {
		t.Errorf("after the race: %s revision %d (%v), winner %d", got.Name, got.Revision, err, winner)
	}
}

func TestRecordConnectionResult(t *testing.T) {
	t.Parallel()
	s := connStore(t)
	ctx := testCtx(t)
	c := newConnection("c1", "prod")
	c.LastTest, c.Organizations = nil, nil
	mustCreateConnection(t, s, c)

	test := &protocol.ConnectionTest{JobID: "j9", At: base.Add(time.Hour), OK: true, Login: "bot", Organizations: 1}
	orgs := &store.FetchedOrganizations{JobID: "j9", At: base.Add(time.Hour), Organizations: []protocol.Organization{{Login: "acme", ID: 7}}}
	steps := []struct {
		name     string
		revision int
		r        store.ConnectionResult
		stored   bool
		test     *protocol.ConnectionTest
		orgs     *store.FetchedOrganizations
	}{
		{"a test", 1, store.ConnectionResult{Test: test}, true, test, nil},
		{"organizations keep the test", 1, store.ConnectionResult{Organizations: orgs}, true, test, orgs},
		{"nothing keeps both", 1, store.ConnectionResult{}, true, test, orgs},
		{"an old revision is dropped", 0, store.ConnectionResult{Test: &protocol.ConnectionTest{JobID: "old"}}, false, test, orgs},
	}
	for _, st := range steps {
		ok, err := s.RecordConnectionResult(ctx, "c1", st.revision, st.r)
		if err != nil || ok != st.stored {
			t.Fatalf("%s: RecordConnectionResult = %v, %v; want %v", st.name, ok, err, st.stored)
		}
		got, err := s.GetConnection(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		assertEqual(t, st.name+": last test", got.LastTest, st.test)
		assertEqual(t, st.name+": organizations", got.Organizations, st.orgs)
		if got.Revision != 1 || !got.UpdatedAt.Equal(c.UpdatedAt) {
			t.Errorf("%s: revision %d updated %v; a result changes neither", st.name, got.Revision, got.UpdatedAt)
		}
	}
	if ok, err := s.RecordConnectionResult(ctx, "nope", 1, store.ConnectionResult{Test: test}); ok || !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RecordConnectionResult(unknown) = %v, %v; want ErrNotFound", ok, err)
	}
}

func TestDeleteConnection(t *testing.T) {
	t.Parallel()
	s := connStore(t)
	ctx := testCtx(t)
	mustCreateConnection(t, s, newConnection("c1", "prod"))
	j := newJob("j1", "a1", base)
	j.ConnectionID = "c1"
	mustCreateJob(t, s, j)
	if err := s.DeleteConnection(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetConnection(ctx, "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetConnection after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteConnection(ctx, "c1"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "delete connection c1") {
		t.Errorf("DeleteConnection twice = %v, want ErrNotFound", err)
	}
	// Its jobs stay, and the name is free again.
	if got, err := s.GetJob(ctx, "j1"); err != nil || got.ConnectionID != "c1" {
		t.Errorf("GetJob after delete = %+v, %v", got, err)
	}
	mustCreateConnection(t, s, newConnection("c2", "prod"))
}

// TestMigrateConnections: a store made by the first schema opens with the
// second, its jobs intact and of no connection.
func TestMigrateConnections(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	if err := prepareDir(dir); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), time.Second, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO jobs (id, agent_id, kind, params, state, attempt, timeout_ns, deadline, created_at)
		VALUES ('j-old', 'a1', 'resolve_credentials', '{}', 'queued', 0, 1, 1, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	j, err := s.GetJob(ctx, "j-old")
	if err != nil || j.ConnectionID != "" || j.State != protocol.JobQueued {
		t.Errorf("old job after the migration = %+v, %v", j, err)
	}
	mustCreateAgent(t, s, newAgent("a1", "alpha"), "tok")
	mustCreateConnection(t, s, newConnection("c1", "prod"))
}
