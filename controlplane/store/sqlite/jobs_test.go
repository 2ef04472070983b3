package sqlite

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// finishedJob is a job that ran and succeeded, every field set.
func finishedJob(id string) store.Job {
	j := newJob(id, "a1", base)
	j.State = protocol.JobSucceeded
	j.Attempt = 2
	j.DispatchedAt = ptr(base.Add(time.Second))
	j.AcceptedAt = ptr(base.Add(2 * time.Second))
	j.FinishedAt = ptr(base.Add(3 * time.Second))
	j.Output = &protocol.Output{
		Credentials: &protocol.CredentialsOutput{
			Backend:        "aws",
			Reference:      *j.Params.Secret,
			KeysFound:      []string{"username", "password"},
			VersionID:      "v-1",
			VersionCreated: ptr(base.Add(-time.Hour)),
			Fingerprint:    "9f86d081884c7d65",
		},
		Connection: &protocol.ConnectionOutput{
			APIURL:             "https://git.example.com/api/v3",
			GHESVersion:        "3.14.2",
			Login:              "bot",
			TokenType:          "classic_pat",
			ScopesListable:     true,
			Scopes:             []string{"repo", "read:org"},
			MissingScopes:      []string{"workflow"},
			Organizations:      []protocol.Organization{{Login: "platform", ID: 42, Description: "the platform"}},
			RateLimitRemaining: 4999,
			Timings:            map[string]int64{"secret": 3, "user": 40},
		},
		Organizations: &protocol.OrganizationsOutput{
			Organizations: []protocol.Organization{{Login: "platform", ID: 42}},
		},
	}
	return j
}

func TestJobRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	failed := newJob("j-failed", "a1", base)
	failed.State = protocol.JobFailed
	failed.Attempt = 1
	failed.FinishedAt = ptr(base.Add(time.Second))
	failed.Error = protocol.Errorf(protocol.CodeSecretNotFound, "secret %s was not found in aws", failed.Params.Secret)
	azure := newJob("j-azure", "a1", base)
	azure.Kind = protocol.KindResolveCredentials
	azure.Params = protocol.Params{Secret: &protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: "kv-1", UsernameSecret: "u", PasswordSecret: "p"}}
	unknownKind := newJob("j-unknown", "a1", base)
	unknownKind.Kind = "from_the_future"
	unknownKind.Params = protocol.Params{}
	unknownKind.Timeout = 0
	ofConnection := finishedJob("j-connection")
	ofConnection.ConnectionID = "con_1"

	for _, j := range []store.Job{newJob("j-queued", "a1", base), finishedJob("j-done"), failed, azure, unknownKind, ofConnection} {
		t.Run(j.ID, func(t *testing.T) {
			if err := s.CreateJob(ctx, j); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetJob(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			assertEqual(t, "job", got, j)
		})
	}
}

func TestCreateJobErrors(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	mustCreateJob(t, s, newJob("j1", "a1", base))

	mod := func(f func(*store.Job)) store.Job {
		j := newJob("j2", "a1", base)
		f(&j)
		return j
	}
	for _, tc := range []struct {
		name     string
		j        store.Job
		conflict bool
		want     string
	}{
		{"id taken", newJob("j1", "a2", base), true, "id is taken"},
		{"no id", mod(func(j *store.Job) { j.ID = "" }), false, "required"},
		{"no agent", mod(func(j *store.Job) { j.AgentID = "" }), false, "required"},
		{"no kind", mod(func(j *store.Job) { j.Kind = "" }), false, "required"},
		{"bad state", mod(func(j *store.Job) { j.State = "sleeping" }), false, `state "sleeping"`},
		{"no deadline", mod(func(j *store.Job) { j.Deadline = time.Time{} }), false, "deadline is not set"},
		{"bad finish time", mod(func(j *store.Job) { j.FinishedAt = &time.Time{} }), false, "finished_at is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CreateJob(ctx, tc.j)
			if err == nil {
				t.Fatal("CreateJob succeeded")
			}
			if errors.Is(err, store.ErrConflict) != tc.conflict {
				t.Errorf("errors.Is(%v, ErrConflict) = %v", err, !tc.conflict)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "store: create job "+tc.j.ID+":") {
				t.Errorf("error = %q, want it to say %q", err, tc.want)
			}
		})
	}
	// The conflicting create did not overwrite j1.
	j1, err := s.GetJob(ctx, "j1")
	if err != nil || j1.AgentID != "a1" {
		t.Errorf("j1 = %+v, %v; want it unchanged", j1, err)
	}
}

