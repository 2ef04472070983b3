package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// CreateConnection stores a new connection, every field as given. Its
// revision must be 1 or more. ErrConflict if the id or the name (ignoring
// ASCII case) is taken; ErrNotFound if the agent is unknown.
func (s *Store) CreateConnection(ctx context.Context, c store.Connection) error {
	fail := func(err error) error { return fmt.Errorf("store: create connection %s: %w", c.ID, err) }
	if c.ID == "" {
		return fail(errors.New("the connection's id is required"))
	}
	if c.Revision < 1 {
		return fail(fmt.Errorf("revision %d: it starts at 1", c.Revision))
	}
	args, err := connectionRow(c)
	if err != nil {
		return fail(err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := s.exec(tx, qInsertConnection, args...); err != nil {
			return connectionWriteError(err, c)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// GetConnection returns the connection with this id, or ErrNotFound.
func (s *Store) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c, err := scanConnection(s.read(qSelectConnection).QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Connection{}, fmt.Errorf("store: get connection %s: %w", id, err)
	}
	return c, nil
}

// ListConnections returns the connections matching f, by name (ignoring
// ASCII case), then id. The list is empty, not nil, when none match.
func (s *Store) ListConnections(ctx context.Context, f store.ConnectionFilter) ([]store.Connection, error) {
	var args []any
	if f.AgentID != "" {
		args = append(args, f.AgentID)
	}
	if f.Name != "" {
		args = append(args, f.Name)
	}
	rows, err := s.read(qListConnections(f.AgentID != "", f.Name != "")).QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list connections: %w", err)
	}
	defer rows.Close()
	out := []store.Connection{}
	for rows.Next() {
		c, err := scanConnection(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list connections: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list connections: %w", err)
	}
	return out, nil
}

// UpdateConnection writes every field of c but CreatedAt if the stored
// revision is c.Revision, and moves the revision to c.Revision+1.
// ErrStale if the stored revision differs, ErrNotFound if there is no such
// connection (or its new agent is unknown), ErrConflict if the new name is
// taken.
func (s *Store) UpdateConnection(ctx context.Context, c store.Connection) error {
	fail := func(err error) error { return fmt.Errorf("store: update connection %s: %w", c.ID, err) }
	row, err := connectionRow(c)
	if err != nil {
		return fail(err)
	}
	// connectionRow's order: id, name, kind, github_url, agent_id, secret,
	// organization, required_scopes, active, password_hash, revision,
	// created_at, updated_at, last_test, organizations.
	args := append(append([]any{}, row[1:10]...), row[12], row[13], row[14], c.Revision, c.ID)
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.exec(tx, qUpdateConnection, args...)
		if err != nil {
			return connectionWriteError(err, c)
		}
		return s.checkConnectionChanged(tx, res, c.ID, store.ErrStale)
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// RecordConnectionResult stores r's non-nil fields if the connection's
// revision is still revision, and reports whether it did. ErrNotFound if
// there is no such connection.
func (s *Store) RecordConnectionResult(ctx context.Context, id string, revision int, r store.ConnectionResult) (bool, error) {
	fail := func(err error) (bool, error) {
		return false, fmt.Errorf("store: record connection result %s: %w", id, err)
	}
	test, err := nullJSON("last_test", r.Test)
	if err != nil {
		return fail(err)
	}
	orgs, err := nullJSON("organizations", r.Organizations)
	if err != nil {
		return fail(err)
	}
	var stored bool
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.exec(tx, qRecordConnection, test, orgs, id, revision)
		if err != nil {
			return err
		}
		err = s.checkConnectionChanged(tx, res, id, nil)
		stored = err == nil
		if errors.Is(err, errUnchanged) {
			err = nil
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	return stored, nil
}

// DeleteConnection removes the connection. ErrNotFound if there is none.
func (s *Store) DeleteConnection(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.exec(tx, qDeleteConnection, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete connection %s: %w", id, err)
	}
	return nil
}

// errUnchanged: a conditional write changed nothing, but the row exists.
var errUnchanged = errors.New("unchanged")

// checkConnectionChanged tells why a conditional write of connection id
// changed no row: ErrNotFound if there is none, otherwise stale (or
// errUnchanged when stale is nil).
func (s *Store) checkConnectionChanged(tx *sql.Tx, res sql.Result, id string, stale error) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 1 {
		return nil
	}
	var one int
	if err := s.queryRow(tx, qConnectionExists, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	} else if err != nil {
		return err
	}
	if stale == nil {
		return errUnchanged
	}
	return stale
}

// connectionWriteError names a constraint that an insert or update of c
// broke.
func connectionWriteError(err error, c store.Connection) error {
	if what, ok := uniqueViolation(err); ok {
		if what == "connections.name" {
			return fmt.Errorf("the name %q is taken: %w", c.Name, store.ErrConflict)
		}
		return fmt.Errorf("the id is taken: %w", store.ErrConflict)
	}
	if foreignKeyViolation(err) {
		return fmt.Errorf("agent %s: %w", c.AgentID, store.ErrNotFound)
	}
	return err
}

// connectionRow is c's columns in the order of connectionCols.
func connectionRow(c store.Connection) ([]any, error) {
	if c.Name == "" || c.Kind == "" || c.GitHubURL == "" || c.AgentID == "" {
		return nil, errors.New("the connection's name, kind, GitHub URL and agent id are required")
	}
	secret, err := jsonText("secret", c.Secret)
	if err != nil {
		return nil, err
	}
	scopes, err := jsonText("required_scopes", c.RequiredScopes)
	if err != nil {
		return nil, err
	}
	created, err := nanos("created_at", c.CreatedAt)
	if err != nil {
		return nil, err
	}
	updated, err := nanos("updated_at", c.UpdatedAt)
	if err != nil {
		return nil, err
	}
	test, err := nullJSON("last_test", c.LastTest)
	if err != nil {
		return nil, err
	}
	orgs, err := nullJSON("organizations", c.Organizations)
	if err != nil {
		return nil, err
	}
	var hash any
	if c.PasswordHash != nil {
		hash = c.PasswordHash
	}
	active := 0
	if c.Active {
		active = 1
	}
	return []any{c.ID, c.Name, string(c.Kind), c.GitHubURL, c.AgentID, secret, c.Organization, scopes,
		active, hash, c.Revision, created, updated, test, orgs}, nil
}

// scanConnection reads a row of connectionCols.
func scanConnection(r rowScanner) (store.Connection, error) {
	var (
		c                store.Connection
		kind             string
		secret, scopes   string
		active           int
		created, updated int64
		test, orgs       sql.NullString
	)
	if err := r.Scan(&c.ID, &c.Name, &kind, &c.GitHubURL, &c.AgentID, &secret, &c.Organization, &scopes,
		&active, &c.PasswordHash, &c.Revision, &created, &updated, &test, &orgs); err != nil {
		return store.Connection{}, err
	}
	c.Kind = protocol.GitHubKind(kind)
	c.Active = active == 1
	if err := fromJSON("secret", secret, &c.Secret); err != nil {
		return store.Connection{}, err
	}
	if err := fromJSON("required_scopes", scopes, &c.RequiredScopes); err != nil {
		return store.Connection{}, err
	}
	var err error
	if c.LastTest, err = fromNullJSON[protocol.ConnectionTest]("last_test", test); err != nil {
		return store.Connection{}, err
	}
	if c.Organizations, err = fromNullJSON[store.FetchedOrganizations]("organizations", orgs); err != nil {
		return store.Connection{}, err
	}
	c.CreatedAt = fromNanos(created)
	c.UpdatedAt = fromNanos(updated)
	return c, nil
}
