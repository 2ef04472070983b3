package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// maxBody bounds every API request body.
const maxBody = 1 << 20

func (s *Server) routes() {
	m := http.NewServeMux()
	// handle registers a route and keeps its pattern for the OpenAPI
	// document's test.
	handle := func(pattern string, h http.HandlerFunc) {
		s.patterns = append(s.patterns, pattern)
		m.HandleFunc(pattern, h)
	}
	admin := func(pattern string, h http.HandlerFunc) {
		handle(pattern, func(w http.ResponseWriter, r *http.Request) {
			// Without a valid Bearer token, the web console's session
			// cookie may authorize the request (console.go).
			if !s.authorized(r) {
				if r.Header.Get("Authorization") != "" {
					s.refusedToken(r, "api")
				}
				if status, e := s.sessionAuthorized(r); status != http.StatusOK {
					if status == http.StatusUnauthorized {
						w.Header().Set("WWW-Authenticate", `Bearer realm="controlplane"`)
					}
					writeError(w, status, e)
					return
				}
			}
			h(w, r)
		})
	}
	handle("GET /healthz", s.healthz)
	handle("GET /readyz", s.readyz)
	handle("GET /metrics", s.metrics.handler().ServeHTTP)
	handle("GET "+openAPIPath, s.openAPI)
	handle("POST "+protocol.EnrollPath, s.enroll)
	handle("GET "+protocol.ConnectPath, s.handleConnect)

	admin("POST /api/v1/agents", s.registerAgent)
	admin("GET /api/v1/agents", s.listAgents)
	admin("GET /api/v1/agents/{id}", s.getAgent)
	admin("DELETE /api/v1/agents/{id}", s.revokeAgent)
	admin("POST /api/v1/agents/{id}/enrollment-token", s.newEnrollmentToken)
	admin("POST /api/v1/jobs", s.submitJob)
	admin("GET /api/v1/jobs", s.listJobs)
	admin("GET /api/v1/jobs/{id}", s.getJob)
	admin("POST /api/v1/jobs/{id}/cancel", s.cancelJob)
	s.connectionRoutes(admin)
	s.consoleRoutes(handle)

	// Anything else: a JSON 404 or 405, like every other API error. This
	// catch-all matches every method, so the mux never answers 405 itself:
	// a path that another method serves is told so here.
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			if _, pattern := m.Handler(&http.Request{Method: method, URL: r.URL, Host: r.Host}); pattern != "/" && pattern != "" {
				allow = append(allow, method)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, protocol.Errorf(protocol.CodeMethodNotAllowed,
				"%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
			return
		}
		writeError(w, http.StatusNotFound, protocol.Errorf(protocol.CodeNotFound, "no route %s %s", r.Method, r.URL.Path))
	})
	s.mux = m
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, e *protocol.Error) {
	writeJSON(w, status, protocol.APIError{Error: *e})
}

// bodyTimeout bounds the reading of a request body. The http.Server's
// ReadHeaderTimeout covers only the headers, and its ReadTimeout would also
// cut the long polls (?wait=) and the agents' websockets, so the deadline is
// set here, for the body alone: a body that trickles in (an unauthenticated
// enrollment request, for one) cannot hold a connection for longer.
const bodyTimeout = 20 * time.Second

// bodyDeadline gives the request body bodyTimeout to arrive. Call the
// function it returns with the reading's error once the body is read: it
// clears the deadline for the rest of the request, except after a timeout,
// when the deadline stays past so that the server does not read on to drain
// the body but closes the connection. It returns the error.
func bodyDeadline(w http.ResponseWriter) func(error) error {
	rc := http.NewResponseController(w)
	// A ResponseWriter that cannot (a test's recorder) reads without one.
	if rc.SetReadDeadline(time.Now().Add(bodyTimeout)) != nil {
		return func(err error) error { return err }
	}
	return func(err error) error {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			_ = rc.SetReadDeadline(time.Time{})
		}
		return err
	}
}

