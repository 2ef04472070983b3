package sqlite

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

func TestAgentRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	full := newAgent("a-full", "full")
	full.RevokedAt = ptr(base.Add(3 * time.Second))
	for _, tc := range []struct {
		name string
		a    store.Agent
	}{
		{"every field", full},
		{"fresh, never enrolled", store.Agent{ID: "a-fresh", Name: "fresh", CreatedAt: base}},
		{"empty but not nil collections", store.Agent{
			ID: "a-empty", Name: "empty", CreatedAt: base,
			Labels: map[string]string{}, Backends: []protocol.BackendInfo{},
		}},
		{"odd text", store.Agent{
			ID: "a-odd", Name: "ünïcode 'quoted' \"name\"; DROP TABLE agents", CreatedAt: base,
			Labels: map[string]string{"k\x00": "v\n"}, Hostname: "h\x00st",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.CreateAgent(ctx, tc.a, newToken(tc.a.ID, "tok-"+tc.a.ID)); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetAgent(ctx, tc.a.ID)
			if err != nil {
				t.Fatal(err)
			}
			assertEqual(t, "agent", got, tc.a)
		})
	}
}

func TestCreateAgentErrors(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	mustCreateAgent(t, s, newAgent("a1", "alpha"), "tok1")

	for _, tc := range []struct {
		name     string
		a        store.Agent
		tok      store.Token
		conflict bool
		want     string
	}{
		{"name taken", newAgent("a2", "alpha"), newToken("a2", "tok2"), true, `name "alpha" is taken`},
		{"id taken", newAgent("a1", "other"), newToken("a1", "tok3"), true, "id is taken"},
		{"token hash taken", newAgent("a4", "delta"), newToken("a4", "tok1"), true, "token with this hash"},
		{"token of another agent", newAgent("a5", "echo"), newToken("a1", "tok5"), false, "token is for agent a1"},
		{"no id", newAgent("", "foxtrot"), newToken("", "tok6"), false, "id and name are required"},
		{"no name", newAgent("a7", ""), newToken("a7", "tok7"), false, "id and name are required"},
		{"no created time", func() store.Agent { a := newAgent("a8", "hotel"); a.CreatedAt = time.Time{}; return a }(),
			newToken("a8", "tok8"), false, "created_at is not set"},
		{"no token hash", newAgent("a9", "india"), store.Token{AgentID: "a9", CreatedAt: base, ExpiresAt: base}, false, "hash is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CreateAgent(ctx, tc.a, tc.tok)
			if err == nil {
				t.Fatal("CreateAgent succeeded")
			}
			if errors.Is(err, store.ErrConflict) != tc.conflict {
				t.Errorf("errors.Is(%v, ErrConflict) = %v, want %v", err, !tc.conflict, tc.conflict)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "store: create agent") {
				t.Errorf("error = %q, want it to say %q", err, tc.want)
			}
			// Nothing of the failed call was kept: neither the agent nor
			// its token.
			if tc.a.ID != "" && tc.a.ID != "a1" {
				if _, err := s.GetAgent(ctx, tc.a.ID); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("GetAgent after a failed create = %v, want ErrNotFound", err)
				}
			}
		})
	}
	// No token of a failed create was kept.
	if _, err := s.Enroll(ctx, tokenHash("tok2"), []byte("k"), base); !errors.Is(err, store.ErrTokenInvalid) {
		t.Errorf("Enroll with the token of a failed create = %v, want ErrTokenInvalid", err)
	}
	agents, err := s.ListAgents(ctx)
	if err != nil || len(agents) != 1 {
		t.Errorf("ListAgents = %d agents, %v; want only a1", len(agents), err)
	}
}

func TestCreateAgentEmptyTokenAgentID(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	tok := newToken("", "tok")
	if err := s.CreateAgent(ctx, newAgent("a1", "alpha"), tok); err != nil {
		t.Fatal(err)
	}
	a, err := s.Enroll(ctx, tokenHash("tok"), []byte("k"), base)
	if err != nil || a.ID != "a1" {
		t.Errorf("Enroll = %s, %v; want agent a1", a.ID, err)
	}
}

