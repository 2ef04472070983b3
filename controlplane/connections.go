package controlplane

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// Saved GitHub connections (DESIGN §5): what the platform's users configure
// in the "DevOps CI/CD pipeline configuration" screen. A connection names a
// GitHub, the agent that reaches it, and where that agent finds the
// credentials; testing it or listing its organizations is a job for that
// agent, submitted and waited for like any other.

// defaultConnectionWait is how long a test or an organizations fetch waits
// for the agent when the request does not say (?wait=). It is also the
// job's timeout, so the job has ended when the wait does.
const defaultConnectionWait = 30 * time.Second

func (s *Server) connectionRoutes(admin func(string, http.HandlerFunc)) {
	admin("POST /api/v1/connections", s.createConnection)
	admin("GET /api/v1/connections", s.listConnections)
	admin("GET /api/v1/connections/{id}", s.getConnection)
	admin("PUT /api/v1/connections/{id}", s.updateConnection)
	admin("DELETE /api/v1/connections/{id}", s.deleteConnection)
	admin("POST /api/v1/connections/{id}/test", s.testConnection)
	admin("GET /api/v1/connections/{id}/organizations", s.connectionOrganizations)
	// The screen tests the details before saving them. A literal ':' in a
	// path segment is an ordinary character for the mux.
	admin("POST /api/v1/connections:test", s.testUnsavedConnection)
}

var (
	// scopeName is an OAuth scope such as "repo", "read:org",
	// "manage_runners:enterprise".
	scopeName = regexp.MustCompile(`^[a-z][a-z0-9_:-]{0,63}$`)
	// orgLogin is a GitHub organization's login.
	orgLogin = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)
)

// connectionLog is the fields that name a connection in log lines.
func connectionLog(c store.Connection) []zap.Field {
	return []zap.Field{zap.String("connection_id", c.ID), zap.String("connection", c.Name), zap.String("agent_id", c.AgentID)}
}

// badParams answers 400 invalid_params.
func badParams(w http.ResponseWriter, format string, args ...any) {
	writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, format, args...))
}

// --- request bodies ---------------------------------------------------------

// Keys that hold a secret's value rather than say where it is. The request
// decoder refuses unknown fields anyway; these get a message that says what
// to do instead.
var (
	secretValueKeys = []string{
		"token", "password", "pat", "value", "secret", "secret_value", "secret_string", "private_key",
		"client_secret", "access_token", "github_token", "api_key", "key", "username", "user", "login",
	}
	topValueKeys = []string{
		"token", "pat", "secret_value", "secret_string", "private_key", "client_secret", "access_token", "github_token", "api_key",
	}
)

// secretValueError reports a body that tries to put a secret value in a
// connection, naming the field and never repeating its value. It looks at
// the top level and inside "secret"; a body that is not a JSON object is
// left to the strict decoder.
func secretValueError(body []byte) *protocol.Error {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return nil
	}
	where := func(user bool) string {
		if user {
			return "give where the user name is: secret.username_key (aws, file) or secret.username_secret (azure)"
		}
		return "put the token in the secret manager and give where it is: secret.secret_name and secret.password_key (aws, file), or secret.vault_name and secret.password_secret (azure)"
	}
	for k := range top {
		if slices.Contains(topValueKeys, strings.ToLower(k)) {
			return protocol.Errorf(protocol.CodeInvalidParams,
				"%s: a connection stores references to the credentials, never their values; %s", truncate(k, 32), where(false))
		}
	}
	var secret map[string]json.RawMessage
	if raw, ok := top["secret"]; !ok || json.Unmarshal(raw, &secret) != nil {
		return nil
	}
	for k := range secret {
		lk := strings.ToLower(k)
		if slices.Contains(secretValueKeys, lk) {
			return protocol.Errorf(protocol.CodeInvalidParams,
				"secret.%s: a connection stores references to the credentials, never their values; %s",
				truncate(k, 32), where(lk == "username" || lk == "user" || lk == "login"))
		}
	}
	return nil
}

