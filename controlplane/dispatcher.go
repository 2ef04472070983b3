package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// The dispatcher routes jobs to agents and carries every job to exactly one
// terminal state. Its rules:
//
//   - A job is stored (queued) before the API answers. It waits in its
//     agent's queue, in order, until the agent is online, not draining, and
//     has a free slot (the concurrency it announced in hello).
//   - Every state change is written to the store before it is acted on; a
//     result is acknowledged to the agent only after it is stored, and only
//     the first result for a job is recorded (a compare-and-set on state).
//     A job that its agent can take at once is stored already dispatched
//     (one write, not queued then dispatched). Running is the one state
//     nothing acts on (every rule treats dispatched and running alike): it
//     is stored with the job's result, or once the job has run for
//     runningDelay, so that a quick job costs two writes, not four.
//   - A job whose agent's session ends while the job is dispatched or running
//     keeps its state until the agent comes back. If the agent's hello lists
//     the job as running or holds its result, the job carries on. If it does
//     not (the agent restarted, or never received it), the job is queued
//     again as a new attempt, up to MaxAttempts dispatches; then it fails
//     with agent_offline. Every v1 job kind only reads, so a repeat is safe.
//   - At its deadline a job that has not finished expires: agent_offline if
//     it never reached the agent because the agent was offline, timeout
//     otherwise. A running job is canceled on the agent.
//   - A canceled or revoked agent's jobs end at once (canceled, failed with
//     agent_revoked); results that arrive later are acknowledged and dropped.
//   - After a restart the control plane reloads every open job and applies
//     the same rules when each agent says hello again.
type dispatcher struct {
	store       store.Store
	log         *zap.Logger
	now         func() time.Time
	maxAttempts int
	storeWait   time.Duration
	// onFinish, when set, sees each job that reached a terminal state
	// (metrics); it is called with the agent's lock held and must not block.
	onFinish func(store.Job)

	mu      sync.Mutex // guards the fields below
	agents  map[string]*agentState
	jobs    map[string]*openJob // every job not yet terminal
	stopped bool                // set by stop: no session attaches after it
}

// agentState is what the dispatcher knows of one agent. Its mutex also
// guards the jobs that belong to the agent.
type agentState struct {
	id string

	mu          sync.Mutex // guards the fields below and the agent's openJobs
	sess        *session   // nil while offline
	hello       protocol.Hello
	connectedAt time.Time
	lastSeen    time.Time
	draining    bool
	pauseUntil  time.Time           // after an agent_busy rejection
	queue       []*openJob          // queued jobs, in order
	inflight    map[string]*openJob // sent to the agent and not yet answered with a result
	reserved    int                 // slots held by jobs that submit is storing as dispatched
	revoked     bool                // set by revoke: new jobs fail at once
	pumpTimer   *time.Timer
}

// openJob is a job that has not reached a terminal state.
type openJob struct {
	agentID string        // the job's agent; never changes, read without a lock
	job     store.Job     // guarded by the agent's mu
	timer   *time.Timer   // the deadline
	done    chan struct{} // closed when the job is terminal
	// runTimer stores the running state after runningDelay; guarded by
	// the agent's mu.
	runTimer *time.Timer
}

// runningDelay is how long a job runs before its running state is stored
// (when its result has not come first).
const runningDelay = 250 * time.Millisecond

func newDispatcher(st store.Store, log *zap.Logger, now func() time.Time, maxAttempts int) *dispatcher {
	return &dispatcher{
		store:       st,
		log:         log,
		now:         now,
		maxAttempts: maxAttempts,
		storeWait:   10 * time.Second,
		agents:      make(map[string]*agentState),
		jobs:        make(map[string]*openJob),
	}
}

// storeCtx bounds a store call made on behalf of the dispatcher itself.
func (d *dispatcher) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.storeWait)
}

// online reports whether the agent has a live session. Such an agent is
// enrolled and not revoked (revoking ends its session), so that a job for
// it needs no look-up in the store.
func (d *dispatcher) online(id string) bool {
	d.mu.Lock()
	a := d.agents[id]
	d.mu.Unlock()
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sess != nil && !a.revoked
}

func (d *dispatcher) agent(id string) *agentState {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.agents[id]
	if a == nil {
		a = &agentState{id: id, inflight: make(map[string]*openJob)}
		d.agents[id] = a
	}
	return a
}

