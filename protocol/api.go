package protocol

import "time"

// The shapes of the control plane's HTTP API v1 (DESIGN §5), shared by the
// control plane, its tests and any Go client. Errors are APIError.

// RegisterAgentRequest is the body of POST /api/v1/agents.
type RegisterAgentRequest struct {
	// Name is unique among agents: 1–64 letters, digits, '.', '_' or '-'.
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// EnrollmentToken is a single-use enrollment token, shown once.
type EnrollmentToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// RegisterAgentResponse answers POST /api/v1/agents and
// POST /api/v1/agents/{id}/enrollment-token.
type RegisterAgentResponse struct {
	Agent           AgentView       `json:"agent"`
	EnrollmentToken EnrollmentToken `json:"enrollment_token"`
}

// Agent statuses.
const (
	AgentOnline   = "online"
	AgentOffline  = "offline"
	AgentDraining = "draining"
	AgentRevoked  = "revoked"
	// AgentPending: registered, never enrolled.
	AgentPending = "pending"
)

// AgentView is an agent as the API shows it.
type AgentView struct {
	ID     string            `json:"id"`
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Status is online, offline, draining, revoked or pending.
	Status         string        `json:"status"`
	AgentVersion   string        `json:"agent_version,omitempty"`
	Hostname       string        `json:"hostname,omitempty"`
	OS             string        `json:"os,omitempty"`
	Backends       []BackendInfo `json:"backends,omitempty"`
	Kinds          []JobKind     `json:"kinds,omitempty"`
	Concurrency    int           `json:"concurrency,omitempty"`
	SessionID      string        `json:"session_id,omitempty"`
	ConnectedSince *time.Time    `json:"connected_since,omitempty"`
	LastSeen       *time.Time    `json:"last_seen,omitempty"`
	RunningJobs    int           `json:"running_jobs"`
	CreatedAt      time.Time     `json:"created_at"`
	EnrolledAt     *time.Time    `json:"enrolled_at,omitempty"`
	RevokedAt      *time.Time    `json:"revoked_at,omitempty"`
}

// AgentList answers GET /api/v1/agents.
type AgentList struct {
	Agents []AgentView `json:"agents"`
}

// SubmitJobRequest is the body of POST /api/v1/jobs.
type SubmitJobRequest struct {
	AgentID string  `json:"agent_id"`
	Kind    JobKind `json:"kind"`
	Params  Params  `json:"params"`
	// Timeout bounds the job from submission to result ("30s"); the
	// control plane applies its default and maximum.
	Timeout Duration `json:"timeout,omitempty"`
}

// JobView is a job as the API shows it.
type JobView struct {
	ID      string   `json:"id"`
	AgentID string   `json:"agent_id"`
	Kind    JobKind  `json:"kind"`
	Params  Params   `json:"params"`
	State   JobState `json:"state"`
	// Attempts counts dispatches to the agent.
	Attempts     int        `json:"attempts"`
	Timeout      Duration   `json:"timeout"`
	Deadline     time.Time  `json:"deadline"`
	CreatedAt    time.Time  `json:"created_at"`
	DispatchedAt *time.Time `json:"dispatched_at,omitempty"`
	AcceptedAt   *time.Time `json:"accepted_at,omitempty"`
	FinishedAt   *time.Time `json:"finished_at,omitempty"`
	// DurationMS is FinishedAt-CreatedAt for finished jobs.
	DurationMS *int64  `json:"duration_ms,omitempty"`
	Error      *Error  `json:"error,omitempty"`
	Result     *Output `json:"result,omitempty"`
}

// JobList answers GET /api/v1/jobs.
type JobList struct {
	Jobs []JobView `json:"jobs"`
}

// Health answers GET /healthz and GET /readyz.
type Health struct {
	Status string `json:"status"`
	// Detail says what is wrong when not ready.
	Detail string `json:"detail,omitempty"`
}
