package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestrator/orchestrator/protocol"
)

// ProbeResult is what a probe session learned.
type ProbeResult struct {
	// SessionID is the probe session's id.
	SessionID string
	// ServerTime is the control plane's clock in welcome, and Skew how far
	// it is ahead of this machine's (within the handshake's round trip).
	ServerTime time.Time
	Skew       time.Duration
}

// Probe opens one session the way the agent does (the dialer's proxy,
// TLS and pin; the subprotocol), proves the identity (the challenge, a
// signed hello marked probe, welcome) and closes the session normally. It
// is `agent doctor`'s check of the handshake: the control plane does not
// let a probe take the place of the agent's live session. o is as for
// New; ctx bounds the whole probe.
func Probe(ctx context.Context, o Options) (ProbeResult, error) {
	a, err := New(o)
	if err != nil {
		return ProbeResult{}, err
	}
	defer a.github.Close()
	defer a.abort()
	a.probe = true
	conn, resp, err := a.dialer.DialContext(ctx, a.url, nil)
	if err != nil {
		if resp != nil {
			return ProbeResult{}, &HandshakeError{Status: resp.StatusCode, Err: err}
		}
		return ProbeResult{}, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	conn.SetReadLimit(protocol.MaxFrameSize)
	welcome, err := a.handshake(conn)
	if err != nil {
		return ProbeResult{}, err
	}
	res := ProbeResult{SessionID: welcome.SessionID, ServerTime: welcome.ServerTime, Skew: time.Until(welcome.ServerTime)}
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "probe done"), time.Now().Add(time.Second))
	// Read until the control plane's close, briefly, so that it sees a
	// clean close rather than a reset.
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, _, err := conn.NextReader(); err != nil {
			break
		}
	}
	return res, nil
}

// HandshakeError: the control plane answered the websocket upgrade with
// an HTTP status instead of switching protocols.
type HandshakeError struct {
	Status int
	Err    error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("the control plane answered the websocket upgrade with HTTP %d: %v", e.Status, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }
