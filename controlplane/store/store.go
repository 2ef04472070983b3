// Package store defines what the control plane keeps: agents, their
// enrollment tokens, jobs, and saved GitHub connections. The dispatcher and the API use only the
// Store interface; engines live in subpackages (sqlite today, PostgreSQL
// later) and are chosen at start-up.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// Errors that callers branch on. Engines wrap them.
var (
	// ErrNotFound: no row with that id.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique value (such as an agent name) is taken.
	ErrConflict = errors.New("conflict")
	// ErrTokenInvalid: the enrollment token is unknown, used, expired, or
	// its agent is revoked.
	ErrTokenInvalid = errors.New("enrollment token invalid")
	// ErrStale: the row changed since it was read (its revision moved on).
	ErrStale = errors.New("changed meanwhile")
)

// Agent is a registered agent.
type Agent struct {
	ID     string
	Name   string
	Labels map[string]string
	// PublicKey is the Ed25519 key the agent enrolled with; nil until it
	// enrolls. Re-enrollment replaces it.
	PublicKey []byte
	CreatedAt time.Time
	// EnrolledAt is when the agent last traded a token for its id.
	EnrolledAt *time.Time
	// RevokedAt is set once the agent is revoked; a revoked agent never
	// connects again.
	RevokedAt *time.Time
	// What the agent said about itself in its last hello.
	AgentVersion string
	Hostname     string
	OS           string
	Backends     []protocol.BackendInfo
	// LastSeen is when the control plane last heard from the agent.
	LastSeen *time.Time
}

// AgentInfo is what a hello tells about an agent, stored at each handshake
// and when a session ends.
type AgentInfo struct {
	AgentVersion string
	Hostname     string
	OS           string
	Backends     []protocol.BackendInfo
	LastSeen     time.Time
}