func TestGetJobNotFound(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	_, err := s.GetJob(testCtx(t), "nope")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "get job nope") {
		t.Errorf("GetJob = %v, want ErrNotFound naming the id", err)
	}
}

func TestUpdateJob(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	for _, tc := range []struct {
		name    string
		stored  protocol.JobState
		from    []protocol.JobState
		updated bool
	}{
		{"from the stored state", protocol.JobQueued, []protocol.JobState{protocol.JobQueued}, true},
		{"from one of several", protocol.JobRunning, []protocol.JobState{protocol.JobDispatched, protocol.JobRunning}, true},
		{"from every state, twice", protocol.JobDispatched, []protocol.JobState{
			protocol.JobQueued, protocol.JobDispatched, protocol.JobRunning, protocol.JobSucceeded,
			protocol.JobFailed, protocol.JobExpired, protocol.JobCanceled, protocol.JobQueued, protocol.JobRunning,
		}, true},
		{"not from the stored state", protocol.JobSucceeded, []protocol.JobState{protocol.JobQueued, protocol.JobRunning}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "j-" + strings.ReplaceAll(tc.name, " ", "-")
			j := newJob(id, "a1", base)
			j.State = tc.stored
			mustCreateJob(t, s, j)
			before, err := s.GetJob(ctx, id)
			if err != nil {
				t.Fatal(err)
			}

			upd := finishedJob(id)
			// Fields UpdateJob does not write: changing them must not matter.
			upd.AgentID, upd.Kind, upd.Timeout = "other", protocol.KindListOrganizations, time.Hour
			upd.CreatedAt, upd.Deadline = base.Add(time.Hour), base.Add(time.Hour)
			upd.Params = protocol.Params{GitHubURL: "https://evil.example"}

			ok, err := s.UpdateJob(ctx, upd, tc.from...)
			if err != nil || ok != tc.updated {
				t.Fatalf("UpdateJob = %v, %v; want %v, nil", ok, err, tc.updated)
			}
			got, err := s.GetJob(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			want := before
			if tc.updated {
				f := finishedJob(id)
				want.State, want.Attempt, want.Output = f.State, f.Attempt, f.Output
				want.DispatchedAt, want.AcceptedAt, want.FinishedAt = f.DispatchedAt, f.AcceptedAt, f.FinishedAt
			}
			assertEqual(t, "job after UpdateJob", got, want)
		})
	}

	t.Run("unknown id", func(t *testing.T) {
		ok, err := s.UpdateJob(ctx, finishedJob("nope"), protocol.JobRunning)
		if ok || !errors.Is(err, store.ErrNotFound) {
			t.Errorf("UpdateJob = %v, %v; want false, ErrNotFound", ok, err)
		}
	})
	for _, tc := range []struct {
		name string
		j    store.Job
		from []protocol.JobState
		want string
	}{
		{"no from state", finishedJob("j-x"), nil, "no state to move from"},
		{"bad from state", finishedJob("j-x"), []protocol.JobState{"asleep"}, `from state "asleep"`},
		{"bad new state", func() store.Job { j := finishedJob("j-x"); j.State = ""; return j }(), []protocol.JobState{protocol.JobQueued}, `state ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := s.UpdateJob(ctx, tc.j, tc.from...)
			if ok || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("UpdateJob = %v, %v; want false and an error saying %q", ok, err, tc.want)
			}
		})
	}
}

func TestUpdateJobClearsOptionalFields(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	// A job that was dispatched and is requeued: its dispatch time, error
	// and output go back to nil because UpdateJob writes what it is given.
	j := finishedJob("j1")
	j.State = protocol.JobDispatched
	j.Error = protocol.Errorf(protocol.CodeAgentOffline, "gone")
	mustCreateJob(t, s, j)
	requeued := newJob("j1", "a1", base)
	requeued.Attempt = 1
	if ok, err := s.UpdateJob(ctx, requeued, protocol.JobDispatched); err != nil || !ok {
		t.Fatalf("UpdateJob = %v, %v", ok, err)
	}
	got, err := s.GetJob(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	if got.DispatchedAt != nil || got.AcceptedAt != nil || got.FinishedAt != nil || got.Error != nil || got.Output != nil ||
		got.State != protocol.JobQueued || got.Attempt != 1 {
		t.Errorf("after requeue: %s", dump(got))
	}
}

// TestFinishOnce: a result recorded twice is kept once, the first time.
func TestFinishOnce(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	j := newJob("j1", "a1", base)
	j.State = protocol.JobRunning
	mustCreateJob(t, s, j)

	first := finishedJob("j1")
	second := finishedJob("j1")
	second.State = protocol.JobFailed
	second.Output = nil
	second.Error = protocol.Errorf(protocol.CodeTimeout, "late")
	second.FinishedAt = ptr(base.Add(time.Hour))

	open := []protocol.JobState{protocol.JobQueued, protocol.JobDispatched, protocol.JobRunning}
	if ok, err := s.UpdateJob(ctx, first, open...); err != nil || !ok {
		t.Fatalf("first finish = %v, %v; want true", ok, err)
	}
	if ok, err := s.UpdateJob(ctx, second, open...); err != nil || ok {
		t.Fatalf("second finish = %v, %v; want false, nil", ok, err)
	}
	got, err := s.GetJob(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "job", got, first)
}

// TestConcurrentFinishers: of many finishers of one job, exactly one
// records its result, and the stored result is that one's.
func TestConcurrentFinishers(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	open := []protocol.JobState{protocol.JobQueued, protocol.JobDispatched, protocol.JobRunning}
	for round := range 5 {
		id := fmt.Sprintf("j%d", round)
		j := newJob(id, "a1", base)
		j.State = protocol.JobRunning
		mustCreateJob(t, s, j)

		const n = 16
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			oks   = make([]bool, n)
			errs  = make([]error, n)
		)
		for i := range n {
			wg.Go(func() {
				r := finishedJob(id)
				r.Attempt = i + 1 // tells the finishers apart
				<-start
				oks[i], errs[i] = s.UpdateJob(ctx, r, open...)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i := range n {
			if errs[i] != nil {
				t.Errorf("round %d: finisher %d: %v", round, i, errs[i])
			}
			if oks[i] {
				if winner >= 0 {
					t.Errorf("round %d: finishers %d and %d both recorded", round, winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no finisher recorded", round)
		}
		got, err := s.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attempt != winner+1 || got.State != protocol.JobSucceeded {
			t.Errorf("round %d: stored attempt %d state %s, want the winner's attempt %d", round, got.Attempt, got.State, winner+1)
		}
	}
}

func TestListJobs(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	empty, err := s.ListJobs(ctx, store.JobFilter{})
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("ListJobs on an empty store = %#v, %v; want an empty list", empty, err)
	}

	// 1010 jobs over two agents and three states, made concurrently. Job i
	// is created at base+i/2 seconds, so pairs share a time and the id
	// breaks the tie.
	const total = 1010
	states := []protocol.JobState{protocol.JobQueued, protocol.JobRunning, protocol.JobSucceeded}
	jobAt := func(i int) store.Job {
		j := newJob(fmt.Sprintf("j%04d", i), []string{"a1", "a2"}[i%2], base.Add(time.Duration(i/2)*time.Second))
		j.State = states[i%3]
		return j
	}
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < total; i += 16 {
				if err := s.CreateJob(ctx, jobAt(i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// expect lists the ids matching keep, newest first, at most limit.
	expect := func(keep func(i int) bool, limit int) []string {
		var ids []string
		for i := total - 1; i >= 0 && len(ids) < limit; i-- {
			if keep(i) {
				ids = append(ids, jobAt(i).ID)
			}
		}
		return ids
	}
	all := func(int) bool { return true }
	for _, tc := range []struct {
		name string
		f    store.JobFilter
		want []string
	}{
		{"default limit", store.JobFilter{}, expect(all, 100)},
		{"negative limit is the default", store.JobFilter{Limit: -5}, expect(all, 100)},
		{"small limit", store.JobFilter{Limit: 3}, expect(all, 3)},
		{"limit capped", store.JobFilter{Limit: 5000}, expect(all, 1000)},
		{"by agent", store.JobFilter{AgentID: "a2", Limit: 1000}, expect(func(i int) bool { return i%2 == 1 }, 1000)},
		{"by state", store.JobFilter{State: protocol.JobRunning, Limit: 10}, expect(func(i int) bool { return i%3 == 1 }, 10)},
		{"by agent and state", store.JobFilter{AgentID: "a1", State: protocol.JobSucceeded, Limit: 1000},
			expect(func(i int) bool { return i%2 == 0 && i%3 == 2 }, 1000)},
		{"unknown agent", store.JobFilter{AgentID: "nope"}, nil},
		{"state with no jobs", store.JobFilter{State: protocol.JobExpired}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobs, err := s.ListJobs(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, j := range jobs {
				ids = append(ids, j.ID)
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("got %d jobs %v...; want %d %v...", len(ids), head(ids), len(tc.want), head(tc.want))
			}
		})
	}
	// The rows are whole jobs.
	jobs, err := s.ListJobs(ctx, store.JobFilter{Limit: 1})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("ListJobs = %d, %v", len(jobs), err)
	}
	assertEqual(t, "listed job", jobs[0], jobAt(total-1))

	if _, err := s.ListJobs(ctx, store.JobFilter{State: "sleeping"}); err == nil {
		t.Error("ListJobs with an unknown state succeeded")
	}
}

func head(ids []string) []string { return ids[:min(len(ids), 4)] }

func TestOpenJobs(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	empty, err := s.OpenJobs(ctx)
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("OpenJobs on an empty store = %#v, %v; want an empty list", empty, err)
	}
	states := []protocol.JobState{
		protocol.JobSucceeded, protocol.JobRunning, protocol.JobFailed, protocol.JobQueued,
		protocol.JobExpired, protocol.JobDispatched, protocol.JobCanceled, protocol.JobQueued,
	}
	// Created newest first, so that insertion order is not the answer.
	var want []string
	for i, st := range states {
		j := newJob(fmt.Sprintf("j%d", i), "a1", base.Add(-time.Duration(i)*time.Second))
		j.State = st
		mustCreateJob(t, s, j)
		if !st.Terminal() {
			want = append([]string{j.ID}, want...)
		}
	}
	// A job that moves to a terminal state leaves the list.
	fin := newJob("j1", "a1", base)
	fin.State = protocol.JobCanceled
	if ok, err := s.UpdateJob(ctx, fin, protocol.JobRunning); err != nil || !ok {
		t.Fatalf("UpdateJob = %v, %v", ok, err)
	}
	want = slices.DeleteFunc(want, func(id string) bool { return id == "j1" })

	jobs, err := s.OpenJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("OpenJobs = %v, want %v", ids, want)
	}
}

// TestQueryPlans: the lists are served by their indexes, without sorting.
func TestQueryPlans(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name  string
		q     string
		args  []any
		index string
	}{
		{"open jobs", qOpenJobs, nil, "jobs_open"},
		{"all jobs", qListJobs(false, false), []any{10}, "jobs_created"},
		{"jobs by agent", qListJobs(true, false), []any{"a1", 10}, "jobs_agent_created"},
		{"jobs by state", qListJobs(false, true), []any{"queued", 10}, "jobs_state_created"},
		{"agents", qListAgents, nil, "sqlite_autoindex_agents_2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := s.rdb.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tc.q, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			p := strings.Join(plan, "; ")
			if !strings.Contains(p, "INDEX "+tc.index) || strings.Contains(p, "TEMP B-TREE") {
				t.Errorf("plan %q does not use %s without sorting", p, tc.index)
			}
		})
	}
}