// decodeConnectionBody is decodeBody with a clear refusal of secret values.
func decodeConnectionBody(w http.ResponseWriter, r *http.Request, v any) bool {
	done := bodyDeadline(w)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if bodyTimedOut(w, done(err)) {
		return false
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, protocol.Errorf(protocol.CodeRequestTooLarge, "the request body is over %d bytes", maxBody))
			return false
		}
		badParams(w, "the request body could not be read: %v", err)
		return false
	}
	if e := secretValueError(body); e != nil {
		writeError(w, http.StatusBadRequest, e)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("the body is empty")
	}
	if err != nil {
		badParams(w, "the request body is not valid: %v", err)
		return false
	}
	return true
}

// --- validation -------------------------------------------------------------

// checkName checks a connection's name.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("name is required: the connection's Configuration Name")
	case len(name) > 128:
		return fmt.Errorf("name is %d bytes; at most 128", len(name))
	case !utf8.ValidString(name):
		return errors.New("name is not valid UTF-8")
	case strings.ContainsFunc(name, unicode.IsControl):
		return errors.New("name holds a control character")
	case strings.TrimSpace(name) != name:
		return errors.New("name starts or ends with a space")
	}
	return nil
}

// checkScopes checks a list of required scopes.
func checkScopes(scopes []string) error {
	if len(scopes) > 64 {
		return fmt.Errorf("required_scopes has %d entries; at most 64", len(scopes))
	}
	for _, sc := range scopes {
		if !scopeName.MatchString(sc) {
			return fmt.Errorf("required_scopes: %q is not an OAuth scope such as repo or read:org", truncate(sc, 64))
		}
	}
	return nil
}

// checkOrganization checks the syntax of an organization's login.
func checkOrganization(org string) error {
	if org != "" && !orgLogin.MatchString(org) {
		return fmt.Errorf("organization %q is not a GitHub organization login (letters, digits and '-', at most 39)", truncate(org, 64))
	}
	return nil
}

// agentBackends returns the names of the secret backends that agent a
// advertised: in its live session, else at its last hello.
func (s *Server) agentBackends(a store.Agent) []string {
	infos := a.Backends
	if l := s.disp.live(a.ID); l.online {
		infos = l.hello.Backends
	}
	names := make([]string, 0, len(infos))
	for _, b := range infos {
		names = append(names, b.Name)
	}
	return names
}

// checkTarget validates and normalises what a test needs: the kind, the
// URL, the agent (which must exist and not be revoked), the secret
// reference (its backend filled in from the agent when left out), the
// scopes and the organization's syntax. It answers the request and returns
// false when something is wrong.
func (s *Server) checkTarget(w http.ResponseWriter, r *http.Request, c *store.Connection) bool {
	url, err := protocol.NormalizeGitHubURL(c.Kind, c.GitHubURL)
	if err != nil {
		badParams(w, "%v", err)
		return false
	}
	c.GitHubURL = url
	if c.AgentID == "" {
		badParams(w, "agent_id is required: the agent that reads the secret and calls GitHub (GET /api/v1/agents lists them)")
		return false
	}
	a, err := s.store.GetAgent(r.Context(), c.AgentID)
	if errors.Is(err, store.ErrNotFound) {
		badParams(w, "agent_id: there is no agent %q (GET /api/v1/agents lists them)", truncate(c.AgentID, 64))
		return false
	}
	if err != nil {
		s.storeError(w, "agent", err)
		return false
	}
	if a.RevokedAt != nil {
		badParams(w, "agent_id: agent %s (%s) is revoked; pick another agent", a.ID, a.Name)
		return false
	}
	backends := s.agentBackends(a)
	switch {
	case c.Secret.Backend != "" && len(backends) > 0 && !slices.Contains(backends, c.Secret.Backend):
		badParams(w, "secret.backend %q is not a backend of agent %s (%s); it has: %s",
			truncate(c.Secret.Backend, 32), a.ID, a.Name, strings.Join(backends, ", "))
		return false
	case len(backends) == 0:
		badParams(w, "secret.backend: agent %s (%s) has not said which secret backends it has: it has never connected; start it, then save the connection",
			a.ID, a.Name)
		return false
	case c.Secret.Backend == "" && len(backends) > 1:
		badParams(w, "secret.backend is required: agent %s (%s) has several backends: %s", a.ID, a.Name, strings.Join(backends, ", "))
		return false
	case c.Secret.Backend == "":
		c.Secret.Backend = backends[0]
	}
	if err := c.Secret.Validate(); err != nil {
		badParams(w, "%v", err)
		return false
	}
	if err := checkScopes(c.RequiredScopes); err != nil {
		badParams(w, "%v", err)
		return false
	}
	if err := checkOrganization(c.Organization); err != nil {
		badParams(w, "%v", err)
		return false
	}
	p := jobParams(*c, protocol.KindTestConnection)
	if err := p.Validate(protocol.KindTestConnection); err != nil {
		badParams(w, "%v", err) // a safety net: the checks above cover it
		return false
	}
	return true
}

