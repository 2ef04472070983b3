package agent

import (
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/protocol"
)

// Observer sees what the agent does: for metrics, and for the service
// manager's readiness. The agent calls it synchronously from its own
// goroutines, so every method must return at once. Embed NopObserver to
// implement only some methods.
type Observer interface {
	// Connected: a session was established (welcome received).
	Connected(sessionID string)
	// Disconnected: an established session ended; err says why.
	Disconnected(err error)
	// Reconnecting: a dial or a session failed and the agent waits delay
	// before the next dial.
	Reconnecting(delay time.Duration, err error)
	// JobDone: a job ended on this agent. outcome is "succeeded",
	// "failed" or "canceled"; code is the error code, "" on success.
	JobDone(kind protocol.JobKind, outcome string, code protocol.ErrorCode, d time.Duration)
	// SecretCall: a secret backend answered one read; code is "ok" or the
	// error code.
	SecretCall(backend, code string, d time.Duration)
	// GitHubCall: one HTTP call to GitHub ended; status is 0 when no
	// answer came (err says why).
	GitHubCall(status int, err error, d time.Duration)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) Connected(string)                                                    {}
func (NopObserver) Disconnected(error)                                                  {}
func (NopObserver) Reconnecting(time.Duration, error)                                   {}
func (NopObserver) JobDone(protocol.JobKind, string, protocol.ErrorCode, time.Duration) {}
func (NopObserver) SecretCall(string, string, time.Duration)                            {}
func (NopObserver) GitHubCall(int, error, time.Duration)                                {}

var _ Observer = NopObserver{}

// Job outcomes, as Observer.JobDone and the "job done" log line name them.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeCanceled  = "canceled"
)

// jobOutcome names how a job ended.
func jobOutcome(res *protocol.Result) (string, protocol.ErrorCode) {
	switch {
	case res.OK:
		return OutcomeSucceeded, ""
	case res.Error == nil:
		return OutcomeFailed, protocol.CodeInternal
	case res.Error.Code == protocol.CodeCanceled:
		return OutcomeCanceled, res.Error.Code
	}
	return OutcomeFailed, res.Error.Code
}

// jobDoneLevel is the level of a job's "job done" line: info, or warn when
// the code says something the agent depends on is degraded (a secret
// manager or GitHub unavailable or throttling, a job out of time), which an
// operator watching warnings wants to see.
func jobDoneLevel(code protocol.ErrorCode) zapcore.Level {
	switch code {
	case protocol.CodeSecretBackendUnavailable, protocol.CodeGitHubUnreachable, protocol.CodeGitHubRateLimited, protocol.CodeTimeout:
		return zapcore.WarnLevel
	}
	return zapcore.InfoLevel
}

// MultiObserver tells every one of obs, in order.
func MultiObserver(obs ...Observer) Observer { return multiObserver(obs) }

type multiObserver []Observer

func (m multiObserver) Connected(id string) {
	for _, o := range m {
		o.Connected(id)
	}
}

func (m multiObserver) Disconnected(err error) {
	for _, o := range m {
		o.Disconnected(err)
	}
}

func (m multiObserver) Reconnecting(d time.Duration, err error) {
	for _, o := range m {
		o.Reconnecting(d, err)
	}
}

func (m multiObserver) JobDone(kind protocol.JobKind, outcome string, code protocol.ErrorCode, d time.Duration) {
	for _, o := range m {
		o.JobDone(kind, outcome, code, d)
	}
}

func (m multiObserver) SecretCall(backend, code string, d time.Duration) {
	for _, o := range m {
		o.SecretCall(backend, code, d)
	}
}

func (m multiObserver) GitHubCall(status int, err error, d time.Duration) {
	for _, o := range m {
		o.GitHubCall(status, err, d)
	}
}
