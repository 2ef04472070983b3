package sqlite

import (
	"database/sql"
	"fmt"
	"testing"
	"time"
)

func TestCheckpointer(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	// The writer checkpoints by itself only as a safety net.
	var pages int
	if err := s.write(ctx, func(tx *sql.Tx) error {
		return tx.QueryRow("PRAGMA wal_autocheckpoint").Scan(&pages)
	}); err != nil {
		t.Fatal(err)
	}
	if pages != walSafetyPages {
		t.Errorf("the writer's wal_autocheckpoint is %d, want %d", pages, walSafetyPages)
	}

	// Commits are followed by a checkpoint of the checkpointer's.
	for i := range 50 {
		mustCreateJob(t, s, newJob(fmt.Sprintf("j%d", i), "a1", base))
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.checkpoints.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint within 10s of the commits")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The log was copied into the database: a new checkpoint finds nothing
	// left to move, and the jobs read back.
	var busy, logPages, done int
	if err := s.cdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logPages, &done); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || logPages != done {
		t.Errorf("after the checkpointer: busy %d, log %d pages, %d checkpointed; want all checkpointed", busy, logPages, done)
	}
	if _, err := s.GetJob(ctx, "j49"); err != nil {
		t.Errorf("read back: %v", err)
	}
}