// jobParams are the params of kind for connection c.
func jobParams(c store.Connection, kind protocol.JobKind) protocol.Params {
	secret := c.Secret
	p := protocol.Params{Secret: &secret, GitHubURL: c.GitHubURL, GitHubKind: c.Kind, RequiredScopes: c.RequiredScopes}
	if kind == protocol.KindTestConnection {
		// Listing shows every organization; a test checks the chosen one.
		p.Organization = c.Organization
	}
	return p
}

// --- views ------------------------------------------------------------------

// connectionView shows c; locked withholds everything but its identity.
func connectionView(c store.Connection, locked bool) protocol.ConnectionView {
	v := protocol.ConnectionView{
		ID: c.ID, Name: c.Name, Kind: c.Kind, AgentID: c.AgentID, Active: c.Active,
		Protected: c.PasswordHash != nil, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
	if locked {
		v.Locked = true
		return v
	}
	secret := c.Secret
	v.GitHubURL, v.Secret, v.Organization, v.RequiredScopes, v.LastTest = c.GitHubURL, &secret, c.Organization, c.RequiredScopes, c.LastTest
	if c.Organizations != nil {
		at := c.Organizations.At
		v.OrganizationsFetchedAt = &at
	}
	return v
}

// --- handlers ---------------------------------------------------------------

func (s *Server) createConnection(w http.ResponseWriter, r *http.Request) {
	var req protocol.CreateConnectionRequest
	if !decodeConnectionBody(w, r, &req) {
		return
	}
	if err := checkName(req.Name); err != nil {
		badParams(w, "%v", err)
		return
	}
	now := s.now()
	c := store.Connection{
		ID: newID("con_", now), Name: req.Name, Kind: req.Kind, GitHubURL: req.GitHubURL, AgentID: req.AgentID,
		Secret: req.Secret, Organization: req.Organization, RequiredScopes: req.RequiredScopes,
		Active: req.Active == nil || *req.Active, Revision: 1, CreatedAt: now, UpdatedAt: now,
	}
	if !s.checkTarget(w, r, &c) {
		return
	}
	if req.Password != "" {
		if err := checkPassword(req.Password); err != nil {
			badParams(w, "%v", err)
			return
		}
		h, err := s.hashPassword(req.Password)
		if err != nil {
			s.log.Error("connection password", append(connectionLog(c), zap.Error(err))...)
			writeError(w, http.StatusInternalServerError, protocol.Errorf(protocol.CodeInternal, "the password could not be hashed"))
			return
		}
		c.PasswordHash = h
	}
	if err := s.store.CreateConnection(r.Context(), c); err != nil {
		s.connectionStoreError(w, c, err)
		return
	}
	s.log.Info("connection created", append(connectionLog(c), zap.String("kind", string(c.Kind)),
		zap.String("github_url", c.GitHubURL), zap.Stringer("secret", c.Secret), zap.Bool("protected", c.PasswordHash != nil))...)
	writeJSON(w, http.StatusCreated, connectionView(c, false))
}

// connectionStoreError answers a failed write of c.
func (s *Server) connectionStoreError(w http.ResponseWriter, c store.Connection, err error) {
	switch {
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeConflict,
			"a connection named %q already exists (names are unique, ignoring case)", c.Name))
	case errors.Is(err, store.ErrStale):
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeConflict,
			"connection %q changed while this request was made; read it again and retry", c.Name))
	case errors.Is(err, store.ErrNotFound):
		// The connection went, or (create) its agent did.
		writeError(w, http.StatusNotFound, protocol.Errorf(protocol.CodeNotFound, "connection %s or its agent %s not found", c.ID, c.AgentID))
	default:
		s.storeError(w, "connection", err)
	}
}

