package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/protocol"
)

// handler does one kind of job. It returns the output or an error; an
// error that is a *protocol.Error is reported as it is, any other as
// internal (and logged). Neither may hold a secret value.
type handler func(ctx context.Context, log *zap.Logger, j *protocol.Job) (*protocol.Output, error)

// errDraining is the cause of jobs canceled because the grace period ended.
var errDraining = errors.New("the agent is shutting down and its drain grace period ended")

// errCanceled is the cause of jobs canceled by the control plane.
var errCanceled = errors.New("canceled by the control plane")

// runner runs jobs with bounded concurrency, each under its deadline.
type runner struct {
	limit    int
	handlers map[protocol.JobKind]handler
	check    func(protocol.JobKind) *protocol.Error
	deliver  func(protocol.Result)
	log      *zap.Logger
	base     context.Context // the agent's hard lifetime
	skew     atomic.Int64    // control plane clock minus ours, in ns
	// sessionID is the current (or last) session's id, for the job lines.
	sessionID atomic.Value // string
	// onDone, when set, sees each job's outcome (metrics).
	onDone func(kind protocol.JobKind, outcome string, code protocol.ErrorCode, d time.Duration)

	// afterDeliver, when set (by tests), runs between a result's delivery
	// and the release of its slot.
	afterDeliver func()

	mu        sync.Mutex // guards the fields below
	running   map[string]context.CancelCauseFunc
	recent    map[string]bool // finished job ids, to refuse a second run
	recentLog []string        // recent in order, bounded
	draining  bool
	idle      chan struct{} // closed when running becomes empty; nil while empty
	wg        sync.WaitGroup
}

const recentJobs = 4096

func newRunner(base context.Context, limit int, handlers map[protocol.JobKind]handler,
	check func(protocol.JobKind) *protocol.Error, deliver func(protocol.Result), log *zap.Logger) *runner {
	return &runner{
		limit: limit, handlers: handlers, check: check, deliver: deliver, log: log, base: base,
		running: make(map[string]context.CancelCauseFunc), recent: make(map[string]bool),
	}
}

// submit takes a job or says why not. A job delivered again while it runs
// is accepted again and still runs once. When start is not nil the job is
// registered as running and the caller calls start once it has queued the
// reply, so that the job's result cannot overtake its accepted.
func (r *runner) submit(j *protocol.Job) (reply *protocol.Message, start func()) {
	accepted := &protocol.Message{Type: protocol.TypeAccepted, Accepted: &protocol.Accepted{JobID: j.JobID, Attempt: j.Attempt}}
	reject := func(e *protocol.Error) *protocol.Message {
		r.log.Info("job rejected", zap.String("job_id", j.JobID), zap.String("kind", string(j.Kind)), zap.String("error_code", string(e.Code)))
		return &protocol.Message{Type: protocol.TypeRejected, Rejected: &protocol.Rejected{JobID: j.JobID, Attempt: j.Attempt, Error: *e}}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[j.JobID]; ok {
		return accepted, nil // delivered twice: it runs once
	}
	if r.recent[j.JobID] {
		r.log.Info("job delivered again after it finished; not running it twice", zap.String("job_id", j.JobID))
		return nil, nil
	}
	if r.draining {
		return reject(protocol.Errorf(protocol.CodeAgentBusy, "the agent is shutting down")), nil
	}
	if e := r.check(j.Kind); e != nil {
		return reject(e), nil
	}
	h := r.handlers[j.Kind]
	if h == nil {
		return reject(protocol.Errorf(protocol.CodeKindNotAllowed, "this agent build does not run %s jobs; upgrade the agent", j.Kind)), nil
	}
	if len(r.running) >= r.limit {
		return reject(protocol.Errorf(protocol.CodeAgentBusy, "the agent is running %d jobs, its concurrency", r.limit)), nil
	}
	ctx, cancel := context.WithCancelCause(r.base)
	// The deadline is on the control plane's clock; read it on ours.
	ctx, cancelDeadline := context.WithDeadline(ctx, j.Deadline.Add(-time.Duration(r.skew.Load())))
	r.running[j.JobID] = cancel
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	r.wg.Add(1)
	return accepted, func() {
		go func() {
			defer r.wg.Done()
			defer cancelDeadline()
			r.run(ctx, j, h)
		}()
	}
}

func (r *runner) run(ctx context.Context, j *protocol.Job, h handler) {
	log := r.log.With(zap.String("job_id", j.JobID), zap.String("kind", string(j.Kind)), zap.Int("attempt", j.Attempt))
	if sid, _ := r.sessionID.Load().(string); sid != "" {
		log = log.With(zap.String("session_id", sid))
	}
	if j.Params.Secret != nil {
		log = log.With(zap.String("backend", j.Params.Secret.Backend), zap.Stringer("secret_ref", j.Params.Secret))
	}
	if h := githubHost(j.Params.GitHubURL); h != "" {
		log = log.With(zap.String("github_host", h))
	}
	start := time.Now()
	if ce := log.Check(zap.DebugLevel, "job started"); ce != nil {
		dl, _ := ctx.Deadline()
		ce.Write(zap.Time("deadline", dl), zap.Int("running", r.count()))
	}
	out, err := h(ctx, log, j)
	res := protocol.Result{JobID: j.JobID, Attempt: j.Attempt, StartedAt: start.UTC(), FinishedAt: time.Now().UTC()}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // finished only because it was stopped
	}
	if err == nil {
		res.OK, res.Output = true, out
	} else {
		res.Error = jobError(ctx, err, log)
	}
	took := time.Since(start)
	outcome, code := jobOutcome(&res)
	fields := []zap.Field{zap.Bool("ok", res.OK), zap.String("outcome", outcome), zap.Int64("duration_ms", took.Milliseconds())}
	if res.Error != nil {
		fields = append(fields, zap.String("error_code", string(res.Error.Code)), zap.String("error", res.Error.Message))
	}
	log.Log(jobDoneLevel(code), "job done", fields...)
	if r.onDone != nil {
		r.onDone(j.Kind, outcome, code, took)
	}

	// Hold (and queue) the result and free the job's slot under one lock:
	// a hello built meanwhile lists the job one way or the other, and a job
	// the control plane sends on reading this result (it frees the slot
	// there) finds the slot free here, not an agent_busy that would pause
	// the agent's queue.
	r.mu.Lock()
	r.deliver(res)
	if r.afterDeliver != nil {
		r.afterDeliver()
	}
	if cancel := r.running[j.JobID]; cancel != nil {
		cancel(nil)
	}
	delete(r.running, j.JobID)
	r.remember(j.JobID)
	if len(r.running) == 0 && r.idle != nil {
		close(r.idle)
		r.idle = nil
	}
	r.mu.Unlock()
}