// bodyTimedOut answers 408 and reports true when err says the body did not
// arrive in time.
func bodyTimedOut(w http.ResponseWriter, err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestTimeout, protocol.Errorf(protocol.CodeInvalidParams, "the request body did not arrive within %s", bodyTimeout))
	return true
}

// decodeBody reads a bounded JSON body into v, within bodyTimeout, refusing
// unknown fields so that a misspelled field is an error rather than silently
// ignored.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	done := bodyDeadline(w)
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if bodyTimedOut(w, done(err)) {
		return false
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, protocol.Errorf(protocol.CodeRequestTooLarge, "the request body is over %d bytes", maxBody))
		return false
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("the body is empty")
	}
	writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "the request body is not valid: %v", err))
	return false
}

// waitParam reads ?wait=, bounded by MaxWait.
func (s *Server) waitParam(w http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "wait=%q is not a duration such as 30s", truncate(v, 32)))
		return 0, false
	}
	return min(d, s.maxWait), true
}

func (s *Server) storeError(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, protocol.Errorf(protocol.CodeNotFound, "%s not found", what))
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeConflict, "%s already exists", what))
	default:
		s.log.Error("store", zap.String("what", what), zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, protocol.Errorf(protocol.CodeUnavailable, "the store did not answer; try again"))
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, protocol.Health{Status: "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, protocol.Health{Status: "unavailable", Detail: "the store does not answer"})
		return
	}
	writeJSON(w, http.StatusOK, protocol.Health{Status: "ok"})
}

var agentName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (s *Server) registerAgent(w http.ResponseWriter, r *http.Request) {
	var req protocol.RegisterAgentRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !agentName.MatchString(req.Name) {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams,
			"name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"))
		return
	}
	if len(req.Labels) > 32 {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "labels: at most 32"))
		return
	}
	for k, v := range req.Labels {
		if !agentName.MatchString(k) || len(v) > 256 {
			writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams,
				"labels: key %q must look like a name and values be at most 256 bytes", truncate(k, 64)))
			return
		}
	}
	now := s.now()
	a := store.Agent{ID: newID("agt_", now), Name: req.Name, Labels: req.Labels, CreatedAt: now}
	token := newToken()
	t := store.Token{Hash: hashToken(token), AgentID: a.ID, CreatedAt: now, ExpiresAt: now.Add(s.tokenTTL)}
	if err := s.store.CreateAgent(r.Context(), a, t); err != nil {
		s.storeError(w, fmt.Sprintf("agent named %q", req.Name), err)
		return
	}
	s.log.Info("agent registered", zap.String("agent_id", a.ID), zap.String("agent", a.Name))
	writeJSON(w, http.StatusCreated, protocol.RegisterAgentResponse{
		Agent:           s.agentView(a),
		EnrollmentToken: protocol.EnrollmentToken{Token: token, ExpiresAt: t.ExpiresAt},
	})
}