func (s *Server) listConnections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	list, err := s.store.ListConnections(r.Context(), store.ConnectionFilter{AgentID: q.Get("agent_id"), Name: q.Get("name")})
	if err != nil {
		s.storeError(w, "connections", err)
		return
	}
	out := protocol.ConnectionList{Connections: make([]protocol.ConnectionView, 0, len(list))}
	for _, c := range list {
		out.Connections = append(out.Connections, connectionView(c, c.PasswordHash != nil))
	}
	writeJSON(w, http.StatusOK, out)
}

// openConnection reads the connection of the request's {id} and checks its
// password. It answers the request and returns false on failure.
func (s *Server) openConnection(w http.ResponseWriter, r *http.Request) (store.Connection, bool) {
	c, err := s.store.GetConnection(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, "connection", err)
		return c, false
	}
	return c, s.unlock(w, r, c)
}

func (s *Server) getConnection(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openConnection(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, connectionView(c, false))
}

func (s *Server) updateConnection(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openConnection(w, r)
	if !ok {
		return
	}
	var req protocol.UpdateConnectionRequest
	if !decodeConnectionBody(w, r, &req) {
		return
	}
	old := c
	var changed []string
	set := func(name string, differs bool) {
		if differs {
			changed = append(changed, name)
		}
	}
	if req.Name != nil {
		if err := checkName(*req.Name); err != nil {
			badParams(w, "%v", err)
			return
		}
		set("name", *req.Name != c.Name)
		c.Name = *req.Name
	}
	if req.Kind != nil {
		set("kind", *req.Kind != c.Kind)
		c.Kind = *req.Kind
	}
	if req.GitHubURL != nil {
		c.GitHubURL = *req.GitHubURL
	}
	if req.AgentID != nil {
		set("agent_id", *req.AgentID != c.AgentID)
		c.AgentID = *req.AgentID
	}
	if req.Secret != nil {
		c.Secret = *req.Secret
	}
	if req.RequiredScopes != nil {
		set("required_scopes", !slices.Equal(*req.RequiredScopes, c.RequiredScopes))
		c.RequiredScopes = *req.RequiredScopes
	}
	if req.Active != nil {
		set("active", *req.Active != c.Active)
		c.Active = *req.Active
	}
	if req.Organization != nil {
		c.Organization = *req.Organization
	}
	// The target is checked again as a whole: a new agent must have the
	// secret's backend, a new kind must fit the URL.
	if !s.checkTarget(w, r, &c) {
		return
	}
	set("github_url", c.GitHubURL != old.GitHubURL)
	set("secret", c.Secret != old.Secret)
	retarget := c.Kind != old.Kind || c.GitHubURL != old.GitHubURL || c.AgentID != old.AgentID || c.Secret != old.Secret
	if retarget {
		c.Organizations = nil // fetched from another account or place
	}
	if c.Organization != old.Organization {
		if c.Organization != "" {
			org, err := pickOrganization(c)
			if err != nil {
				badParams(w, "%v", err)
				return
			}
			c.Organization = org
		}
		set("organization", c.Organization != old.Organization)
	}
	if retarget || c.Organization != old.Organization || !slices.Equal(c.RequiredScopes, old.RequiredScopes) {
		c.LastTest = nil // a test of another configuration
	}
	switch {
	case req.Password != nil && req.RemovePassword:
		badParams(w, "give password (to set a new one) or remove_password, not both")
		return
	case req.RemovePassword:
		set("password", c.PasswordHash != nil)
		c.PasswordHash = nil
	case req.Password != nil:
		if err := checkPassword(*req.Password); err != nil {
			badParams(w, "%v", err)
			return
		}
		h, err := s.hashPassword(*req.Password)
		if err != nil {
			s.log.Error("connection password", append(connectionLog(c), zap.Error(err))...)
			writeError(w, http.StatusInternalServerError, protocol.Errorf(protocol.CodeInternal, "the password could not be hashed"))
			return
		}
		c.PasswordHash = h
		set("password", true)
	}
	if len(changed) == 0 {
		writeJSON(w, http.StatusOK, connectionView(c, false))
		return
	}
	c.UpdatedAt = s.now()
	if err := s.store.UpdateConnection(r.Context(), c); err != nil {
		s.connectionStoreError(w, c, err)
		return
	}
	c.Revision++
	if c.PasswordHash == nil {
		s.attempts.reset(c.ID)
	}
	s.log.Info("connection updated", append(connectionLog(c), zap.Strings("changed", changed))...)
	writeJSON(w, http.StatusOK, connectionView(c, false))
}