// load reads every open job after a start, and arms their deadlines.
func (d *dispatcher) load(ctx context.Context) error {
	jobs, err := d.store.OpenJobs(ctx)
	if err != nil {
		return fmt.Errorf("load open jobs: %w", err)
	}
	for _, j := range jobs {
		a := d.agent(j.AgentID)
		a.mu.Lock()
		oj := d.track(a, j)
		if j.State == protocol.JobQueued {
			a.queue = append(a.queue, oj)
		} else {
			a.inflight[j.ID] = oj
		}
		a.mu.Unlock()
	}
	if len(jobs) > 0 {
		d.log.Info("open jobs reloaded", zap.Int("jobs", len(jobs)))
	}
	return nil
}

// track registers an open job and arms its deadline. Call with a.mu held.
func (d *dispatcher) track(a *agentState, j store.Job) *openJob {
	oj := &openJob{agentID: j.AgentID, job: j, done: make(chan struct{})}
	d.mu.Lock()
	d.jobs[j.ID] = oj
	d.mu.Unlock()
	oj.timer = time.AfterFunc(j.Deadline.Sub(d.now()), func() { d.expire(a, oj) })
	return oj
}

// submit stores a new job and queues it for its agent. When the agent can
// take it at once (online, not draining, nothing queued before it, a free
// slot), a slot is reserved and the job is stored already dispatched: one
// write instead of two. The write is made outside the agent's lock (nobody
// else knows the job until it is tracked), so that the agent's other jobs
// and their writes are not held up behind it.
func (d *dispatcher) submit(ctx context.Context, j store.Job) (store.Job, error) {
	a := d.agent(j.AgentID)
	a.mu.Lock()
	sess := a.sess
	direct := len(a.queue) == 0 && d.freeSlotLocked(a)
	if direct {
		a.reserved++
		now := d.now()
		j.State, j.Attempt, j.DispatchedAt = protocol.JobDispatched, 1, &now
	}
	a.mu.Unlock()
	err := d.store.CreateJob(ctx, j)
	a.mu.Lock()
	defer a.mu.Unlock()
	if direct {
		a.reserved--
	}
	if err != nil {
		if direct {
			d.pumpLocked(a) // the reserved slot is free again
		}
		return store.Job{}, err
	}
	oj := d.track(a, j)
	fields := []zap.Field{zap.String("job_id", j.ID), zap.String("agent_id", j.AgentID),
		zap.String("kind", string(j.Kind)), zap.Duration("timeout", j.Timeout)}
	if j.ConnectionID != "" {
		fields = append(fields, zap.String("connection_id", j.ConnectionID))
	}
	d.log.Info("job queued", fields...)
	switch {
	case a.revoked:
		// Revoked while the job was stored.
		d.finishLocked(a, oj, protocol.JobFailed, protocol.Errorf(protocol.CodeAgentRevoked, "agent %s was revoked", a.id), nil)
	case !direct:
		a.queue = append(a.queue, oj)
		d.pumpLocked(a)
	case a.sess == sess && !a.draining:
		a.inflight[j.ID] = oj
		d.sendLocked(a, oj)
	default:
		// The session ended or began draining while the job was stored
		// as dispatched: it was never sent. It goes back to the head of
		// the queue; if the store fails, it stays dispatched, and the
		// agent's next hello, which does not list it, queues it again.
		q := oj.job
		q.State, q.Attempt, q.DispatchedAt = protocol.JobQueued, 0, nil
		if d.writeLocked(oj, q, protocol.JobDispatched) {
			a.queue = append([]*openJob{oj}, a.queue...)
			d.pumpLocked(a)
		} else {
			a.inflight[j.ID] = oj
		}
	}
	return oj.job, nil
}

// freeSlotLocked reports whether the agent can take a job now.
func (d *dispatcher) freeSlotLocked(a *agentState) bool {
	return a.sess != nil && !a.draining && !a.pauseUntil.After(d.now()) &&
		len(a.inflight)+a.reserved < a.hello.Concurrency
}

