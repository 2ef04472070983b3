// Package store defines what the control plane keeps: agents, their
// enrollment tokens, and jobs. The dispatcher and the API use only the
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
}

// JobFilter selects jobs for ListJobs. Zero fields match everything.
type JobFilter struct {
	AgentID string
	State   protocol.JobState
	// Limit caps the answer (the engine applies a default and a maximum).
	Limit int
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

	// Ping checks that the store answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}