// pickOrganization finds c.Organization among the organizations fetched
// last, ignoring case, and returns its login as GitHub spells it.
func pickOrganization(c store.Connection) (string, error) {
	if c.Organizations == nil {
		return "", fmt.Errorf("organization: fetch the organizations this connection's account sees first (GET /api/v1/connections/%s/organizations), then pick one of them", c.ID)
	}
	var logins []string
	for _, o := range c.Organizations.Organizations {
		if strings.EqualFold(o.Login, c.Organization) {
			return o.Login, nil
		}
		logins = append(logins, o.Login)
	}
	if len(logins) == 0 {
		return "", fmt.Errorf("organization %q: the account sees no organization (fetched %s)", c.Organization, c.Organizations.At.UTC().Format(time.RFC3339))
	}
	list := strings.Join(logins[:min(len(logins), 20)], ", ")
	if len(logins) > 20 {
		list += fmt.Sprintf(" and %d more", len(logins)-20)
	}
	return "", fmt.Errorf("organization %q is not one the account sees (fetched %s): %s",
		truncate(c.Organization, 64), c.Organizations.At.UTC().Format(time.RFC3339), list)
}

func (s *Server) deleteConnection(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openConnection(w, r)
	if !ok {
		return
	}
	if err := s.store.DeleteConnection(r.Context(), c.ID); err != nil {
		s.storeError(w, "connection", err)
		return
	}
	s.attempts.reset(c.ID)
	s.log.Info("connection deleted", connectionLog(c)...)
	w.WriteHeader(http.StatusNoContent)
}

// connectionWait reads ?wait= for a connection's job: the default when
// absent or zero, at least a second, at most MaxWait.
func (s *Server) connectionWait(w http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	wait, ok := s.waitParam(w, r)
	if !ok {
		return 0, false
	}
	if wait == 0 {
		wait = min(defaultConnectionWait, s.maxWait)
	}
	return max(wait, time.Second), true
}

// runConnectionJob submits kind for connection c (unsaved when c.ID is
// empty) to its agent, with timeout wait, and waits for it. An agent that
// cannot take the job now (offline, draining, revoked, or whose policy
// refuses the kind) is answered at once. It returns the job, terminal
// unless the store failed to say so in time.
func (s *Server) runConnectionJob(w http.ResponseWriter, r *http.Request, c store.Connection, kind protocol.JobKind, wait time.Duration) (store.Job, bool) {
	a, err := s.store.GetAgent(r.Context(), c.AgentID)
	if err != nil {
		s.storeError(w, "agent "+c.AgentID, err)
		return store.Job{}, false
	}
	if a.RevokedAt != nil {
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeAgentRevoked,
			"agent %s (%s) is revoked; give the connection another agent", a.ID, a.Name))
		return store.Job{}, false
	}
	l := s.disp.live(a.ID)
	switch {
	case !l.online:
		seen, last := "it has never connected", a.LastSeen
		if !l.lastSeen.IsZero() {
			last = &l.lastSeen
		}
		if last != nil {
			seen = "last seen " + last.UTC().Format(time.RFC3339)
		}
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeAgentOffline,
			"agent %s (%s) is offline (%s): start it, or read its logs for why it cannot connect", a.ID, a.Name, seen))
		return store.Job{}, false
	case l.draining:
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeAgentOffline,
			"agent %s (%s) is shutting down and takes no new jobs; try again once it is back", a.ID, a.Name))
		return store.Job{}, false
	case !slices.Contains(l.hello.Kinds, kind):
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeKindNotAllowed,
			"agent %s (%s) does not run %s jobs: add %s to policy.job_kinds in its config (or upgrade it)", a.ID, a.Name, kind, kind))
		return store.Job{}, false
	}
	now := s.now()
	j, err := s.disp.submit(r.Context(), store.Job{
		ID: newID("job_", now), AgentID: a.ID, Kind: kind, Params: jobParams(c, kind), State: protocol.JobQueued,
		Timeout: wait, Deadline: now.Add(wait), CreatedAt: now, ConnectionID: c.ID,
	})
	if err != nil {
		s.storeError(w, "job", err)
		return store.Job{}, false
	}
	// The job expires at its deadline, so it has ended before this wait
	// does; the margin covers the expiry's own store write.
	return s.waitJob(r.Context(), j.ID, wait+5*time.Second, j), true
}