func (s *Server) newEnrollmentToken(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.GetAgent(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, "agent", err)
		return
	}
	if a.RevokedAt != nil {
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeAgentRevoked, "agent %s is revoked; register a new agent", a.ID))
		return
	}
	now := s.now()
	token := newToken()
	t := store.Token{Hash: hashToken(token), AgentID: a.ID, CreatedAt: now, ExpiresAt: now.Add(s.tokenTTL)}
	if err := s.store.AddToken(r.Context(), t); err != nil {
		s.storeError(w, "agent", err)
		return
	}
	s.log.Info("enrollment token issued", zap.String("agent_id", a.ID))
	writeJSON(w, http.StatusCreated, protocol.RegisterAgentResponse{
		Agent:           s.agentView(a),
		EnrollmentToken: protocol.EnrollmentToken{Token: token, ExpiresAt: t.ExpiresAt},
	})
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var req protocol.EnrollRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "%v", err))
		return
	}
	key, _ := protocol.ParsePublicKey(req.PublicKey) // Validate checked it
	a, err := s.store.Enroll(r.Context(), hashToken(req.Token), key, s.now())
	if errors.Is(err, store.ErrTokenInvalid) {
		s.log.Warn("enrollment refused", zap.String("remote", r.RemoteAddr), zap.String("hostname", req.Hostname))
		writeError(w, http.StatusUnauthorized, protocol.Errorf(protocol.CodeTokenInvalid,
			"the enrollment token is unknown, already used or expired; ask for a new one (POST /api/v1/agents/{id}/enrollment-token)"))
		return
	}
	if err != nil {
		s.storeError(w, "enrollment", err)
		return
	}
	// A session that used the old key must not outlive the re-enrollment.
	s.disp.superseded(a.ID)
	s.log.Info("agent enrolled", zap.String("agent_id", a.ID), zap.String("agent", a.Name),
		zap.String("hostname", req.Hostname), zap.String("agent_version", req.AgentVersion))
	writeJSON(w, http.StatusOK, protocol.EnrollResponse{AgentID: a.ID, Name: a.Name})
}

func (s *Server) agentView(a store.Agent) protocol.AgentView {
	v := protocol.AgentView{
		ID: a.ID, Name: a.Name, Labels: a.Labels, AgentVersion: a.AgentVersion, Hostname: a.Hostname, OS: a.OS,
		Backends: a.Backends, LastSeen: a.LastSeen, CreatedAt: a.CreatedAt, EnrolledAt: a.EnrolledAt, RevokedAt: a.RevokedAt,
		Status: protocol.AgentOffline,
	}
	switch {
	case a.RevokedAt != nil:
		v.Status = protocol.AgentRevoked
		return v
	case a.PublicKey == nil:
		v.Status = protocol.AgentPending
		return v
	}
	l := s.disp.live(a.ID)
	if !l.lastSeen.IsZero() {
		v.LastSeen = &l.lastSeen
	}
	if !l.online {
		return v
	}
	v.Status = protocol.AgentOnline
	if l.draining {
		v.Status = protocol.AgentDraining
	}
	v.SessionID, v.ConnectedSince, v.RunningJobs = l.sessionID, &l.connectedAt, l.running
	v.AgentVersion, v.Hostname, v.OS, v.Backends = l.hello.AgentVersion, l.hello.Hostname, l.hello.OS, l.hello.Backends
	v.Kinds, v.Concurrency = l.hello.Kinds, l.hello.Concurrency
	return v
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.store.ListAgents(r.Context())
	if err != nil {
		s.storeError(w, "agents", err)
		return
	}
	out := protocol.AgentList{Agents: make([]protocol.AgentView, 0, len(agents))}
	for _, a := range agents {
		out.Agents = append(out.Agents, s.agentView(a))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.GetAgent(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, "agent", err)
		return
	}
	writeJSON(w, http.StatusOK, s.agentView(a))
}

func (s *Server) revokeAgent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.store.RevokeAgent(r.Context(), id, s.now()); err != nil {
		s.storeError(w, "agent", err)
		return
	}
	s.disp.revoke(id)
	s.log.Info("agent revoked", zap.String("agent_id", id))
	a, err := s.store.GetAgent(r.Context(), id)
	if err != nil {
		s.storeError(w, "agent", err)
		return
	}
	writeJSON(w, http.StatusOK, s.agentView(a))
}