func TestGetAgentNotFound(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	_, err := s.GetAgent(testCtx(t), "nope")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "get agent nope") {
		t.Errorf("GetAgent = %v, want ErrNotFound naming the id", err)
	}
}

func TestListAgents(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	empty, err := s.ListAgents(ctx)
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("ListAgents on an empty store = %#v, %v; want an empty list", empty, err)
	}
	names := []string{"mike", "alpha", "zulu", "Bravo", "charlie"}
	for i, n := range names {
		mustCreateAgent(t, s, newAgent(fmt.Sprintf("a%d", i), n), "tok"+n)
	}
	if err := s.RevokeAgent(ctx, "a2", base); err != nil {
		t.Fatal(err)
	}
	agents, err := s.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range agents {
		got = append(got, a.Name)
	}
	// By name, byte order; the revoked one (zulu) included.
	if want := "Bravo,alpha,charlie,mike,zulu"; strings.Join(got, ",") != want {
		t.Errorf("names = %v, want %s", got, want)
	}
	if agents[4].RevokedAt == nil || !agents[4].RevokedAt.Equal(base) {
		t.Errorf("zulu.RevokedAt = %v, want %v", agents[4].RevokedAt, base)
	}
	assertEqual(t, "listed agent", agents[1], newAgent("a1", "alpha"))
}