// testOutcome summarises a terminal test_connection job.
func testOutcome(j store.Job, now time.Time) *protocol.ConnectionTest {
	t := &protocol.ConnectionTest{JobID: j.ID, At: now}
	if j.FinishedAt != nil {
		t.At = *j.FinishedAt
	}
	out := j.Output
	if j.State != protocol.JobSucceeded || out == nil || out.Connection == nil {
		t.Error = j.Error
		if t.Error == nil {
			t.Error = protocol.Errorf(protocol.CodeInternal, "the test ended %s without a result", j.State)
		}
		return t
	}
	o := out.Connection
	t.OK = true
	t.APIURL, t.GHESVersion, t.Login, t.TokenType = o.APIURL, o.GHESVersion, o.Login, o.TokenType
	t.ScopesListable, t.Scopes, t.MissingScopes, t.Organizations = o.ScopesListable, o.Scopes, o.MissingScopes, len(o.Organizations)
	t.TokenExpiresAt, t.Warnings = o.TokenExpiresAt, o.Warnings
	return t
}

// fetched returns the organizations a terminal job found, if it listed
// them.
func fetched(j store.Job, now time.Time) *store.FetchedOrganizations {
	if j.State != protocol.JobSucceeded || j.Output == nil {
		return nil
	}
	at := now
	if j.FinishedAt != nil {
		at = *j.FinishedAt
	}
	switch {
	case j.Output.Organizations != nil:
		return &store.FetchedOrganizations{JobID: j.ID, At: at, Organizations: j.Output.Organizations.Organizations}
	case j.Output.Connection != nil && j.Output.Connection.Organizations != nil:
		return &store.FetchedOrganizations{JobID: j.ID, At: at, Organizations: j.Output.Connection.Organizations}
	}
	return nil
}

// record stores what a terminal job of connection c found, if c is still
// at the revision the job ran for, and returns c as stored afterwards. It
// goes on if the caller leaves: the outcome belongs to the connection.
func (s *Server) record(c store.Connection, res store.ConnectionResult) store.Connection {
	ctx, cancel := s.storeCtx()
	defer cancel()
	ok, err := s.store.RecordConnectionResult(ctx, c.ID, c.Revision, res)
	switch {
	case err != nil:
		s.log.Error("store connection result", append(connectionLog(c), zap.Error(err))...)
	case !ok:
		s.log.Info("connection changed during its job; result not kept", connectionLog(c)...)
	}
	if now, err := s.store.GetConnection(ctx, c.ID); err == nil {
		return now
	}
	if res.Test != nil {
		c.LastTest = res.Test
	}
	if res.Organizations != nil {
		c.Organizations = res.Organizations
	}
	return c
}

