package protocol

import (
	"fmt"
	"time"
)

// JobState is where a job is in its life. Every job ends in exactly one
// terminal state.
type JobState string

// Job states.
const (
	JobQueued     JobState = "queued"     // stored, waiting for its agent
	JobDispatched JobState = "dispatched" // sent to the agent, not yet accepted
	JobRunning    JobState = "running"    // accepted by the agent
	JobSucceeded  JobState = "succeeded"  // terminal: the agent's result is ok
	JobFailed     JobState = "failed"     // terminal: the job's error says why
	JobExpired    JobState = "expired"    // terminal: the deadline passed first
	JobCanceled   JobState = "canceled"   // terminal: canceled through the API
)

// Terminal reports whether s is a final state.
func (s JobState) Terminal() bool {
	switch s {
	case JobSucceeded, JobFailed, JobExpired, JobCanceled:
		return true
	}
	return false
}

// Valid reports whether s is one of the job states.
func (s JobState) Valid() bool {
	switch s {
	case JobQueued, JobDispatched, JobRunning, JobSucceeded, JobFailed, JobExpired, JobCanceled:
		return true
	}
	return false
}

// Job asks the agent to do one piece of work.
type Job struct {
	// JobID names the job everywhere: API, store, both sides' logs.
	JobID string `json:"job_id"`
	// Kind is what to do; Params says with what.
	Kind   JobKind `json:"kind"`
	Params Params  `json:"params"`
	// Deadline is when the job must be finished, on the control plane's
	// clock (the agent corrects for the skew it sees in welcome's
	// server_time); the agent cancels its work then and reports CodeTimeout.
	Deadline time.Time `json:"deadline"`
	// Attempt counts dispatches of this job, from 1.
	Attempt int `json:"attempt"`
}

// Validate checks a received job, including its params for its kind. A job
// of a kind the receiver does not know is still valid here: the agent
// answers it with a rejection, not a protocol error.
func (j *Job) Validate() error {
	if err := checkID("job_id", j.JobID, true); err != nil {
		return err
	}
	if err := checkID("kind", string(j.Kind), true); err != nil {
		return err
	}
	if j.Deadline.IsZero() {
		return fmt.Errorf("job %s has no deadline", j.JobID)
	}
	if j.Attempt < 1 {
		return fmt.Errorf("job %s attempt must be 1 or more", j.JobID)
	}
	if !j.Kind.Known() {
		return nil
	}
	if err := j.Params.Validate(j.Kind); err != nil {
		return fmt.Errorf("job %s: %w", j.JobID, err)
	}
	return nil
}

// Accepted says the agent started the job.
type Accepted struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
}

// Validate checks a received accepted.
func (a *Accepted) Validate() error { return checkID("job_id", a.JobID, true) }

// Rejected says the agent will not run the job, with a code such as
// CodeAgentBusy, CodeKindNotAllowed or CodeInvalidParams.
type Rejected struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
	Error   Error  `json:"error"`
}

// Validate checks a received rejected.
func (r *Rejected) Validate() error {
	if err := checkID("job_id", r.JobID, true); err != nil {
		return err
	}
	return r.Error.Validate()
}

// Result is the outcome of a job. The agent keeps it until the control plane
// acknowledges it, and sends it again after a reconnect; the control plane
// records the first one it gets for a job and acknowledges every copy.
type Result struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
	// OK is true when the job did its work; Output then holds what it found.
	// Otherwise Error says why not.
	OK     bool    `json:"ok"`
	Error  *Error  `json:"error,omitempty"`
	Output *Output `json:"output,omitempty"`
	// StartedAt and FinishedAt are the agent's clock.
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
}

// Validate checks a received result.
func (r *Result) Validate() error {
	if err := checkID("job_id", r.JobID, true); err != nil {
		return err
	}
	if r.OK == (r.Error != nil) {
		return fmt.Errorf("result of job %s must have either ok or an error", r.JobID)
	}
	if r.Error != nil {
		if err := r.Error.Validate(); err != nil {
			return err
		}
	}
	if r.Output != nil {
		if err := r.Output.Validate(); err != nil {
			return fmt.Errorf("result of job %s: %w", r.JobID, err)
		}
	}
	return nil
}

// ResultAck tells the agent that a result is stored and may be dropped.
type ResultAck struct {
	JobID string `json:"job_id"`
}

// Validate checks a received result_ack.
func (a *ResultAck) Validate() error { return checkID("job_id", a.JobID, true) }

// Cancel asks the agent to stop a job's work. The agent answers with the
// job's result (CodeCanceled, or the outcome if it finished first).
type Cancel struct {
	JobID  string `json:"job_id"`
	Reason string `json:"reason,omitempty"`
}

// Validate checks a received cancel.
func (c *Cancel) Validate() error {
	if err := checkID("job_id", c.JobID, true); err != nil {
		return err
	}
	return checkLen("reason", c.Reason, MaxMessageText)
}