// pumpLocked sends queued jobs while the agent has free slots.
func (d *dispatcher) pumpLocked(a *agentState) {
	if a.sess == nil || a.draining {
		return
	}
	if wait := a.pauseUntil.Sub(d.now()); wait > 0 {
		if a.pumpTimer == nil {
			a.pumpTimer = time.AfterFunc(wait, func() {
				a.mu.Lock()
				a.pumpTimer = nil
				d.pumpLocked(a)
				a.mu.Unlock()
			})
		}
		return
	}
	for len(a.queue) > 0 && len(a.inflight)+a.reserved < a.hello.Concurrency {
		oj := a.queue[0]
		j := oj.job
		if j.State.Terminal() {
			a.queue = a.queue[1:]
			continue
		}
		now := d.now()
		j.State = protocol.JobDispatched
		j.Attempt++
		j.DispatchedAt = &now
		j.AcceptedAt = nil
		if !d.writeLocked(oj, j, protocol.JobQueued) {
			return // the store failed; the job stays queued and is tried again later
		}
		a.queue = a.queue[1:]
		a.inflight[j.ID] = oj
		d.sendLocked(a, oj)
	}
}

// sendLocked sends a job stored as dispatched to the agent's session.
func (d *dispatcher) sendLocked(a *agentState, oj *openJob) {
	j := oj.job
	a.sess.send(&protocol.Message{Type: protocol.TypeJob, Job: &protocol.Job{
		JobID: j.ID, Kind: j.Kind, Params: j.Params, Deadline: j.Deadline, Attempt: j.Attempt,
	}})
	fields := []zap.Field{zap.String("job_id", j.ID), zap.String("agent_id", a.id),
		zap.String("session_id", a.sess.id), zap.String("kind", string(j.Kind)), zap.Int("attempt", j.Attempt)}
	if j.ConnectionID != "" {
		fields = append(fields, zap.String("connection_id", j.ConnectionID))
	}
	d.log.Info("job dispatched", fields...)
}

// writeLocked stores j if the stored state is one of from, and adopts it in
// memory. It reports whether the job now has j's state.
func (d *dispatcher) writeLocked(oj *openJob, j store.Job, from ...protocol.JobState) bool {
	ctx, cancel := d.storeCtx()
	defer cancel()
	ok, err := d.store.UpdateJob(ctx, j, from...)
	if err != nil {
		d.log.Error("store job state", zap.String("job_id", j.ID), zap.String("state", string(j.State)), zap.Error(err))
		return false
	}
	if !ok {
		// The stored state moved on without us: trust the store.
		d.log.Warn("job state changed underneath", zap.String("job_id", j.ID), zap.String("state", string(j.State)))
		return false
	}
	oj.job = j
	return true
}

// finishLocked moves an open job to a terminal state. It reports whether
// the state was stored.
func (d *dispatcher) finishLocked(a *agentState, oj *openJob, state protocol.JobState, e *protocol.Error, out *protocol.Output) bool {
	j := oj.job
	if j.State.Terminal() {
		return false
	}
	now := d.now()
	j.State, j.FinishedAt, j.Error, j.Output = state, &now, e, out
	if !d.writeLocked(oj, j, protocol.JobQueued, protocol.JobDispatched, protocol.JobRunning) {
		return false
	}
	oj.timer.Stop()
	if oj.runTimer != nil {
		oj.runTimer.Stop()
	}
	d.mu.Lock()
	delete(d.jobs, j.ID)
	d.mu.Unlock()
	if i := slices.Index(a.queue, oj); i >= 0 {
		a.queue = slices.Delete(a.queue, i, i+1)
	}
	close(oj.done)
	if d.onFinish != nil {
		d.onFinish(oj.job)
	}
	fields := []zap.Field{zap.String("job_id", j.ID), zap.String("agent_id", a.id), zap.String("kind", string(j.Kind)),
		zap.String("outcome", string(state)), zap.Int("attempt", j.Attempt), zap.Int64("duration_ms", now.Sub(j.CreatedAt).Milliseconds())}
	if e != nil {
		fields = append(fields, zap.String("error_code", string(e.Code)))
	}
	if a.sess != nil {
		fields = append(fields, zap.String("session_id", a.sess.id))
	}
	if j.ConnectionID != "" {
		fields = append(fields, zap.String("connection_id", j.ConnectionID))
	}
	d.log.Info("job finished", fields...)
	return true
}