func TestRevokeAgent(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	mustCreateAgent(t, s, newAgent("a1", "alpha"), "first")
	mustCreateAgent(t, s, newAgent("a2", "bravo"), "other")

	if err := s.RevokeAgent(ctx, "nope", base); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RevokeAgent(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.RevokeAgent(ctx, "a1", time.Time{}); err == nil {
		t.Error("RevokeAgent with no time succeeded")
	}
	at := base.Add(time.Minute)
	if err := s.RevokeAgent(ctx, "a1", at); err != nil {
		t.Fatal(err)
	}
	// Again, later: the first time stays.
	if err := s.RevokeAgent(ctx, "a1", at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetAgent(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if a.RevokedAt == nil || !a.RevokedAt.Equal(at) {
		t.Errorf("RevokedAt = %v, want %v", a.RevokedAt, at)
	}
	// Its token is void, even if the agent were somehow not revoked.
	var voided int64
	if err := s.rdb.QueryRowContext(ctx, "SELECT voided_at FROM enrollment_tokens WHERE hash = ?", tokenHash("first")).Scan(&voided); err != nil {
		t.Fatal(err)
	}
	if voided != at.UnixNano() {
		t.Errorf("voided_at = %d, want %d", voided, at.UnixNano())
	}
	if _, err := s.Enroll(ctx, tokenHash("first"), []byte("k"), base); !errors.Is(err, store.ErrTokenInvalid) {
		t.Errorf("Enroll after revocation = %v, want ErrTokenInvalid", err)
	}
	// A token added after the revocation does not work either.
	tok := newToken("a1", "after")
	tok.CreatedAt = at.Add(time.Second)
	if err := s.AddToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, tokenHash("after"), []byte("k"), tok.CreatedAt); !errors.Is(err, store.ErrTokenInvalid) {
		t.Errorf("Enroll with a token of a revoked agent = %v, want ErrTokenInvalid", err)
	}
	// The other agent is untouched.
	if _, err := s.Enroll(ctx, tokenHash("other"), []byte("k"), base); err != nil {
		t.Errorf("Enroll for another agent: %v", err)
	}
}

func TestAddToken(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	mustCreateAgent(t, s, newAgent("a1", "alpha"), "t1")
	mustCreateAgent(t, s, newAgent("a2", "bravo"), "b1")

	t2 := newToken("a1", "t2")
	t2.CreatedAt = base.Add(time.Minute)
	t2.ExpiresAt = base.Add(2 * time.Hour)
	if err := s.AddToken(ctx, t2); err != nil {
		t.Fatal(err)
	}
	t3 := newToken("a1", "t3")
	t3.CreatedAt = base.Add(2 * time.Minute)
	t3.ExpiresAt = base.Add(2 * time.Hour)
	if err := s.AddToken(ctx, t3); err != nil {
		t.Fatal(err)
	}
	now := base.Add(3 * time.Minute)
	for _, tc := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"first token voided by the second", "t1", false},
		{"second token voided by the third", "t2", false},
		{"newest token works", "t3", true},
		{"another agent's token is untouched", "b1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Enroll(ctx, tokenHash(tc.tok), []byte("k"), now)
			if tc.ok && err != nil {
				t.Errorf("Enroll: %v", err)
			}
			if !tc.ok && !errors.Is(err, store.ErrTokenInvalid) {
				t.Errorf("Enroll = %v, want ErrTokenInvalid", err)
			}
		})
	}

	// A used token is not voided again: used_at stays, voided_at stays NULL.
	t4 := newToken("a1", "t4")
	t4.CreatedAt = base.Add(4 * time.Minute)
	if err := s.AddToken(ctx, t4); err != nil {
		t.Fatal(err)
	}
	var voided *int64
	if err := s.rdb.QueryRowContext(ctx, "SELECT voided_at FROM enrollment_tokens WHERE hash = ?", tokenHash("t3")).Scan(&voided); err != nil {
		t.Fatal(err)
	}
	if voided != nil {
		t.Errorf("the used token t3 was voided at %d", *voided)
	}

	for _, tc := range []struct {
		name     string
		tok      store.Token
		notFound bool
		conflict bool
	}{
		{"unknown agent", newToken("nope", "x1"), true, false},
		{"hash taken", newToken("a1", "b1"), false, true},
		{"no agent", newToken("", "x2"), false, false},
		{"no expiry", store.Token{Hash: tokenHash("x3"), AgentID: "a1", CreatedAt: base}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.AddToken(ctx, tc.tok)
			if err == nil {
				t.Fatal("AddToken succeeded")
			}
			if errors.Is(err, store.ErrNotFound) != tc.notFound || errors.Is(err, store.ErrConflict) != tc.conflict {
				t.Errorf("AddToken = %v; want not found %v, conflict %v", err, tc.notFound, tc.conflict)
			}
		})
	}
	// The failed AddToken with a taken hash did not void t4.
	if _, err := s.Enroll(ctx, tokenHash("t4"), []byte("k"), now); err != nil {
		t.Errorf("Enroll with t4 after a failed AddToken: %v", err)
	}
}

func TestEnroll(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	a := newAgent("a1", "alpha")
	a.PublicKey, a.EnrolledAt = nil, nil
	mustCreateAgent(t, s, a, "tok") // expires at base+1h

	for _, tc := range []struct {
		name string
		hash []byte
		key  []byte
		now  time.Time
		want error // nil: success
	}{
		{"unknown token", tokenHash("nope"), []byte("k1"), base, store.ErrTokenInvalid},
		{"no hash", nil, []byte("k1"), base, store.ErrTokenInvalid},
		{"expired: exactly at expiry", tokenHash("tok"), []byte("k1"), base.Add(time.Hour), store.ErrTokenInvalid},
		{"expired: after expiry", tokenHash("tok"), []byte("k1"), base.Add(2 * time.Hour), store.ErrTokenInvalid},
		{"no public key", tokenHash("tok"), nil, base, errors.New("no public key given")},
		{"valid: a nanosecond before expiry", tokenHash("tok"), []byte("k1"), base.Add(time.Hour - 1), nil},
		{"reused", tokenHash("tok"), []byte("k2"), base.Add(time.Minute), store.ErrTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Enroll(ctx, tc.hash, tc.key, tc.now)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Enroll: %v", err)
			case tc.want == nil:
				want := a
				want.PublicKey = tc.key
				want.EnrolledAt = &tc.now
				assertEqual(t, "enrolled agent", got, want)
				stored, err := s.GetAgent(ctx, "a1")
				if err != nil {
					t.Fatal(err)
				}
				assertEqual(t, "stored agent", stored, want)
			case errors.Is(tc.want, store.ErrTokenInvalid) && !errors.Is(err, store.ErrTokenInvalid):
				t.Errorf("Enroll = %v, want ErrTokenInvalid", err)
			case err == nil || !strings.Contains(err.Error(), tc.want.Error()):
				t.Errorf("Enroll = %v, want %v", err, tc.want)
			}
		})
	}
	// The failed tries changed nothing: the key is the winner's.
	stored, err := s.GetAgent(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if string(stored.PublicKey) != "k1" {
		t.Errorf("public key = %q, want k1", stored.PublicKey)
	}
}

