package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// ListJobs' limits.
const (
	// DefaultListLimit is how many jobs ListJobs returns when the filter
	// says no limit.
	DefaultListLimit = 100
	// MaxListLimit is the most ListJobs returns, whatever the filter says.
	MaxListLimit = 1000
)

// CreateJob stores a new job, every field as given. The job's state must
// be a valid one and its CreatedAt and Deadline set. ErrConflict if the id
// is taken. The agent is not checked.
func (s *Store) CreateJob(ctx context.Context, j store.Job) error {
	fail := func(err error) error { return fmt.Errorf("store: create job %s: %w", j.ID, err) }
	args, err := jobRow(j)
	if err != nil {
		return fail(err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := s.exec(tx, qInsertJob, args...); err != nil {
			if _, ok := uniqueViolation(err); ok {
				return fmt.Errorf("the id is taken: %w", store.ErrConflict)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// GetJob returns the job with this id, or ErrNotFound.
func (s *Store) GetJob(ctx context.Context, id string) (store.Job, error) {
	j, err := scanJob(s.read(qSelectJob).QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("store: get job %s: %w", id, err)
	}
	return j, nil
}

// ListJobs returns the jobs matching f, newest first (by CreatedAt, then
// by id, descending): at most f.Limit of them, DefaultListLimit when
// f.Limit is 0 or less and MaxListLimit when it is more. The list is empty,
// not nil, when nothing matches.
func (s *Store) ListJobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	var args []any
	if f.AgentID != "" {
		args = append(args, f.AgentID)
	}
	if f.State != "" {
		if !f.State.Valid() {
			return nil, fmt.Errorf("store: list jobs: state %q is not a job state", f.State)
		}
		args = append(args, string(f.State))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	args = append(args, limit)
	jobs, err := s.queryJobs(ctx, qListJobs(f.AgentID != "", f.State != ""), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list jobs: %w", err)
	}
	return jobs, nil
}

// OpenJobs returns every job in state queued, dispatched or running, oldest
// first (by CreatedAt, then by id). The list is empty, not nil, when there
// are none.
func (s *Store) OpenJobs(ctx context.Context) ([]store.Job, error) {
	jobs, err := s.queryJobs(ctx, qOpenJobs)
	if err != nil {
		return nil, fmt.Errorf("store: open jobs: %w", err)
	}
	return jobs, nil
}

// UpdateJob writes j's state, attempt, dispatched, accepted and finished
// times, error and output, if the stored job's state is one of from, and
// reports whether it did. The other fields of j are not looked at but for
// its id. An unknown id gives (false, ErrNotFound): the check costs a
// primary-key lookup, and only when nothing was written. An empty from is a
// programming mistake and an error.
func (s *Store) UpdateJob(ctx context.Context, j store.Job, from ...protocol.JobState) (bool, error) {
	fail := func(err error) (bool, error) { return false, fmt.Errorf("store: update job %s: %w", j.ID, err) }
	if len(from) == 0 {
		return fail(errors.New("no state to move from was given"))
	}
	if !j.State.Valid() {
		return fail(fmt.Errorf("state %q is not a job state", j.State))
	}
	var states []any
	for _, st := range from {
		if !st.Valid() {
			return fail(fmt.Errorf("from state %q is not a job state", st))
		}
		if !slices.Contains(states, any(string(st))) {
			states = append(states, string(st))
		}
	}
	progress, err := jobProgress(j)
	if err != nil {
		return fail(err)
	}
	args := append(append(progress, j.ID), states...)
	var updated bool
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.exec(tx, qUpdateJob(len(states)), args...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			updated = true
			return nil
		}
		var one int
		if err := s.queryRow(tx, qJobExists, j.ID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		} else if err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return updated, nil
}

// jobRow is j's columns in the order of jobCols.
func jobRow(j store.Job) ([]any, error) {
	if j.ID == "" || j.AgentID == "" || j.Kind == "" {
		return nil, errors.New("the job's id, agent id and kind are required")
	}
	if !j.State.Valid() {
		return nil, fmt.Errorf("state %q is not a job state", j.State)
	}
	params, err := jsonText("params", j.Params)
	if err != nil {
		return nil, err
	}
	deadline, err := nanos("deadline", j.Deadline)
	if err != nil {
		return nil, err
	}
	created, err := nanos("created_at", j.CreatedAt)
	if err != nil {
		return nil, err
	}
	progress, err := jobProgress(j)
	if err != nil {
		return nil, err
	}
	return append(append([]any{j.ID, j.AgentID, string(j.Kind), params, string(j.State), j.Attempt,
		int64(j.Timeout), deadline, created}, progress[2:]...), j.ConnectionID), nil
}

// jobProgress is what UpdateJob writes, in the order of qUpdateJob: state,
// attempt, dispatched_at, accepted_at, finished_at, error, output.
func jobProgress(j store.Job) ([]any, error) {
	dispatched, err := nullNanos("dispatched_at", j.DispatchedAt)
	if err != nil {
		return nil, err
	}
	accepted, err := nullNanos("accepted_at", j.AcceptedAt)
	if err != nil {
		return nil, err
	}
	finished, err := nullNanos("finished_at", j.FinishedAt)
	if err != nil {
		return nil, err
	}
	jerr, err := nullJSON("error", j.Error)
	if err != nil {
		return nil, err
	}
	out, err := nullJSON("output", j.Output)
	if err != nil {
		return nil, err
	}
	return []any{string(j.State), j.Attempt, dispatched, accepted, finished, jerr, out}, nil
}

// queryJobs runs a read statement that selects jobCols.
func (s *Store) queryJobs(ctx context.Context, q string, args ...any) ([]store.Job, error) {
	rows, err := s.read(q).QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	jobs := []store.Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, rows.Err()
}

// scanJob reads a row of jobCols.
func scanJob(r rowScanner) (store.Job, error) {
	var (
		j                              store.Job
		kind, params, state            string
		timeout, deadline, created     int64
		dispatched, accepted, finished sql.NullInt64
		jerr, out                      sql.NullString
	)
	if err := r.Scan(&j.ID, &j.AgentID, &kind, &params, &state, &j.Attempt, &timeout, &deadline,
		&created, &dispatched, &accepted, &finished, &jerr, &out, &j.ConnectionID); err != nil {
		return store.Job{}, err
	}
	j.Kind = protocol.JobKind(kind)
	j.State = protocol.JobState(state)
	if err := fromJSON("params", params, &j.Params); err != nil {
		return store.Job{}, err
	}
	var err error
	if j.Error, err = fromNullJSON[protocol.Error]("error", jerr); err != nil {
		return store.Job{}, err
	}
	if j.Output, err = fromNullJSON[protocol.Output]("output", out); err != nil {
		return store.Job{}, err
	}
	j.Timeout = time.Duration(timeout)
	j.Deadline = fromNanos(deadline)
	j.CreatedAt = fromNanos(created)
	j.DispatchedAt = fromNullNanos(dispatched)
	j.AcceptedAt = fromNullNanos(accepted)
	j.FinishedAt = fromNullNanos(finished)
	return j, nil
}
