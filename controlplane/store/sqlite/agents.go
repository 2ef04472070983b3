package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
)

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

// CreateAgent stores a new agent, every field as given, and its first
// enrollment token, in one transaction. t.AgentID must be a.ID or empty
// (then a.ID). ErrConflict if the name, the id or the token hash is
// taken.
func (s *Store) CreateAgent(ctx context.Context, a store.Agent, t store.Token) error {
	fail := func(err error) error { return fmt.Errorf("store: create agent %s: %w", a.ID, err) }
	if a.ID == "" || a.Name == "" {
		return fail(errors.New("the agent's id and name are required"))
	}
	if t.AgentID == "" {
		t.AgentID = a.ID
	}
	if t.AgentID != a.ID {
		return fail(fmt.Errorf("the token is for agent %s", t.AgentID))
	}
	agentArgs, err := agentRow(a)
	if err != nil {
		return fail(err)
	}
	tokenArgs, err := tokenRow(t)
	if err != nil {
		return fail(err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := s.exec(tx, qInsertAgent, agentArgs...); err != nil {
			if what, ok := uniqueViolation(err); ok {
				if what == "agents.name" {
					return fmt.Errorf("the name %q is taken: %w", a.Name, store.ErrConflict)
				}
				return fmt.Errorf("the id is taken: %w", store.ErrConflict)
			}
			return err
		}
		if _, err := s.exec(tx, qInsertToken, tokenArgs...); err != nil {
			if _, ok := uniqueViolation(err); ok {
				return fmt.Errorf("a token with this hash is already stored: %w", store.ErrConflict)
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

// GetAgent returns the agent with this id, or ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := scanAgent(s.read(qSelectAgent).QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("store: get agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns every agent, revoked ones included, by name. The list
// is empty, not nil, when there are none.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	rows, err := s.read(qListAgents).QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	defer rows.Close()
	agents := []store.Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list agents: %w", err)
		}
		agents = append(agents, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	return agents, nil
}

// RevokeAgent marks the agent revoked at at and voids its unused tokens.
// Revoking a revoked agent keeps the first time. ErrNotFound for an
// unknown agent.
func (s *Store) RevokeAgent(ctx context.Context, id string, at time.Time) error {
	fail := func(err error) error { return fmt.Errorf("store: revoke agent %s: %w", id, err) }
	atN, err := nanos("revocation time", at)
	if err != nil {
		return fail(err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.exec(tx, qRevokeAgent, atN, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return store.ErrNotFound
		}
		_, err = s.exec(tx, qVoidTokens, atN, id)
		return err
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// AddToken stores a new enrollment token for t.AgentID and voids the
// agent's older unused ones (as of t.CreatedAt). ErrNotFound for an
// unknown agent; ErrConflict if the hash is already stored. It does not
// look at revocation: Enroll refuses the tokens of a revoked agent.
func (s *Store) AddToken(ctx context.Context, t store.Token) error {
	fail := func(err error) error { return fmt.Errorf("store: add token for agent %s: %w", t.AgentID, err) }
	args, err := tokenRow(t)
	if err != nil {
		return fail(err)
	}
	createdN := args[2]
	err = s.write(ctx, func(tx *sql.Tx) error {
		var one int
		if err := s.queryRow(tx, qAgentExists, t.AgentID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		} else if err != nil {
			return err
		}
		if _, err := s.exec(tx, qVoidTokens, createdN, t.AgentID); err != nil {
			return err
		}
		if _, err := s.exec(tx, qInsertToken, args...); err != nil {
			if _, ok := uniqueViolation(err); ok {
				return fmt.Errorf("a token with this hash is already stored: %w", store.ErrConflict)
			}
			if foreignKeyViolation(err) {
				return store.ErrNotFound
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

// Enroll spends the token with this hash if it is unused, not void,
// unexpired at now (it expires at ExpiresAt) and its agent is not revoked:
// in one transaction it marks the token used, sets the agent's public key
// and EnrolledAt to now, and returns the agent. Otherwise ErrTokenInvalid.
// Writes are serialized, so of concurrent calls with one token exactly one
// succeeds.
func (s *Store) Enroll(ctx context.Context, hash []byte, publicKey []byte, now time.Time) (store.Agent, error) {
	fail := func(err error) (store.Agent, error) { return store.Agent{}, fmt.Errorf("store: enroll: %w", err) }
	nowN, err := nanos("enrollment time", now)
	if err != nil {
		return fail(err)
	}
	if len(hash) == 0 {
		return fail(store.ErrTokenInvalid)
	}
	if len(publicKey) == 0 {
		return fail(errors.New("no public key given"))
	}
	var a store.Agent
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.exec(tx, qSpendToken, nowN, hash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return store.ErrTokenInvalid
		}
		var id string
		if err := s.queryRow(tx, qTokenAgent, hash).Scan(&id); err != nil {
			return err
		}
		if _, err := s.exec(tx, qSetAgentKey, publicKey, nowN, id); err != nil {
			return err
		}
		a, err = scanAgent(s.queryRow(tx, qSelectAgent, id))
		return err
	})
	if err != nil {
		return fail(err)
	}
	return a, nil
}

// UpdateAgentInfo records what the agent said about itself. A zero
// info.LastSeen stores no last-seen time. ErrNotFound for an unknown agent.
func (s *Store) UpdateAgentInfo(ctx context.Context, id string, info store.AgentInfo) error {
	fail := func(err error) error { return fmt.Errorf("store: update agent %s: %w", id, err) }
	backends, err := jsonText("backends", info.Backends)
	if err != nil {
		return fail(err)
	}
	var lastSeen any
	if !info.LastSeen.IsZero() {
		if lastSeen, err = nanos("last seen", info.LastSeen); err != nil {
			return fail(err)
		}
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.exec(tx, qUpdateAgentInfo, info.AgentVersion, info.Hostname, info.OS, backends, lastSeen, id)
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
		return fail(err)
	}
	return nil
}

// agentRow is a's columns in the order of agentCols.
func agentRow(a store.Agent) ([]any, error) {
	labels, err := jsonText("labels", a.Labels)
	if err != nil {
		return nil, err
	}
	backends, err := jsonText("backends", a.Backends)
	if err != nil {
		return nil, err
	}
	created, err := nanos("created_at", a.CreatedAt)
	if err != nil {
		return nil, err
	}
	enrolled, err := nullNanos("enrolled_at", a.EnrolledAt)
	if err != nil {
		return nil, err
	}
	revoked, err := nullNanos("revoked_at", a.RevokedAt)
	if err != nil {
		return nil, err
	}
	lastSeen, err := nullNanos("last_seen", a.LastSeen)
	if err != nil {
		return nil, err
	}
	var key any
	if a.PublicKey != nil {
		key = a.PublicKey
	}
	return []any{a.ID, a.Name, labels, key, created, enrolled, revoked,
		a.AgentVersion, a.Hostname, a.OS, backends, lastSeen}, nil
}

// tokenRow is t's columns in the order of qInsertToken.
func tokenRow(t store.Token) ([]any, error) {
	if len(t.Hash) == 0 {
		return nil, errors.New("the token's hash is required")
	}
	if t.AgentID == "" {
		return nil, errors.New("the token's agent id is required")
	}
	created, err := nanos("token created_at", t.CreatedAt)
	if err != nil {
		return nil, err
	}
	expires, err := nanos("token expires_at", t.ExpiresAt)
	if err != nil {
		return nil, err
	}
	return []any{t.Hash, t.AgentID, created, expires}, nil
}

// scanAgent reads a row of agentCols.
func scanAgent(r rowScanner) (store.Agent, error) {
	var (
		a                          store.Agent
		labels, backends           string
		created                    int64
		enrolled, revoked, lastSee sql.NullInt64
	)
	if err := r.Scan(&a.ID, &a.Name, &labels, &a.PublicKey, &created, &enrolled, &revoked,
		&a.AgentVersion, &a.Hostname, &a.OS, &backends, &lastSee); err != nil {
		return store.Agent{}, err
	}
	if err := fromJSON("labels", labels, &a.Labels); err != nil {
		return store.Agent{}, err
	}
	if err := fromJSON("backends", backends, &a.Backends); err != nil {
		return store.Agent{}, err
	}
	a.CreatedAt = fromNanos(created)
	a.EnrolledAt = fromNullNanos(enrolled)
	a.RevokedAt = fromNullNanos(revoked)
	a.LastSeen = fromNullNanos(lastSee)
	return a, nil
}
