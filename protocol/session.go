package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"
)

// NonceSize is the length of the challenge nonce, in bytes.
const NonceSize = 32

// Challenge is the control plane's first frame on a new connection: a fresh
// nonce that the agent must sign in its hello.
type Challenge struct {
	// Nonce is NonceSize random bytes, base64url without padding.
	Nonce string `json:"nonce"`
	// ServerTime is the control plane's clock, so that an agent can log a
	// large skew.
	ServerTime time.Time `json:"server_time"`
}

// Validate checks a received challenge.
func (c *Challenge) Validate() error {
	n, err := base64.RawURLEncoding.DecodeString(c.Nonce)
	if err != nil || len(n) != NonceSize {
		return fmt.Errorf("challenge nonce must be %d bytes in base64url", NonceSize)
	}
	return nil
}

// BackendInfo describes one secret backend that the agent has, with its
// non-secret settings (AWS region, Azure cloud), so that the control plane
// can show and check them.
type BackendInfo struct {
	// Name is the backend: "aws", "azure" or "file".
	Name string `json:"name"`
	// Settings holds non-secret settings such as "region" or "cloud".
	Settings map[string]string `json:"settings,omitempty"`
}

// Hello is the agent's answer to the challenge: who it is, the proof that it
// holds its key, and what it can do.
type Hello struct {
	// AgentID is the id the agent got at enrollment.
	AgentID string `json:"agent_id"`
	// Signature is the Ed25519 signature of SigningPayload(AgentID, nonce,
	// ProtocolVersion), base64url without padding.
	Signature string `json:"signature"`
	// ProtocolVersion is the agent's Version.
	ProtocolVersion int `json:"protocol_version"`
	// AgentVersion is the agent's build version.
	AgentVersion string `json:"agent_version"`
	// Hostname and OS describe the agent's machine.
	Hostname string `json:"hostname"`
	OS       string `json:"os"`
	// Backends lists the secret backends the agent has.
	Backends []BackendInfo `json:"backends,omitempty"`
	// Kinds lists the job kinds the agent accepts.
	Kinds []JobKind `json:"kinds"`
	// Concurrency is how many jobs the agent runs at once.
	Concurrency int `json:"concurrency"`
	// Running lists the ids of jobs the agent is still running.
	Running []string `json:"running,omitempty"`
	// Held lists the ids of jobs whose results the agent holds, unacknowledged;
	// it sends them again right after welcome.
	Held []string `json:"held,omitempty"`
	// Probe marks a session that only checks that the agent can connect
	// and authenticate (`agent doctor`): the control plane answers welcome
	// and then closes the session normally, without taking the place of
	// the agent's live session and without dispatching to it. A control
	// plane that predates the field treats it as a normal session.
	Probe bool `json:"probe,omitempty"`
}

// MaxConcurrency bounds the concurrency an agent may announce.
const MaxConcurrency = 1024

