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
	// ConnectionID names the saved connection the job was run for (its
	// test or its organizations), if any.
	ConnectionID string `json:"connection_id,omitempty"`
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

// PasswordHeader carries a protected connection's password on every call
// that reads, changes, tests or deletes it.
const PasswordHeader = "X-Connection-Password"

// CreateConnectionRequest is the body of POST /api/v1/connections, and of
// POST /api/v1/connections:test (which uses only the fields a test needs:
// kind, github_url, agent_id, secret, organization, required_scopes).
//
// A connection holds references to the credentials (where they are), never
// their values.
type CreateConnectionRequest struct {
	// Name is the "Configuration Name": unique among connections (ignoring
	// ASCII case), 1–128 printable characters.
	Name string `json:"name"`
	// Kind is "ghes" (GitHub Enterprise Server) or "github_cloud".
	Kind GitHubKind `json:"kind"`
	// GitHubURL is the instance as users type it; it is stored normalised
	// (see NormalizeGitHubURL).
	GitHubURL string `json:"github_url"`
	// AgentID is the agent that reads the secret and calls GitHub.
	AgentID string `json:"agent_id"`
	// Secret says where the credentials are. Its backend may be left out
	// when the agent advertises exactly one backend: it is filled in.
	Secret SecretRef `json:"secret"`
	// Organization is the organization the platform works in; usually
	// picked later (PUT) from the list the agent fetched.
	Organization string `json:"organization,omitempty"`
	// RequiredScopes are the OAuth scopes to check; empty means the
	// platform's mandatory list, which the agent applies.
	RequiredScopes []string `json:"required_scopes,omitempty"`
	// Active defaults to true.
	Active *bool `json:"active,omitempty"`
	// Password, when set, protects the connection: every later call that
	// reads, changes, tests or deletes it must carry it in PasswordHeader.
	// 8–72 bytes, no control characters, no leading or trailing space.
	// Stored only as a bcrypt hash; never returned.
	Password string `json:"password,omitempty"`
}

// UpdateConnectionRequest is the body of PUT /api/v1/connections/{id}. The
// fields given change; the others keep their values. A protected
// connection needs its current password in PasswordHeader, also to change
// or remove the password.
type UpdateConnectionRequest struct {
	Name      *string     `json:"name,omitempty"`
	Kind      *GitHubKind `json:"kind,omitempty"`
	GitHubURL *string     `json:"github_url,omitempty"`
	AgentID   *string     `json:"agent_id,omitempty"`
	// Secret replaces the whole reference (its backend is filled in as at
	// creation).
	Secret *SecretRef `json:"secret,omitempty"`
	// Organization must be one of the organizations fetched last through
	// GET /api/v1/connections/{id}/organizations (or a test); "" clears it.
	Organization   *string   `json:"organization,omitempty"`
	RequiredScopes *[]string `json:"required_scopes,omitempty"`
	Active         *bool     `json:"active,omitempty"`
	// Password sets a new password.
	Password *string `json:"password,omitempty"`
	// RemovePassword removes the protection.
	RemovePassword bool `json:"remove_password,omitempty"`
}

// ConnectionView is a saved connection as the API shows it. A protected
// connection listed without its password shows only its identity (Locked).
type ConnectionView struct {
	ID   string     `json:"id"`
	Name string     `json:"name"`
	Kind GitHubKind `json:"kind"`
	// AgentID is the agent that runs the connection's jobs.
	AgentID string `json:"agent_id"`
	Active  bool   `json:"active"`
	// Protected says that a password guards the connection.
	Protected bool `json:"protected"`
	// Locked says that the details below are withheld: the connection is
	// protected and was listed; GET it with its password to see them.
	Locked    bool      `json:"locked,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	// GitHubURL is normalised: scheme://host[:port].
	GitHubURL      string     `json:"github_url,omitempty"`
	Secret         *SecretRef `json:"secret,omitempty"`
	Organization   string     `json:"organization,omitempty"`
	RequiredScopes []string   `json:"required_scopes,omitempty"`
	// LastTest is the outcome of the last test of this configuration
	// (cleared when the kind, URL, agent, secret, scopes or organization
	// change).
	LastTest *ConnectionTest `json:"last_test,omitempty"`
	// OrganizationsFetchedAt is when the organizations were last fetched
	// through the agent.
	OrganizationsFetchedAt *time.Time `json:"organizations_fetched_at,omitempty"`
}

// ConnectionList answers GET /api/v1/connections.
type ConnectionList struct {
	Connections []ConnectionView `json:"connections"`
}

// ConnectionTest is the outcome of a test_connection job, kept on the
// connection. It holds no secret: the agent sends none.
type ConnectionTest struct {
	JobID string `json:"job_id"`
	// At is when the test ended.
	At time.Time `json:"at"`
	OK bool      `json:"ok"`
	// Error says why the test failed.
	Error *Error `json:"error,omitempty"`
	// What the agent found, when OK (see ConnectionOutput).
	APIURL         string   `json:"api_url,omitempty"`
	GHESVersion    string   `json:"ghes_version,omitempty"`
	Login          string   `json:"login,omitempty"`
	TokenType      string   `json:"token_type,omitempty"`
	ScopesListable bool     `json:"scopes_listable,omitempty"`
	Scopes         []string `json:"scopes,omitempty"`
	MissingScopes  []string `json:"missing_scopes,omitempty"`
	// TokenExpiresAt is when the token expires, when GitHub said.
	TokenExpiresAt *time.Time `json:"token_expires_at,omitempty"`
	// Warnings are the agent's notes on a connection that works but may not
	// do all that is expected.
	Warnings []string `json:"warnings,omitempty"`
	// Organizations counts the organizations the account sees.
	Organizations int `json:"organizations"`
}

// ConnectionTestAnswer answers POST /api/v1/connections/{id}/test and
// POST /api/v1/connections:test: 200 once the job ended (Test set, ok or
// not), 202 if it is still running (read it at /api/v1/jobs/{id}).
type ConnectionTestAnswer struct {
	// Test is the outcome; nil while the job runs.
	Test *ConnectionTest `json:"test,omitempty"`
	// Connection is the saved connection after the test (not for unsaved
	// details).
	Connection *ConnectionView `json:"connection,omitempty"`
	// Job is the test_connection job, with the agent's full result.
	Job JobView `json:"job"`
}

// ConnectionOrganizations answers GET /api/v1/connections/{id}/organizations:
// the organizations the account sees, fetched through the agent now.
type ConnectionOrganizations struct {
	Organizations []Organization `json:"organizations"`
	// Truncated says that the account sees more organizations than one
	// result holds.
	Truncated bool `json:"truncated,omitempty"`
	// Organization is the connection's current choice, if any.
	Organization string    `json:"organization,omitempty"`
	FetchedAt    time.Time `json:"fetched_at"`
	// Job is the list_organizations job.
	Job JobView `json:"job"`
}