// expire ends a job at its deadline.
func (d *dispatcher) expire(a *agentState, oj *openJob) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j := oj.job
	if j.State.Terminal() {
		return
	}
	e := protocol.Errorf(protocol.CodeTimeout, "the job did not finish within its timeout of %s", j.Timeout)
	if j.State == protocol.JobQueued && a.sess == nil {
		e = protocol.Errorf(protocol.CodeAgentOffline, "agent %s was offline until the job's deadline (timeout %s)", a.id, j.Timeout)
	}
	if !d.finishLocked(a, oj, protocol.JobExpired, e, nil) {
		oj.timer.Reset(time.Second) // the store failed: try again
		return
	}
	d.cancelOnAgentLocked(a, j.ID, "the job's deadline passed")
}

func (d *dispatcher) cancelOnAgentLocked(a *agentState, jobID, reason string) {
	if _, ok := a.inflight[jobID]; ok && a.sess != nil {
		a.sess.send(&protocol.Message{Type: protocol.TypeCancel, Cancel: &protocol.Cancel{JobID: jobID, Reason: reason}})
	}
}

// errJobTerminal: the job already ended.
var errJobTerminal = errors.New("job already ended")

// cancel ends a job through the API.
func (d *dispatcher) cancel(ctx context.Context, id string) error {
	d.mu.Lock()
	oj := d.jobs[id]
	d.mu.Unlock()
	if oj == nil {
		if _, err := d.store.GetJob(ctx, id); err != nil {
			return err
		}
		return errJobTerminal
	}
	a := d.agent(oj.agentID) // not oj.job: it is guarded by a.mu
	a.mu.Lock()
	defer a.mu.Unlock()
	if oj.job.State.Terminal() {
		return errJobTerminal
	}
	if !d.finishLocked(a, oj, protocol.JobCanceled, protocol.Errorf(protocol.CodeCanceled, "the job was canceled through the API"), nil) {
		return fmt.Errorf("store the cancellation of job %s", id)
	}
	d.cancelOnAgentLocked(a, id, "canceled through the API")
	return nil
}

// wait blocks until the job is terminal or ctx ends. When the job ended
// while it waited, it returns the job as stored at its end (times in UTC,
// as the store gives them) and true: the caller need not read it back.
func (d *dispatcher) wait(ctx context.Context, id string) (store.Job, bool) {
	d.mu.Lock()
	oj := d.jobs[id]
	d.mu.Unlock()
	if oj == nil {
		return store.Job{}, false
	}
	select {
	case <-oj.done:
	case <-ctx.Done():
		return store.Job{}, false
	}
	a := d.agent(oj.agentID)
	a.mu.Lock()
	j := oj.job
	a.mu.Unlock()
	return inUTC(j), true
}

// inUTC returns j with its times in UTC.
func inUTC(j store.Job) store.Job {
	j.Deadline, j.CreatedAt = j.Deadline.UTC(), j.CreatedAt.UTC()
	for _, t := range []**time.Time{&j.DispatchedAt, &j.AcceptedAt, &j.FinishedAt} {
		if *t != nil {
			u := (*t).UTC()
			*t = &u
		}
	}
	return j
}