func (s *Server) testConnection(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openConnection(w, r)
	if !ok {
		return
	}
	wait, ok := s.connectionWait(w, r)
	if !ok {
		return
	}
	j, ok := s.runConnectionJob(w, r, c, protocol.KindTestConnection, wait)
	if !ok {
		return
	}
	if !j.State.Terminal() {
		writeJSON(w, http.StatusAccepted, protocol.ConnectionTestAnswer{Job: jobView(j)})
		return
	}
	test := testOutcome(j, s.now())
	c = s.record(c, store.ConnectionResult{Test: test, Organizations: fetched(j, s.now())})
	fields := append(connectionLog(c), zap.String("job_id", j.ID), zap.Bool("ok", test.OK))
	if test.Error != nil {
		fields = append(fields, zap.String("error_code", string(test.Error.Code)))
	}
	s.log.Info("connection tested", fields...)
	view := connectionView(c, false)
	writeJSON(w, http.StatusOK, protocol.ConnectionTestAnswer{Test: test, Connection: &view, Job: jobView(j)})
}

func (s *Server) testUnsavedConnection(w http.ResponseWriter, r *http.Request) {
	wait, ok := s.connectionWait(w, r)
	if !ok {
		return
	}
	var req protocol.CreateConnectionRequest
	if !decodeConnectionBody(w, r, &req) {
		return
	}
	// The name, active flag and password of the form play no part in a
	// test; the password is not even looked at.
	c := store.Connection{
		Kind: req.Kind, GitHubURL: req.GitHubURL, AgentID: req.AgentID, Secret: req.Secret,
		Organization: req.Organization, RequiredScopes: req.RequiredScopes,
	}
	if !s.checkTarget(w, r, &c) {
		return
	}
	j, ok := s.runConnectionJob(w, r, c, protocol.KindTestConnection, wait)
	if !ok {
		return
	}
	if !j.State.Terminal() {
		writeJSON(w, http.StatusAccepted, protocol.ConnectionTestAnswer{Job: jobView(j)})
		return
	}
	test := testOutcome(j, s.now())
	fields := []zap.Field{zap.String("agent_id", c.AgentID), zap.String("github_url", c.GitHubURL), zap.String("job_id", j.ID), zap.Bool("ok", test.OK)}
	if test.Error != nil {
		fields = append(fields, zap.String("error_code", string(test.Error.Code)))
	}
	s.log.Info("unsaved connection tested", fields...)
	writeJSON(w, http.StatusOK, protocol.ConnectionTestAnswer{Test: test, Job: jobView(j)})
}

func (s *Server) connectionOrganizations(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openConnection(w, r)
	if !ok {
		return
	}
	wait, ok := s.connectionWait(w, r)
	if !ok {
		return
	}
	j, ok := s.runConnectionJob(w, r, c, protocol.KindListOrganizations, wait)
	if !ok {
		return
	}
	if !j.State.Terminal() {
		writeJSON(w, http.StatusAccepted, protocol.ConnectionOrganizations{Organizations: []protocol.Organization{}, Job: jobView(j)})
		return
	}
	orgs := fetched(j, s.now())
	if orgs == nil {
		e := j.Error
		if e == nil {
			e = protocol.Errorf(protocol.CodeInternal, "the job ended %s without organizations", j.State)
		}
		s.log.Info("connection organizations not fetched", append(connectionLog(c), zap.String("job_id", j.ID),
			zap.String("error_code", string(e.Code)))...)
		status := http.StatusBadGateway
		switch e.Code {
		case protocol.CodeTimeout:
			status = http.StatusGatewayTimeout
		case protocol.CodeAgentOffline, protocol.CodeAgentRevoked, protocol.CodeCanceled:
			status = http.StatusConflict
		}
		writeError(w, status, protocol.Errorf(e.Code, "%s (job %s)", e.Message, j.ID))
		return
	}
	c = s.record(c, store.ConnectionResult{Organizations: orgs})
	s.log.Info("connection organizations fetched", append(connectionLog(c), zap.String("job_id", j.ID),
		zap.Int("organizations", len(orgs.Organizations)))...)
	list := orgs.Organizations
	if list == nil {
		list = []protocol.Organization{}
	}
	writeJSON(w, http.StatusOK, protocol.ConnectionOrganizations{
		Organizations: list, Truncated: j.Output.Organizations != nil && j.Output.Organizations.Truncated,
		Organization: c.Organization, FetchedAt: orgs.At, Job: jobView(j),
	})
}