// Validate checks a received hello.
func (h *Hello) Validate() error {
	if err := checkID("agent_id", h.AgentID, true); err != nil {
		return err
	}
	sig, err := base64.RawURLEncoding.DecodeString(h.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("signature must be an Ed25519 signature in base64url")
	}
	if h.ProtocolVersion < 1 {
		return fmt.Errorf("protocol_version must be 1 or more")
	}
	if h.Concurrency < 1 || h.Concurrency > MaxConcurrency {
		return fmt.Errorf("concurrency is %d; it must be from 1 to %d", h.Concurrency, MaxConcurrency)
	}
	for _, f := range []struct{ name, v string }{{"agent_version", h.AgentVersion}, {"hostname", h.Hostname}, {"os", h.OS}} {
		if err := checkLen(f.name, f.v, 256); err != nil {
			return err
		}
	}
	for name, l := range map[string]int{"backends": len(h.Backends), "kinds": len(h.Kinds), "running": len(h.Running), "held": len(h.Held)} {
		if l > MaxListLength {
			return fmt.Errorf("%s has %d entries; at most %d", name, l, MaxListLength)
		}
	}
	for _, b := range h.Backends {
		if err := checkID("backend name", b.Name, true); err != nil {
			return err
		}
		if len(b.Settings) > 32 {
			return fmt.Errorf("backend %s has %d settings; at most 32", b.Name, len(b.Settings))
		}
		for k, v := range b.Settings {
			if err := checkLen("backend setting "+k, k+v, 1024); err != nil {
				return err
			}
		}
	}
	for _, k := range h.Kinds {
		if err := checkID("kind", string(k), true); err != nil {
			return err
		}
	}
	for _, ids := range [][]string{h.Running, h.Held} {
		for _, id := range ids {
			if err := checkID("job id", id, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// SigningPayload is what the agent signs to prove that it holds its key on
// this connection: a domain-separation label, the agent id, the nonce of
// this connection's challenge, and the protocol version. The nonce is fresh
// per connection, so a captured hello cannot be replayed.
func SigningPayload(agentID, nonce string, version int) []byte {
	return []byte("orchestrator-agent-session\n" + agentID + "\n" + nonce + "\n" + strconv.Itoa(version))
}

// Welcome opens the session.
type Welcome struct {
	// SessionID names this session in both sides' logs.
	SessionID string `json:"session_id"`
	// HeartbeatInterval is how often the agent sends a heartbeat. The
	// control plane marks the agent offline when nothing arrives for
	// three intervals, and pings the agent at this interval.
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	// ServerTime is the control plane's clock.
	ServerTime time.Time `json:"server_time"`
}

// Validate checks a received welcome.
func (w *Welcome) Validate() error {
	if err := checkID("session_id", w.SessionID, true); err != nil {
		return err
	}
	if d := w.HeartbeatInterval.D(); d < 100*time.Millisecond || d > 10*time.Minute {
		return fmt.Errorf("heartbeat_interval %s is outside 100ms..10m", d)
	}
	return nil
}

// Heartbeat says the agent is alive, with its load.
type Heartbeat struct {
	// Running is how many jobs the agent is running.
	Running int `json:"running"`
}

// Validate checks a received heartbeat.
func (h *Heartbeat) Validate() error {
	if h.Running < 0 || h.Running > MaxListLength {
		return fmt.Errorf("running is %d; it must be from 0 to %d", h.Running, MaxListLength)
	}
	return nil
}

// Draining says the agent is shutting down: it takes no new jobs, finishes
// or cancels the running ones within Grace, sends their results, and closes.
type Draining struct {
	// Grace is how long the agent waits for running jobs.
	Grace Duration `json:"grace"`
	// Reason is why, for the logs ("SIGTERM").
	Reason string `json:"reason,omitempty"`
}

// Validate checks a received draining.
func (d *Draining) Validate() error {
	if d.Grace.D() < 0 {
		return fmt.Errorf("grace must not be negative")
	}
	return checkLen("reason", d.Reason, MaxMessageText)
}

// Websocket close codes the control plane uses to end a session, with the
// agent's reaction. Codes 4000–4999 are for applications (RFC 6455 §7.4.2).
const (
	// CloseRevoked: the agent was revoked or its key is not accepted. The
	// agent stops retrying and exits with an error.
	CloseRevoked = 4001
	// CloseIncompatible: the protocol versions do not match. The agent
	// says which versions each side speaks and stops.
	CloseIncompatible = 4002
	// CloseAuthFailed: the hello's signature did not verify. The agent
	// stops: its key does not match the enrolled one (re-enroll).
	CloseAuthFailed = 4003
	// CloseSuperseded: a newer session of the same agent replaced this one.
	// The agent retries with backoff.
	CloseSuperseded = 4004
	// CloseProtocolError: the peer broke the protocol (no hello in time,
	// a body that cannot be read during the handshake). Retry with backoff.
	CloseProtocolError = 4005
	// CloseShuttingDown: the control plane is stopping. Retry with backoff.
	CloseShuttingDown = 4006
)

// Duration is a time.Duration that travels as a string such as "30s".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText writes the duration in time.Duration's string form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a duration such as "1m30s".
func (d *Duration) UnmarshalText(b []byte) error {
	if len(b) > 64 {
		return fmt.Errorf("duration too long")
	}
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