func TestReEnrollReplacesKey(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	mustCreateAgent(t, s, newAgent("a1", "alpha"), "t1")
	if _, err := s.Enroll(ctx, tokenHash("t1"), []byte("old-key"), base); err != nil {
		t.Fatal(err)
	}
	t2 := newToken("a1", "t2")
	t2.CreatedAt = base.Add(time.Minute)
	if err := s.AddToken(ctx, t2); err != nil {
		t.Fatal(err)
	}
	later := base.Add(2 * time.Minute)
	a, err := s.Enroll(ctx, tokenHash("t2"), []byte("new-key"), later)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.PublicKey) != "new-key" || a.EnrolledAt == nil || !a.EnrolledAt.Equal(later) {
		t.Errorf("after re-enrollment: key %q, enrolled %v; want new-key at %v", a.PublicKey, a.EnrolledAt, later)
	}
}

func TestEnrollRace(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	for round := range 5 {
		id := fmt.Sprintf("a%d", round)
		tok := fmt.Sprintf("tok%d", round)
		mustCreateAgent(t, s, newAgent(id, "agent-"+id), tok)

		const n = 10
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, n)
		)
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = s.Enroll(ctx, tokenHash(tok), fmt.Appendf(nil, "key-%d", i), base.Add(time.Minute))
			})
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("round %d: callers %d and %d both enrolled", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrTokenInvalid):
				t.Errorf("round %d: caller %d: %v, want ErrTokenInvalid", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody enrolled", round)
		}
		a, err := s.GetAgent(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("key-%d", winner); string(a.PublicKey) != want {
			t.Errorf("round %d: stored key %q, want the winner's %q", round, a.PublicKey, want)
		}
	}
}

func TestUpdateAgentInfo(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	a := newAgent("a1", "alpha")
	mustCreateAgent(t, s, a, "tok")

	info := store.AgentInfo{
		AgentVersion: "2.0.0",
		Hostname:     "new-host",
		OS:           "linux/arm64",
		Backends: []protocol.BackendInfo{
			{Name: "azure", Settings: map[string]string{"cloud": "AzurePublicCloud"}},
		},
		LastSeen: base.Add(time.Hour),
	}
	if err := s.UpdateAgentInfo(ctx, "a1", info); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAgent(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	want := a
	want.AgentVersion, want.Hostname, want.OS, want.Backends = info.AgentVersion, info.Hostname, info.OS, info.Backends
	want.LastSeen = &info.LastSeen
	assertEqual(t, "agent after UpdateAgentInfo", got, want)

	// A zero LastSeen stores none; nil backends stay nil.
	if err := s.UpdateAgentInfo(ctx, "a1", store.AgentInfo{AgentVersion: "2.0.1"}); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetAgent(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if got.LastSeen != nil || got.Backends != nil || got.AgentVersion != "2.0.1" {
		t.Errorf("after a bare update: last seen %v, backends %v, version %q", got.LastSeen, got.Backends, got.AgentVersion)
	}

	if err := s.UpdateAgentInfo(ctx, "nope", info); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateAgentInfo(unknown) = %v, want ErrNotFound", err)
	}
}