// Token is a single-use enrollment token, kept only as its hash.
type Token struct {
	// Hash is SHA-256 of the token text.
	Hash      []byte
	AgentID   string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Job is one job and everything known about it.
type Job struct {
	ID      string
	AgentID string
	Kind    protocol.JobKind
	Params  protocol.Params
	State   protocol.JobState
	// Attempt counts dispatches so far (0 while never dispatched).
	Attempt int
	// Timeout is what the submitter asked for; Deadline is CreatedAt+Timeout.
	Timeout  time.Duration
	Deadline time.Time

	CreatedAt    time.Time
	DispatchedAt *time.Time
	AcceptedAt   *time.Time
	FinishedAt   *time.Time

	// Error says why a failed, expired or canceled job did not succeed.
	Error *protocol.Error
	// Output is what a succeeded job found.
	Output *protocol.Output

	// ConnectionID is the saved connection the job was run for, if any.
	ConnectionID string
}

// JobFilter selects jobs for ListJobs. Zero fields match everything.
type JobFilter struct {
	AgentID string
	State   protocol.JobState
	// Limit caps the answer (the engine applies a default and a maximum).
	Limit int
}

// Connection is a saved GitHub connection: where GitHub is, which agent
// reaches it, and where that agent finds the credentials. It holds
// references to secrets, never their values.
type Connection struct {
	ID string
	// Name is unique among connections, ignoring ASCII case.
	Name      string
	Kind      protocol.GitHubKind
	GitHubURL string
	// AgentID must name a stored agent.
	AgentID        string
	Secret         protocol.SecretRef
	Organization   string
	RequiredScopes []string
	Active         bool
	// PasswordHash is the bcrypt hash of the connection's password; nil
	// when the connection is not protected.
	PasswordHash []byte
	// Revision counts the updates of the configuration: 1 at creation,
	// one more at each UpdateConnection. Results are recorded only against
	// the revision they were run for.
	Revision  int
	CreatedAt time.Time
	UpdatedAt time.Time
	// LastTest is the outcome of the last test of this revision's
	// configuration (or an older one the update kept it from).
	LastTest *protocol.ConnectionTest
	// Organizations is the list fetched last through the agent.
	Organizations *FetchedOrganizations
}

// FetchedOrganizations is a list of organizations fetched through the
// agent, and when.
type FetchedOrganizations struct {
	JobID         string                  `json:"job_id"`
	At            time.Time               `json:"at"`
	Organizations []protocol.Organization `json:"organizations"`
}

// ConnectionResult is what a finished job of a connection found. A nil
// field leaves the stored value alone.
type ConnectionResult struct {
	Test          *protocol.ConnectionTest
	Organizations *FetchedOrganizations
}

// ConnectionFilter selects connections for ListConnections. Zero fields
// match everything.
type ConnectionFilter struct {
	AgentID string
	// Name matches ignoring ASCII case.
	Name string
}

// Store is the control plane's persistence. Every method is durable when it
// returns nil: the change survives a crash of the process or the machine.
// Methods are safe for concurrent use.
type Store interface {
	// CreateAgent stores a new agent and its first enrollment token in one
	// transaction. ErrConflict if the name is taken.
	CreateAgent(ctx context.Context, a Agent, t Token) error
	GetAgent(ctx context.Context, id string) (Agent, error)
	// ListAgents returns every agent, revoked ones included, by name.
	ListAgents(ctx context.Context) ([]Agent, error)
	// RevokeAgent marks the agent revoked and voids its unused tokens.
	RevokeAgent(ctx context.Context, id string, at time.Time) error
	// AddToken stores a new enrollment token for an agent and voids the
	// agent's older unused ones. ErrNotFound for an unknown agent.
	AddToken(ctx context.Context, t Token) error
	// Enroll spends a token: if the token with this hash exists, is unused,
	// unexpired at now and its agent is not revoked, it is marked used and
	// the agent's public key set, atomically; the agent is returned.
	// Otherwise ErrTokenInvalid. Of two concurrent calls with one token,
	// exactly one succeeds.
	Enroll(ctx context.Context, hash []byte, publicKey []byte, now time.Time) (Agent, error)
	// UpdateAgentInfo records what the agent said about itself.
	UpdateAgentInfo(ctx context.Context, id string, info AgentInfo) error

	// CreateJob stores a new job.
	CreateJob(ctx context.Context, j Job) error
	GetJob(ctx context.Context, id string) (Job, error)
	// ListJobs returns jobs matching f, newest first.
	ListJobs(ctx context.Context, f JobFilter) ([]Job, error)
	// OpenJobs returns every job not in a terminal state, oldest first.
	OpenJobs(ctx context.Context) ([]Job, error)
	// UpdateJob writes j's state, attempt, timestamps, error and output if
	// the stored job's state is one of from, and reports whether it did.
	// This compare-and-set is how a result is recorded exactly once.
	UpdateJob(ctx context.Context, j Job, from ...protocol.JobState) (bool, error)

	// CreateConnection stores a new connection. ErrConflict if the name
	// (ignoring ASCII case) or the id is taken; ErrNotFound if its agent
	// is unknown.
	CreateConnection(ctx context.Context, c Connection) error
	// GetConnection returns the connection with this id, or ErrNotFound.
	GetConnection(ctx context.Context, id string) (Connection, error)
	// ListConnections returns the connections matching f, by name.
	ListConnections(ctx context.Context, f ConnectionFilter) ([]Connection, error)
	// UpdateConnection replaces every field of the stored connection c.ID
	// but CreatedAt, if its stored revision is c.Revision, and stores
	// revision c.Revision+1. ErrStale if the revision moved on, ErrNotFound
	// if there is no such connection, ErrConflict if the new name is taken.
	UpdateConnection(ctx context.Context, c Connection) error
	// RecordConnectionResult stores r on the connection if its revision is
	// still revision, and reports whether it did. ErrNotFound if there is
	// no such connection.
	RecordConnectionResult(ctx context.Context, id string, revision int, r ConnectionResult) (bool, error)
	// DeleteConnection removes the connection. ErrNotFound if there is no
	// such connection. Its jobs stay.
	DeleteConnection(ctx context.Context, id string) error

	// Ping checks that the store answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}