func (s *Server) submitJob(w http.ResponseWriter, r *http.Request) {
	wait, ok := s.waitParam(w, r)
	if !ok {
		return
	}
	var req protocol.SubmitJobRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !req.Kind.Known() {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "kind %q is not one of %v", truncate(string(req.Kind), 64), protocol.JobKinds))
		return
	}
	if err := req.Params.Validate(req.Kind); err != nil {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "%v", err))
		return
	}
	timeout := req.Timeout.D()
	if timeout == 0 {
		timeout = s.defTO
	}
	if timeout < 0 || timeout > s.maxTO {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "timeout must be between 0s and %s", s.maxTO))
		return
	}
	// An agent online now is known and not revoked: no need to ask the store.
	if !s.disp.online(req.AgentID) {
		a, err := s.store.GetAgent(r.Context(), req.AgentID)
		if err != nil {
			s.storeError(w, "agent "+truncate(req.AgentID, 64), err)
			return
		}
		if a.RevokedAt != nil {
			writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeAgentRevoked, "agent %s is revoked", a.ID))
			return
		}
	}
	now := s.now()
	j, err := s.disp.submit(r.Context(), store.Job{
		ID: newID("job_", now), AgentID: req.AgentID, Kind: req.Kind, Params: req.Params, State: protocol.JobQueued,
		Timeout: timeout, Deadline: now.Add(timeout), CreatedAt: now,
	})
	if err != nil {
		s.storeError(w, "job", err)
		return
	}
	if wait > 0 {
		j = s.waitJob(r.Context(), j.ID, wait, j)
	}
	writeJSON(w, http.StatusCreated, jobView(j))
}

// waitJob waits up to d for the job to end and returns its latest state.
func (s *Server) waitJob(ctx context.Context, id string, d time.Duration, last store.Job) store.Job {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if j, ended := s.disp.wait(wctx, id); ended {
		return j // as stored: no need to read it back
	}
	j, err := s.store.GetJob(ctx, id)
	if err != nil {
		return last
	}
	return j
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	wait, ok := s.waitParam(w, r)
	if !ok {
		return
	}
	j, err := s.store.GetJob(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, "job", err)
		return
	}
	if wait > 0 && !j.State.Terminal() {
		j = s.waitJob(r.Context(), j.ID, wait, j)
	}
	writeJSON(w, http.StatusOK, jobView(j))
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.JobFilter{AgentID: q.Get("agent_id"), State: protocol.JobState(q.Get("state"))}
	if f.State != "" && !f.State.Valid() {
		writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams,
			"state=%q is not one of queued, dispatched, running, succeeded, failed, expired, canceled", truncate(string(f.State), 32)))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, protocol.Errorf(protocol.CodeInvalidParams, "limit must be a number from 1 to 1000"))
			return
		}
		f.Limit = n
	}
	jobs, err := s.store.ListJobs(r.Context(), f)
	if err != nil {
		s.storeError(w, "jobs", err)
		return
	}
	out := protocol.JobList{Jobs: make([]protocol.JobView, 0, len(jobs))}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, jobView(j))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := s.disp.cancel(r.Context(), id)
	switch {
	case errors.Is(err, errJobTerminal):
		j, gerr := s.store.GetJob(r.Context(), id)
		if gerr != nil {
			s.storeError(w, "job", gerr)
			return
		}
		writeError(w, http.StatusConflict, protocol.Errorf(protocol.CodeJobNotCancellable, "job %s already ended: %s", id, j.State))
		return
	case err != nil:
		s.storeError(w, "job", err)
		return
	}
	j, err := s.store.GetJob(r.Context(), id)
	if err != nil {
		s.storeError(w, "job", err)
		return
	}
	writeJSON(w, http.StatusOK, jobView(j))
}

func jobView(j store.Job) protocol.JobView {
	v := protocol.JobView{
		ID: j.ID, AgentID: j.AgentID, Kind: j.Kind, Params: j.Params, State: j.State, Attempts: j.Attempt,
		Timeout: protocol.Duration(j.Timeout), Deadline: j.Deadline, CreatedAt: j.CreatedAt,
		DispatchedAt: j.DispatchedAt, AcceptedAt: j.AcceptedAt, FinishedAt: j.FinishedAt, Error: j.Error, Result: j.Output,
		ConnectionID: j.ConnectionID,
	}
	if j.FinishedAt != nil {
		ms := j.FinishedAt.Sub(j.CreatedAt).Milliseconds()
		v.DurationMS = &ms
	}
	return v
}
