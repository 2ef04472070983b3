package sqlite

import (
	"context"
	"database/sql"
	"time"
)

// Checkpoints move the pages that commits appended to the write-ahead log
// into the database file. SQLite runs them inside the commit that crosses
// wal_autocheckpoint pages (1000 by default): that commit, and every write
// of its group, then waits for some 4 MiB to be copied and the database
// file to be synced, several milliseconds. Here a goroutine of its own, on
// a connection of its own, checkpoints PASSIVE (alongside the writer,
// never blocking it) shortly after commits, and the writer's own automatic
// checkpoint is a safety net at walSafetyPages. Durability is unchanged:
// a commit still returns only once the log is synced.

const (
	// checkpointEvery is the least time between two checkpoints while
	// commits go on: one checkpoint serves the commits of that time.
	checkpointEvery = 50 * time.Millisecond
	// walSafetyPages is the writer's wal_autocheckpoint: it checkpoints
	// itself only if the log grew this long (the checkpointer is stuck
	// behind a long read, for example).
	walSafetyPages = 10000
)

// kickCheckpoint tells the checkpointer that a commit appended to the log.
// It never blocks.
func (s *Store) kickCheckpoint() {
	select {
	case s.cpKick <- struct{}{}:
	default:
	}
}

// checkpointer runs PASSIVE checkpoints after commits until Close.
func (s *Store) checkpointer() {
	defer close(s.cpDone)
	for {
		select {
		case <-s.quit:
			return
		case <-s.cpKick:
		}
		t := time.NewTimer(checkpointEvery)
		select {
		case <-s.quit:
			t.Stop()
			return
		case <-t.C:
		}
		s.checkpoint()
	}
}

// checkpoint runs one PASSIVE checkpoint. A failure is left for the next
// one (or the writer's safety net) to make up.
func (s *Store) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var busy, logPages, done int
	if err := s.cdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logPages, &done); err == nil {
		s.checkpoints.Add(1)
	}
}

// openCheckpointDB opens the checkpointer's connection: the writer's
// settings (WAL, synchronous=FULL, so that the database file is synced
// after the copy), one connection.
func openCheckpointDB(path string, busy time.Duration) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, busy, false))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}