// attach makes sess the agent's session, after its hello, and settles the
// jobs the agent had before by the rules above. It reports false, and does
// nothing, once stop was called: the server is closing and has already
// collected the sessions it ends.
func (d *dispatcher) attach(sess *session, h *protocol.Hello) bool {
	a := d.agent(sess.agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	d.mu.Lock()
	stopped := d.stopped
	d.mu.Unlock()
	if stopped {
		return false
	}
	if old := a.sess; old != nil {
		old.close(protocol.CloseSuperseded, "a newer session of this agent replaced this one")
	}
	now := d.now()
	a.sess, a.hello, a.connectedAt, a.lastSeen, a.draining = sess, *h, now, now, false
	a.pauseUntil = time.Time{}

	has := make(map[string]bool, len(h.Running)+len(h.Held))
	for _, id := range h.Running {
		has[id] = true
	}
	for _, id := range h.Held {
		has[id] = true
	}
	// Jobs the control plane thought queued but the agent has (a crash
	// between sending and storing): they are in flight.
	for i := 0; i < len(a.queue); {
		oj := a.queue[i]
		if !has[oj.job.ID] {
			i++
			continue
		}
		a.queue = slices.Delete(a.queue, i, i+1)
		a.inflight[oj.job.ID] = oj
	}
	for id, oj := range a.inflight {
		j := oj.job
		if has[id] {
			if j.State.Terminal() {
				// Canceled or expired while the agent was away.
				sess.send(&protocol.Message{Type: protocol.TypeCancel, Cancel: &protocol.Cancel{JobID: id, Reason: "the job ended while the agent was away"}})
			}
			continue
		}
		delete(a.inflight, id)
		if j.State.Terminal() {
			continue
		}
		if j.Attempt >= d.maxAttempts {
			d.finishLocked(a, oj, protocol.JobFailed, protocol.Errorf(protocol.CodeAgentOffline,
				"the agent lost this job %d times (it reconnected without it, for example after a restart); giving up", j.Attempt), nil)
			continue
		}
		j.State, j.DispatchedAt, j.AcceptedAt = protocol.JobQueued, nil, nil
		if d.writeLocked(oj, j, protocol.JobDispatched, protocol.JobRunning) {
			a.queue = append([]*openJob{oj}, a.queue...)
			d.log.Info("job requeued", zap.String("job_id", id), zap.String("agent_id", a.id),
				zap.String("reason", "agent came back without it"), zap.Int("attempt", j.Attempt))
		}
	}
	d.pumpLocked(a)
	return true
}

// detach ends sess; its jobs wait for the agent to come back.
func (d *dispatcher) detach(sess *session) {
	a := d.agent(sess.agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess != sess {
		return
	}
	a.sess, a.draining = nil, false
	a.lastSeen = d.now()
	if a.pumpTimer != nil {
		a.pumpTimer.Stop()
		a.pumpTimer = nil
	}
}

// touch records that the agent was heard from.
func (d *dispatcher) touch(sess *session) {
	a := d.agent(sess.agentID)
	a.mu.Lock()
	if a.sess == sess {
		a.lastSeen = d.now()
	}
	a.mu.Unlock()
}

func (d *dispatcher) setDraining(sess *session) {
	a := d.agent(sess.agentID)
	a.mu.Lock()
	if a.sess == sess {
		a.draining = true
	}
	a.mu.Unlock()
}

// accepted marks a dispatched job running, in memory. The store learns it
// with the job's result or, if the job still runs after runningDelay, then:
// nothing is decided on the running state, and a quick job is spared a
// write (and the agent's next messages a wait for it).
func (d *dispatcher) accepted(sess *session, m *protocol.Accepted) {
	a := d.agent(sess.agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	oj := a.inflight[m.JobID]
	if oj == nil || oj.job.State != protocol.JobDispatched {
		return
	}
	now := d.now()
	oj.job.State, oj.job.AcceptedAt = protocol.JobRunning, &now
	attempt := oj.job.Attempt
	if oj.runTimer != nil {
		oj.runTimer.Stop()
	}
	oj.runTimer = time.AfterFunc(runningDelay, func() { d.storeRunning(a, oj, attempt) })
}

// storeRunning stores that a job runs, if it still runs the same attempt
// and the store has it dispatched.
func (d *dispatcher) storeRunning(a *agentState, oj *openJob, attempt int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if j := oj.job; j.State == protocol.JobRunning && j.Attempt == attempt {
		d.writeLocked(oj, j, protocol.JobDispatched)
	}
}

// rejected handles an agent's refusal: agent_busy queues the job again after
// a pause; any other code fails it.
func (d *dispatcher) rejected(sess *session, m *protocol.Rejected) {
	a := d.agent(sess.agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	oj := a.inflight[m.JobID]
	if oj == nil {
		return
	}
	delete(a.inflight, m.JobID)
	if oj.job.State.Terminal() {
		return
	}
	e := m.Error
	d.log.Info("job rejected", zap.String("job_id", m.JobID), zap.String("agent_id", a.id), zap.String("error_code", string(e.Code)))
	if e.Code != protocol.CodeAgentBusy {
		d.finishLocked(a, oj, protocol.JobFailed, &e, nil)
		d.pumpLocked(a)
		return
	}
	j := oj.job
	j.State, j.Attempt, j.DispatchedAt = protocol.JobQueued, j.Attempt-1, nil
	if d.writeLocked(oj, j, protocol.JobDispatched, protocol.JobRunning) {
		a.queue = append([]*openJob{oj}, a.queue...)
	}
	a.pauseUntil = d.now().Add(500 * time.Millisecond)
	d.pumpLocked(a)
}

// result records a job's outcome once and reports whether the agent may
// drop it (it is stored, or there is nothing to store).
func (d *dispatcher) result(sess *session, r *protocol.Result) bool {
	a := d.agent(sess.agentID)
	a.mu.Lock()
	defer a.mu.Unlock()
	oj := a.inflight[r.JobID]
	if oj == nil {
		// Not in flight: maybe queued again after a reconnect, or already ended.
		d.mu.Lock()
		oj = d.jobs[r.JobID]
		d.mu.Unlock()
		if oj == nil || oj.agentID != a.id {
			d.log.Debug("result for a job that already ended", zap.String("job_id", r.JobID), zap.String("agent_id", a.id))
			return true
		}
	}
	state := protocol.JobSucceeded
	if !r.OK {
		state = protocol.JobFailed
	}
	if !oj.job.State.Terminal() && !d.finishLocked(a, oj, state, r.Error, r.Output) {
		return false // not stored: the agent keeps it and sends it again
	}
	delete(a.inflight, r.JobID)
	d.pumpLocked(a)
	return true
}

// revoke ends the agent's session and its jobs.
func (d *dispatcher) revoke(id string) {
	a := d.agent(id)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess != nil {
		a.sess.close(protocol.CloseRevoked, "this agent was revoked")
		a.sess = nil
	}
	a.revoked = true
	e := protocol.Errorf(protocol.CodeAgentRevoked, "agent %s was revoked", id)
	for _, oj := range slices.Clone(a.queue) {
		d.finishLocked(a, oj, protocol.JobFailed, e, nil)
	}
	for id, oj := range a.inflight {
		d.finishLocked(a, oj, protocol.JobFailed, e, nil)
		delete(a.inflight, id)
	}
}

// superseded closes the agent's session without ending its jobs (after a
// re-enrollment: the old key is no longer accepted).
func (d *dispatcher) superseded(id string) {
	a := d.agent(id)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess != nil {
		a.sess.close(protocol.CloseSuperseded, "the agent was enrolled again")
	}
}

// agentLive is the in-memory part of an agent's view.
type agentLive struct {
	online, draining bool
	sessionID        string
	hello            protocol.Hello
	connectedAt      time.Time
	lastSeen         time.Time
	running          int
}

func (d *dispatcher) live(id string) agentLive {
	d.mu.Lock()
	a := d.agents[id]
	d.mu.Unlock()
	if a == nil {
		return agentLive{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	l := agentLive{lastSeen: a.lastSeen, hello: a.hello}
	if a.sess != nil {
		l.online, l.draining, l.sessionID, l.connectedAt, l.running = true, a.draining, a.sess.id, a.connectedAt, len(a.inflight)
	}
	return l
}

// sessions lists the live sessions, for shutdown.
func (d *dispatcher) sessions() []*session {
	d.mu.Lock()
	agents := make([]*agentState, 0, len(d.agents))
	for _, a := range d.agents {
		agents = append(agents, a)
	}
	d.mu.Unlock()
	var out []*session
	for _, a := range agents {
		a.mu.Lock()
		if a.sess != nil {
			out = append(out, a.sess)
		}
		a.mu.Unlock()
	}
	return out
}

// stop disarms every timer and refuses new sessions.
func (d *dispatcher) stop() {
	d.mu.Lock()
	d.stopped = true
	agents := make([]*agentState, 0, len(d.agents))
	for _, a := range d.agents {
		agents = append(agents, a)
	}
	d.mu.Unlock()
	for _, a := range agents {
		a.mu.Lock()
		if a.pumpTimer != nil {
			a.pumpTimer.Stop()
		}
		for _, oj := range a.queue {
			oj.timer.Stop()
		}
		for _, oj := range a.inflight {
			oj.timer.Stop()
			if oj.runTimer != nil {
				oj.runTimer.Stop()
			}
		}
		a.mu.Unlock()
	}
}
