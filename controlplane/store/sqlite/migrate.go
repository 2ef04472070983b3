package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are the schema's steps, in order: step i (from 0) brings the
// database from user_version i to i+1. Never edit a step that has shipped;
// append a new one.
var migrations = []string{
	// 1: agents, their enrollment tokens, jobs.
	`
CREATE TABLE agents (
	id            TEXT    NOT NULL PRIMARY KEY,
	name          TEXT    NOT NULL UNIQUE,
	labels        TEXT    NOT NULL CHECK (json_valid(labels)),
	public_key    BLOB,
	created_at    INTEGER NOT NULL,
	enrolled_at   INTEGER,
	revoked_at    INTEGER,
	agent_version TEXT    NOT NULL,
	hostname      TEXT    NOT NULL,
	os            TEXT    NOT NULL,
	backends      TEXT    NOT NULL CHECK (json_valid(backends)),
	last_seen     INTEGER
) STRICT;

-- A token is spent when used_at is set (by Enroll) and void when voided_at
-- is set (by a newer token or the agent's revocation).
CREATE TABLE enrollment_tokens (
	hash       BLOB    NOT NULL PRIMARY KEY,
	agent_id   TEXT    NOT NULL REFERENCES agents (id),
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER,
	voided_at  INTEGER
) STRICT;

CREATE INDEX enrollment_tokens_unused ON enrollment_tokens (agent_id)
	WHERE used_at IS NULL AND voided_at IS NULL;

CREATE TABLE jobs (
	id            TEXT    NOT NULL PRIMARY KEY,
	agent_id      TEXT    NOT NULL,
	kind          TEXT    NOT NULL,
	params        TEXT    NOT NULL CHECK (json_valid(params)),
	state         TEXT    NOT NULL,
	attempt       INTEGER NOT NULL,
	timeout_ns    INTEGER NOT NULL,
	deadline      INTEGER NOT NULL,
	created_at    INTEGER NOT NULL,
	dispatched_at INTEGER,
	accepted_at   INTEGER,
	finished_at   INTEGER,
	error         TEXT CHECK (error IS NULL OR json_valid(error)),
	output        TEXT CHECK (output IS NULL OR json_valid(output))
) STRICT;

-- ListJobs: all jobs, by agent, by state; newest first.
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_agent_created ON jobs (agent_id, created_at, id);
CREATE INDEX jobs_state_created ON jobs (state, created_at, id);
-- OpenJobs: the few jobs not yet in a terminal state, oldest first. The
-- query must spell the same WHERE for SQLite to use this index.
CREATE INDEX jobs_open ON jobs (created_at, id)
	WHERE state IN ('queued', 'dispatched', 'running');
`,
	// 2: saved GitHub connections; the connection a job was run for.
	`
CREATE TABLE connections (
	id              TEXT    NOT NULL PRIMARY KEY,
	name            TEXT    NOT NULL UNIQUE COLLATE NOCASE,
	kind            TEXT    NOT NULL,
	github_url      TEXT    NOT NULL,
	agent_id        TEXT    NOT NULL REFERENCES agents (id),
	secret          TEXT    NOT NULL CHECK (json_valid(secret)),
	organization    TEXT    NOT NULL,
	required_scopes TEXT    NOT NULL CHECK (json_valid(required_scopes)),
	active          INTEGER NOT NULL CHECK (active IN (0, 1)),
	password_hash   BLOB,
	revision        INTEGER NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	last_test       TEXT CHECK (last_test IS NULL OR json_valid(last_test)),
	organizations   TEXT CHECK (organizations IS NULL OR json_valid(organizations))
) STRICT;

-- ListConnections by agent, by name.
CREATE INDEX connections_agent ON connections (agent_id, name);

ALTER TABLE jobs ADD COLUMN connection_id TEXT NOT NULL DEFAULT '';
`,
}

// migrate brings db to len(steps), one transaction per step. A database
// whose version is already len(steps) is left alone; one whose version is
// newer is refused.
func migrate(ctx context.Context, db *sql.DB, steps []string) error {
	for i, step := range steps {
		if err := migrateStep(ctx, db, i+1, len(steps), step); err != nil {
			return err
		}
	}
	// With no step to apply, the loop above checked nothing.
	v, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	return checkVersion(v, len(steps))
}

// migrateStep applies step, which makes version to, unless the database is
// there already. It reads the version inside its write transaction, so two
// processes opening one new database do not both apply a step.
func migrateStep(ctx context.Context, db *sql.DB, to, known int, step string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate to schema version %d: %w", to, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("migrate to schema version %d: %w", to, err)
	}
	if err := checkVersion(v, known); err != nil {
		return err
	}
	if v >= to {
		return nil
	}
	if v != to-1 {
		return fmt.Errorf("migrate to schema version %d: the database is at version %d", to, v)
	}
	if _, err := tx.ExecContext(ctx, step); err != nil {
		return fmt.Errorf("migrate to schema version %d: %w", to, err)
	}
	// PRAGMA takes no parameters; to is an int of ours.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", to)); err != nil {
		return fmt.Errorf("migrate to schema version %d: %w", to, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate to schema version %d: %w", to, err)
	}
	return nil
}

// checkVersion refuses a database made by a newer control plane.
func checkVersion(v, known int) error {
	if v > known {
		return fmt.Errorf("store schema version %d is newer than this control plane (%d); upgrade the control plane", v, known)
	}
	return nil
}

func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	return v, nil
}
