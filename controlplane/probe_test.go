package controlplane

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestrator/orchestrator/protocol"
)

// TestProbeSessionLeavesTheLiveOne: `agent doctor`'s probe (a hello marked
// probe) is authenticated and welcomed, then closed normally; the agent's
// live session stays attached, gets no close, and keeps its jobs.
func TestProbeSessionLeavesTheLiveOne(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("probed")
	live := c.connect(k, nil)

	conn := c.dial(protocol.Subprotocol)
	nonce := readChallenge(t, conn)
	writeMsg(t, conn, helloFor(k, nonce, func(h *protocol.Hello) { h.Probe = true }))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, frame, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("no welcome for the probe: %v", err)
	}
	m, err := protocol.Decode(frame)
	if err != nil || m.Type != protocol.TypeWelcome || m.Welcome.SessionID == live.welcome.SessionID {
		t.Fatalf("probe got %s (%v), want its own welcome", frame, err)
	}
	if code, reason := readClose(t, conn, 5*time.Second); code != websocket.CloseNormalClosure || !strings.Contains(reason, "probe") {
		t.Errorf("probe closed with %d %q, want a normal close", code, reason)
	}

	if l := c.cur.Load().disp.live(k.id); !l.online || l.sessionID != live.welcome.SessionID {
		t.Errorf("after the probe the live session is %+v, want %s still attached", l, live.welcome.SessionID)
	}
	live.expectNothing(300 * time.Millisecond)
	// The live session still gets jobs.
	var j protocol.JobView
	c.api("POST", "/api/v1/jobs", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials,
		Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "file", SecretName: "ci/github", PasswordKey: "token"}}}, 201, &j)
	if got := live.expectJob(); got.JobID != j.ID {
		t.Errorf("the live session got job %s, want %s", got.JobID, j.ID)
	}
}
