package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// maxGroup caps how many writes one transaction commits together.
const maxGroup = 256

// writeOp is one write waiting for the writer.
type writeOp struct {
	ctx context.Context
	// fn does the write's statements in tx. An error rolls back fn's
	// changes, and only fn's.
	fn func(tx *sql.Tx) error
	// done gets the outcome: nil once the write is committed.
	done chan error
}

// write hands fn to the writer and waits for the outcome. If ctx ends
// before the writer takes fn up, fn is not run; once taken up it runs to
// the end regardless of ctx, and write waits for the outcome, so that an
// error always means that nothing was written.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.quit:
		return errClosed
	}
	return <-op.done
}

// writer is the only user of the write connection. It takes the writes
// waiting at the moment it is free and commits them in one transaction
// (group commit): while it syncs one group, the next one gathers.
func (s *Store) writer() {
	defer close(s.done)
	group := make([]*writeOp, 0, maxGroup)
	for {
		select {
		case <-s.quit:
			return
		case op := <-s.ops:
			group = append(group[:0], op)
		}
	gather:
		for len(group) < maxGroup {
			select {
			case op := <-s.ops:
				group = append(group, op)
			default:
				break gather
			}
		}
		s.commit(group)
		clear(group)
		s.kickCheckpoint()
	}
}

// commit runs the group's writes in one transaction and tells each its
// outcome. The statements run under a context of their own: a caller's
// cancellation would interrupt the connection and so roll back the whole
// group.
func (s *Store) commit(group []*writeOp) {
	live := make([]*writeOp, 0, len(group))
	for _, op := range group {
		if err := op.ctx.Err(); err != nil {
			op.done <- err
			continue
		}
		live = append(live, op)
	}
	if len(live) == 0 {
		return
	}
	ctx := context.Background()
	s.groups.Add(1)
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		for _, op := range live {
			op.done <- fmt.Errorf("begin: %w", err)
		}
		return
	}

	if len(live) == 1 {
		// No savepoint needed: a failure rolls back the transaction.
		op := live[0]
		if err := op.fn(tx); err != nil {
			tx.Rollback() //nolint:errcheck // the write's error is what counts
			op.done <- err
			return
		}
		op.done <- commitErr(tx.Commit())
		return
	}

	errs := make([]error, len(live))
	for i, op := range live {
		if err := s.inSavepoint(tx, op.fn, &errs[i]); err != nil {
			// The transaction cannot go on: nothing of the group is
			// written. The writes that failed on their own keep their
			// error; the others learn why the group failed.
			tx.Rollback() //nolint:errcheck // already failed
			for j, op := range live {
				switch {
				case j == i && errs[j] != nil:
					op.done <- fmt.Errorf("%w (and the rollback to its savepoint failed: %v)", errs[j], err)
				case j < i && errs[j] != nil:
					op.done <- errs[j]
				default:
					op.done <- fmt.Errorf("write not committed: a write of the same group commit broke the transaction: %v", err)
				}
			}
			return
		}
	}
	cerr := commitErr(tx.Commit())
	for i, op := range live {
		if errs[i] != nil {
			op.done <- errs[i]
		} else {
			op.done <- cerr
		}
	}
}

// inSavepoint runs fn in a savepoint of tx, and rolls back to it if fn
// fails, storing fn's error in *fnErr. It returns an error only when the
// transaction itself is broken.
func (s *Store) inSavepoint(tx *sql.Tx, fn func(*sql.Tx) error, fnErr *error) error {
	if _, err := s.exec(tx, qSavepoint); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if *fnErr = fn(tx); *fnErr != nil {
		if _, err := s.exec(tx, qRollbackTo); err != nil {
			return fmt.Errorf("rollback to savepoint: %w", err)
		}
	}
	if _, err := s.exec(tx, qRelease); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

func commitErr(err error) error {
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// exec runs a write statement in tx, through its prepared form when Open
// prepared it.
func (s *Store) exec(tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	if st, ok := s.wstmt[q]; ok {
		return tx.Stmt(st).Exec(args...)
	}
	return tx.Exec(q, args...)
}

// queryRow runs a query in the writer's transaction tx.
func (s *Store) queryRow(tx *sql.Tx, q string, args ...any) *sql.Row {
	if st, ok := s.wstmt[q]; ok {
		return tx.Stmt(st).QueryRow(args...)
	}
	return tx.QueryRow(q, args...)
}

// read returns the read statement for q, prepared at Open.
func (s *Store) read(q string) *sql.Stmt {
	st, ok := s.rstmt[q]
	if !ok {
		panic("sqlite: read query not prepared at Open: " + q)
	}
	return st
}
