package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
)

// blockWriter keeps the writer busy in a write of its own until release is
// called, so that the writes made meanwhile queue up.
func blockWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, rel, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.write(context.Background(), func(*sql.Tx) error {
			close(started)
			<-rel
			return nil
		})
	}()
	<-started
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(rel)
			if err := <-done; err != nil {
				t.Errorf("blocking write: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// insertOp is a write that inserts job id the way CreateJob does.
func insertOp(t *testing.T, s *Store, id string) func(*sql.Tx) error {
	t.Helper()
	args, err := jobRow(newJob(id, "a1", base))
	if err != nil {
		t.Fatal(err)
	}
	return func(tx *sql.Tx) error {
		_, err := s.exec(tx, qInsertJob, args...)
		return err
	}
}

// runGroup commits ops as one group, as the writer would, and returns each
// outcome.
func runGroup(s *Store, ops ...*writeOp) []error {
	for _, op := range ops {
		if op.ctx == nil {
			op.ctx = context.Background()
		}
		op.done = make(chan error, 1)
	}
	s.commit(ops)
	errs := make([]error, len(ops))
	for i, op := range ops {
		errs[i] = <-op.done
	}
	return errs
}

// jobIDs lists the stored job ids, oldest first.
func jobIDs(t *testing.T, s *Store) string {
	t.Helper()
	rows, err := s.rdb.QueryContext(testCtx(t), "SELECT id FROM jobs ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return strings.Join(ids, ",")
}

// TestGroupIsolation: in one group commit, a write that fails leaves no
// trace and does not stop the others.
func TestGroupIsolation(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	myErr := errors.New("changed my mind")
	insertB := insertOp(t, s, "B")

	before := s.groups.Load()
	errs := runGroup(s,
		&writeOp{fn: insertOp(t, s, "A")},
		&writeOp{fn: insertOp(t, s, "A")}, // taken
		&writeOp{fn: func(tx *sql.Tx) error { // writes, then fails
			if err := insertB(tx); err != nil {
				return err
			}
			return myErr
		}},
		&writeOp{ctx: canceled, fn: func(*sql.Tx) error { ran = true; return nil }},
		&writeOp{fn: insertOp(t, s, "C")},
	)
	if n := s.groups.Load() - before; n != 1 {
		t.Errorf("the group took %d transactions, want 1", n)
	}
	if errs[0] != nil || errs[4] != nil {
		t.Errorf("the good writes failed: %v, %v", errs[0], errs[4])
	}
	if _, ok := uniqueViolation(errs[1]); !ok {
		t.Errorf("the duplicate insert: %v, want a unique violation", errs[1])
	}
	if !errors.Is(errs[2], myErr) {
		t.Errorf("the failing write: %v, want its own error", errs[2])
	}
	if !errors.Is(errs[3], context.Canceled) || ran {
		t.Errorf("the canceled write: %v (ran: %v), want context.Canceled without running", errs[3], ran)
	}
	if got := jobIDs(t, s); got != "A,C" {
		t.Errorf("stored jobs %q, want A,C", got)
	}
}

// TestGroupBrokenTransaction: a write that breaks the transaction fails its
// whole group, nothing of it is stored, and the store goes on working.
func TestGroupBrokenTransaction(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	errs := runGroup(s,
		&writeOp{fn: insertOp(t, s, "A")},
		&writeOp{fn: func(tx *sql.Tx) error {
			_, err := tx.Exec("ROLLBACK") // ends the group's transaction
			return err
		}},
		&writeOp{fn: insertOp(t, s, "C")},
	)
	for i, err := range errs {
		if err == nil {
			t.Errorf("write %d of the broken group succeeded", i)
		}
	}
	if errs[0] != nil && !strings.Contains(errs[0].Error(), "write not committed") {
		t.Errorf("the first write's error %q does not say why", errs[0])
	}
	if got := jobIDs(t, s); got != "" {
		t.Errorf("stored jobs %q, want none", got)
	}
	mustCreateJob(t, s, newJob("D", "a1", base))
	if got := jobIDs(t, s); got != "D" {
		t.Errorf("stored jobs %q after the broken group, want D", got)
	}
}

// TestGroupFailedWriteAlone: a single write that fails is rolled back.
func TestGroupFailedWriteAlone(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	insertA := insertOp(t, s, "A")
	myErr := errors.New("no")
	errs := runGroup(s, &writeOp{fn: func(tx *sql.Tx) error {
		if err := insertA(tx); err != nil {
			return err
		}
		return myErr
	}})
	if !errors.Is(errs[0], myErr) {
		t.Errorf("error = %v, want the write's own", errs[0])
	}
	if got := jobIDs(t, s); got != "" {
		t.Errorf("stored jobs %q, want none", got)
	}
}

// TestGroupCommitGathers: writes that wait while the writer is busy are
// committed together, each with its own outcome.
func TestGroupCommitGathers(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	mustCreateJob(t, s, newJob("dup", "a1", base))
	release := blockWriter(t, s)
	before := s.groups.Load()

	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		id := fmt.Sprintf("j%02d", i)
		if i == 7 {
			id = "dup"
		}
		wg.Go(func() { errs[i] = s.CreateJob(ctx, newJob(id, "a1", base)) })
	}
	time.Sleep(200 * time.Millisecond) // let them queue behind the blocker
	release()
	wg.Wait()

	for i, err := range errs {
		if i == 7 {
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("write %d: %v, want ErrConflict", i, err)
			}
		} else if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	jobs, err := s.ListJobs(ctx, store.JobFilter{})
	if err != nil || len(jobs) != n {
		t.Errorf("stored %d jobs (%v), want %d", len(jobs), err, n)
	}
	// Had every write had its own transaction, there would be n.
	if groups := s.groups.Load() - before; groups >= n {
		t.Errorf("%d writes took %d transactions: nothing was grouped", n, groups)
	}
}

// TestWriteContextEndsWhileQueued: a write whose context ends before the
// writer takes it up is not made.
func TestWriteContextEndsWhileQueued(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	release := blockWriter(t, s)
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	err := s.CreateJob(ctx, newJob("j1", "a1", base))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CreateJob = %v, want DeadlineExceeded", err)
	}
	release()
	if _, err := s.GetJob(testCtx(t), "j1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJob = %v, want ErrNotFound: the timed-out write was made", err)
	}
	// An already ended context does not even queue.
	if err := s.CreateJob(ctx, newJob("j2", "a1", base)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CreateJob with an ended context = %v", err)
	}
}

// TestCloseDuringWrites: Close while writers run; every write that
// returned nil is there after reopening, and every other one says closed.
func TestCloseDuringWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := testCtx(t)
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		made []string
		wg   sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%05d", w, i)
				err := s.CreateJob(ctx, newJob(id, "a1", base))
				if err != nil {
					if !errors.Is(err, errClosed) {
						t.Errorf("CreateJob: %v, want nil or errClosed", err)
					}
					return
				}
				mu.Lock()
				made = append(made, id)
				mu.Unlock()
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(made) == 0 {
		t.Fatal("no write succeeded before Close")
	}

	s, err = Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range made {
		if _, err := s.GetJob(ctx, id); err != nil {
			t.Errorf("job %s, written before Close: %v", id, err)
		}
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM jobs").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(made) {
		t.Errorf("stored %d jobs, but %d writes succeeded", n, len(made))
	}
}