// remember keeps a bounded set of finished job ids.
func (r *runner) remember(id string) {
	r.recent[id] = true
	r.recentLog = append(r.recentLog, id)
	if len(r.recentLog) > recentJobs {
		delete(r.recent, r.recentLog[0])
		r.recentLog = r.recentLog[1:]
	}
}

// jobError turns a handler's error into the protocol's.
func jobError(ctx context.Context, err error, log *zap.Logger) *protocol.Error {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return protocol.Errorf(protocol.CodeTimeout, "the job did not finish by its deadline")
	case errors.Is(err, context.Canceled):
		cause := context.Cause(ctx)
		if cause == nil || errors.Is(cause, context.Canceled) {
			cause = errCanceled
		}
		return protocol.Errorf(protocol.CodeCanceled, "%v", cause)
	}
	log.Error("job failed", zap.Error(err))
	return protocol.Errorf(protocol.CodeInternal, "the job failed inside the agent; see the agent's log for this job id")
}

// cancel stops a running job.
func (r *runner) cancel(id string, cause error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.running[id]
	if c != nil {
		c(cause)
	}
	return c != nil
}

// ids lists the running jobs.
func (r *runner) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.running))
	for id := range r.running {
		out = append(out, id)
	}
	return out
}

func (r *runner) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}

// drain stops taking jobs, waits up to grace for the running ones, then
// cancels the rest and waits for them to report.
func (r *runner) drain(grace time.Duration) {
	r.mu.Lock()
	r.draining = true
	idle := r.idle
	r.mu.Unlock()
	if idle != nil {
		t := time.NewTimer(grace)
		select {
		case <-idle:
		case <-t.C:
			r.log.Warn("drain grace ended; canceling running jobs", zap.Duration("grace", grace), zap.Int("running", r.count()))
			r.mu.Lock()
			for _, c := range r.running {
				c(errDraining)
			}
			r.mu.Unlock()
		}
		t.Stop()
	}
	r.wg.Wait()
}

// stop cancels every job and waits for them.
func (r *runner) stop() {
	r.mu.Lock()
	r.draining = true
	for _, c := range r.running {
		c(errDraining)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// outbox keeps results until the control plane acknowledges them.
type outbox struct {
	mu     sync.Mutex // guards the fields below
	held   map[string]protocol.Result
	sentAt map[string]time.Time // when each held result was last handed to a session
	order  []string
	empty  chan struct{} // closed when held becomes empty; nil while empty
}

// maxHeld bounds the outbox; past it the oldest result is dropped (its job
// then follows the control plane's re-dispatch rule).
const maxHeld = 10000

func newOutbox() *outbox {
	return &outbox{held: make(map[string]protocol.Result), sentAt: make(map[string]time.Time)}
}

// put holds r, counted as sent now (the caller sends it if connected; a
// new session sends every held result).
func (o *outbox) put(r protocol.Result) (dropped string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.held[r.JobID]; !ok {
		o.order = append(o.order, r.JobID)
	}
	o.held[r.JobID] = r
	o.sentAt[r.JobID] = time.Now()
	if o.empty == nil {
		o.empty = make(chan struct{})
	}
	if len(o.order) > maxHeld {
		dropped = o.order[0]
		o.order = o.order[1:]
		delete(o.held, dropped)
		delete(o.sentAt, dropped)
	}
	return dropped
}

func (o *outbox) ack(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.held[id]; !ok {
		return
	}
	delete(o.held, id)
	delete(o.sentAt, id)
	for i, v := range o.order {
		if v == id {
			o.order = append(o.order[:i], o.order[i+1:]...)
			break
		}
	}
	if len(o.held) == 0 && o.empty != nil {
		close(o.empty)
		o.empty = nil
	}
}

func (o *outbox) get(id string) (protocol.Result, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.held[id]
	return r, ok
}

// due returns, oldest first and at most limit of them (0: no limit), the
// held results last sent before now-after, and counts them as sent now.
// due(now, 0, 0) is every held result: what a new session sends.
func (o *outbox) due(now time.Time, after time.Duration, limit int) []protocol.Result {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []protocol.Result
	for _, id := range o.order {
		if limit > 0 && len(out) == limit {
			break
		}
		if now.Sub(o.sentAt[id]) < after {
			continue
		}
		o.sentAt[id] = now
		out = append(out, o.held[id])
	}
	return out
}

func (o *outbox) ids() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.order...)
}

// waitEmpty waits until every result is acknowledged or ctx ends.
func (o *outbox) waitEmpty(ctx context.Context) bool {
	o.mu.Lock()
	empty := o.empty
	o.mu.Unlock()
	if empty == nil {
		return true
	}
	select {
	case <-empty:
		return true
	case <-ctx.Done():
		return false
	}
}
