package controlplane

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestrator/orchestrator/protocol"
)

func TestHandshakeRefusals(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("hs-1")
	pending := c.register("hs-pending")
	revoked := c.newAgent("hs-revoked")
	c.api("DELETE", "/api/v1/agents/"+revoked.id, nil, http.StatusOK, nil)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)

	tests := []struct {
		name   string
		script func(t *testing.T, conn *websocket.Conn, nonce string)
		code   int
		reason string
	}{
		{
			name: "heartbeat before hello",
			script: func(t *testing.T, conn *websocket.Conn, _ string) {
				writeMsg(t, conn, &protocol.Message{Type: protocol.TypeHeartbeat, Heartbeat: &protocol.Heartbeat{}})
			},
			code: protocol.CloseProtocolError, reason: "hello",
		},
		{
			name: "result before hello",
			script: func(t *testing.T, conn *websocket.Conn, _ string) {
				writeMsg(t, conn, okResult("job_x", 1, "fp"))
			},
			code: protocol.CloseProtocolError, reason: "hello",
		},
		{
			name: "malformed hello",
			script: func(t *testing.T, conn *websocket.Conn, _ string) {
				writeRaw(t, conn, []byte(`{"type":"hello","hello":`))
			},
			code: protocol.CloseProtocolError, reason: "could not be read",
		},
		{
			name: "hello without a signature",
			script: func(t *testing.T, conn *websocket.Conn, _ string) {
				writeRaw(t, conn, []byte(`{"type":"hello","hello":{"agent_id":"`+k.id+`","protocol_version":1,"concurrency":1,"kinds":[]}}`))
			},
			code: protocol.CloseProtocolError, reason: "signature",
		},
		{
			name:   "unknown type",
			script: func(t *testing.T, conn *websocket.Conn, _ string) { writeRaw(t, conn, []byte(`{"type":"howdy"}`)) },
			code:   protocol.CloseProtocolError,
		},
		{
			name: "protocol version 2",
			script: func(t *testing.T, conn *websocket.Conn, nonce string) {
				writeMsg(t, conn, helloFor(k, nonce, func(h *protocol.Hello) { h.ProtocolVersion = 2 }))
			},
			code: protocol.CloseIncompatible, reason: "version 1",
		},
		{
			name: "unknown agent id",
			script: func(t *testing.T, conn *websocket.Conn, nonce string) {
				writeMsg(t, conn, helloFor(agentKey{id: "agt_unknown", key: k.key}, nonce, nil))
			},
			code: protocol.CloseAuthFailed, reason: "enroll",
		},
		{
			name: "signed by another key",
			script: func(t *testing.T, conn *websocket.Conn, nonce string) {
				writeMsg(t, conn, helloFor(agentKey{id: k.id, key: otherKey}, nonce, nil))
			},
			code: protocol.CloseAuthFailed, reason: "signature",
		},
		{
			name: "signature of another nonce (replay)",
			script: func(t *testing.T, conn *websocket.Conn, _ string) {
				old := sign(k.key, k.id, "bm9uY2Utb2YtYW5vdGhlci1jb25uZWN0aW9uLTAwMDAwMA", protocol.Version)
				writeMsg(t, conn, helloFor(k, "", func(h *protocol.Hello) { h.Signature = old }))
			},
			code: protocol.CloseAuthFailed, reason: "signature",
		},
		{
			name: "signature for another agent id",
			script: func(t *testing.T, conn *websocket.Conn, nonce string) {
				sig := sign(k.key, revoked.id, nonce, protocol.Version)
				writeMsg(t, conn, helloFor(k, nonce, func(h *protocol.Hello) { h.Signature = sig }))
			},
			code: protocol.CloseAuthFailed, reason: "signature",
		},
		{
			name: "registered, never enrolled",
			script: func(t *testing.T, conn *websocket.Conn, nonce string) {
				writeMsg(t, conn, helloFor(agentKey{id: pending.Agent.ID, key: k.key}, nonce, nil))
			},
			code: protocol.CloseAuthFailed, reason: "enrolled",
		},
		{
			name: "revoked agent",
			script: func(t *testing.T, conn *websocket.Conn, nonce string) {
				writeMsg(t, conn, helloFor(revoked, nonce, nil))
			},
			code: protocol.CloseRevoked, reason: "revoked",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := c.with(t)
			conn := c.dial(protocol.Subprotocol)
			if conn.Subprotocol() != protocol.Subprotocol {
				t.Fatalf("subprotocol %q, want %q", conn.Subprotocol(), protocol.Subprotocol)
			}
			tt.script(t, conn, readChallenge(t, conn))
			code, reason := readClose(t, conn, 5*time.Second)
			if code != tt.code {
				t.Errorf("close code %d (%q), want %d", code, reason, tt.code)
			}
			if !strings.Contains(reason, tt.reason) {
				t.Errorf("close reason %q, want it to mention %q", reason, tt.reason)
			}
		})
	}
	// None of them was ever online.
	for _, id := range []string{k.id, pending.Agent.ID} {
		if l := c.srv.disp.live(id); l.online {
			t.Errorf("agent %s is online after refused handshakes", id)
		}
	}
}

func TestHandshakeSubprotocol(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	for name, offered := range map[string][]string{
		"none":       nil,
		"version 2":  {"orchestrator.v2"},
		"other":      {"chat", "mqtt"},
		"misspelled": {"Orchestrator.v1"},
	} {
		t.Run(name, func(t *testing.T) {
			c := c.with(t)
			conn := c.dial(offered...)
			code, reason := readClose(t, conn, 5*time.Second)
			if code != protocol.CloseIncompatible || !strings.Contains(reason, protocol.Subprotocol) {
				t.Errorf("close %d %q, want CloseIncompatible naming %s", code, reason, protocol.Subprotocol)
			}
		})
	}
	// A client that offers v1 among others gets v1.
	conn := c.dial("orchestrator.v2", protocol.Subprotocol)
	if conn.Subprotocol() != protocol.Subprotocol {
		t.Errorf("subprotocol %q, want %q", conn.Subprotocol(), protocol.Subprotocol)
	}
	readChallenge(t, conn)
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	c := newCP(t, withHandshakeWait(200*time.Millisecond))
	conn := c.dial(protocol.Subprotocol)
	readChallenge(t, conn)
	start := time.Now()
	code, reason := readClose(t, conn, 5*time.Second)
	if code != protocol.CloseProtocolError || !strings.Contains(reason, "no hello within 200ms") {
		t.Errorf("close %d %q, want CloseProtocolError \"no hello within 200ms\"", code, reason)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("closed after %s, want about 200ms", el)
	}
}

func TestSessionSuperseded(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("sup-1")
	first := c.connect(k, nil)
	second := c.connect(k, nil)
	if code := first.closeCode(5 * time.Second); code != protocol.CloseSuperseded {
		t.Errorf("the first session closed with %d, want CloseSuperseded (%d)", code, protocol.CloseSuperseded)
	}
	v := c.agentView(k.id)
	if v.Status != protocol.AgentOnline || v.SessionID != second.welcome.SessionID {
		t.Errorf("agent %s session %s, want online on the second session %s", v.Status, v.SessionID, second.welcome.SessionID)
	}
	// Jobs go to the second session.
	j := c.submit(k.id, time.Minute)
	if got := second.expectJob(); got.JobID != j.ID {
		t.Errorf("second session got job %s, want %s", got.JobID, j.ID)
	}
	second.succeed(j.ID, 1, "hmac-sha256:aaaaaaaaaaaaaaaaaaaaaaaa")
	second.expectAck(j.ID)
}

func TestSessionBadFrames(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("bad-1")
	a := c.connect(k, nil)
	tests := []struct {
		name  string
		frame string
		code  protocol.ErrorCode
		ref   protocol.Type
		refID string
	}{
		{"malformed JSON", `{"type":"heartbeat",`, protocol.CodeMalformedMessage, "", ""},
		{"not an object", `[1,2,3]`, protocol.CodeMalformedMessage, "", ""},
		{"unknown type", `{"type":"gossip","id":"m-1"}`, protocol.CodeUnknownType, "gossip", "m-1"},
		{"missing body", `{"type":"result","id":"m-2"}`, protocol.CodeMalformedMessage, protocol.TypeResult, "m-2"},
		{"invalid body", `{"type":"result","id":"m-3","result":{"job_id":"j","ok":true,"error":{"code":"timeout","message":"x"}}}`, protocol.CodeMalformedMessage, protocol.TypeResult, "m-3"},
		{"too deep", `{"type":"heartbeat","heartbeat":` + strings.Repeat(`{"a":`, 20) + `1` + strings.Repeat(`}`, 20) + `}`, protocol.CodeMalformedMessage, "", ""},
		{"a type agents do not send", `{"type":"cancel","id":"m-4","cancel":{"job_id":"job_x"}}`, protocol.CodeUnknownType, protocol.TypeCancel, "m-4"},
		{"welcome from an agent", `{"type":"welcome","id":"m-5","welcome":{"session_id":"s","heartbeat_interval":"1s","server_time":"2026-01-01T00:00:00Z"}}`, protocol.CodeUnknownType, protocol.TypeWelcome, "m-5"},
	}
	for _, tt := range tests {
		writeRaw(t, a.conn, []byte(tt.frame))
		m := a.expect(protocol.TypeError)
		if m.Error.Code != tt.code || m.Error.RefType != tt.ref || m.Error.RefID != tt.refID || m.Error.Message == "" {
			t.Errorf("%s: error reply %+v, want code %s ref_type %q ref_id %q with a message", tt.name, m.Error, tt.code, tt.ref, tt.refID)
		}
	}
	// An error message from the agent is logged, not answered.
	a.send(&protocol.Message{Type: protocol.TypeError, Error: &protocol.ErrorBody{Error: *protocol.Errorf(protocol.CodeUnknownType, "what is that"), RefType: "job"}})
	a.send(&protocol.Message{Type: protocol.TypeHeartbeat, Heartbeat: &protocol.Heartbeat{Running: 0}})
	a.expectNothing(200 * time.Millisecond)
	// The session is still up and works.
	j := c.submit(k.id, time.Minute)
	got := a.expectJob()
	a.succeed(got.JobID, got.Attempt, "hmac-sha256:bbbbbbbbbbbbbbbbbbbbbbbb")
	a.expectAck(j.ID)
	if v := c.agentView(k.id); v.SessionID != a.welcome.SessionID {
		t.Errorf("session %q, want the same session %q after bad frames", v.SessionID, a.welcome.SessionID)
	}
}

func TestSessionFrameTooLarge(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("big-1")
	a := c.connect(k, nil)
	_ = a.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	big := `{"type":"heartbeat","heartbeat":{"running":0},"pad":"` + strings.Repeat("x", protocol.MaxFrameSize) + `"}`
	_ = a.conn.WriteMessage(websocket.TextMessage, []byte(big)) // the server may close while we write
	if code := a.closeCode(5 * time.Second); code != websocket.CloseMessageTooBig {
		t.Errorf("close %d, want %d (message too big)", code, websocket.CloseMessageTooBig)
	}
	c.waitOffline(k.id)
}

// An agent that neither answers pings nor sends heartbeats is dropped after
// three heartbeat intervals and shown offline.
func TestSessionHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	const hb = 100 * time.Millisecond
	c := newCP(t, withOptions(func(o *Options) { o.HeartbeatInterval = hb }))
	k := c.newAgent("silent-1")

	// A live agent (pongs answered by its reader) stays online well past
	// three intervals.
	live := c.connect(k, nil)
	if live.welcome.HeartbeatInterval.D() != hb {
		t.Errorf("welcome heartbeat %s, want %s", live.welcome.HeartbeatInterval.D(), hb)
	}
	time.Sleep(6 * hb)
	if v := c.agentView(k.id); v.Status != protocol.AgentOnline {
		t.Fatalf("an agent answering pings is %s after 6 intervals, want online", v.Status)
	}
	live.drop()
	c.waitOffline(k.id)

	silent := c.connectSilent(k)
	start := time.Now()
	code := silent.closeCode(5 * time.Second)
	el := time.Since(start)
	if code != websocket.CloseNormalClosure {
		t.Errorf("close %d, want %d", code, websocket.CloseNormalClosure)
	}
	if el < 2*hb || el > 3*hb+time.Second {
		t.Errorf("a silent agent was dropped after %s, want about 3 x %s", el, hb)
	}
	c.waitOffline(k.id)
}

func TestServerCloseEndsSessions(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("close-1")
	a := c.connect(k, nil)
	srv := c.srv
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if code := a.closeCode(5 * time.Second); code != protocol.CloseShuttingDown {
		t.Errorf("session closed with %d, want CloseShuttingDown (%d)", code, protocol.CloseShuttingDown)
	}
	// No new session once Close began.
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	conn, resp, err := d.DialContext(ctx, c.wsURL(), nil)
	if err == nil {
		conn.Close()
		t.Fatal("a new connection was upgraded after Close")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Close: %v (%v), want HTTP 503", err, resp)
	}
	if resp != nil {
		resp.Body.Close()
	}
}

// A connection that is still in its handshake when Close begins must not
// become a session that Close then waits for.
func TestServerCloseDuringHandshake(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("close-hs")
	conn := c.dial(protocol.Subprotocol)
	nonce := readChallenge(t, conn)

	srv := c.srv
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		closed <- srv.Close(ctx)
	}()
	eventually(t, 5*time.Second, func() (bool, string) {
		srv.connMu.Lock()
		defer srv.connMu.Unlock()
		return srv.closing, "Close has not begun"
	})
	writeMsg(t, conn, helloFor(k, nonce, nil))
	code, _ := readClose(t, conn, 5*time.Second)
	if code != protocol.CloseShuttingDown {
		t.Errorf("close %d, want CloseShuttingDown (%d)", code, protocol.CloseShuttingDown)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestIdleSessionHoldsOneGoroutine pins down what an idle agent costs the
// control plane: its session's reader, and no writer once the frames it
// was sent are written (the writer runs only while frames are queued; pings
// come from a timer). Not parallel: it counts the process's goroutines.
func TestIdleSessionHoldsOneGoroutine(t *testing.T) {
	const n = 5
	c := newCP(t, withOptions(func(o *Options) { o.HeartbeatInterval = 200 * time.Millisecond }))
	readers0, writers0 := sessionGoroutines()
	agents := make([]*fakeAgent, n)
	for i := range agents {
		agents[i] = c.connect(c.newAgent(fmt.Sprintf("idle-%d", i)), nil)
	}
	// One job each, so that every session's writer has run at least once.
	for _, a := range agents {
		v := c.submit(a.key.id, time.Minute)
		j := a.expectJob()
		a.accept(j)
		a.succeed(j.JobID, j.Attempt, "fp")
		a.expectAck(v.ID)
		c.waitState(v.ID, protocol.JobSucceeded)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		r, w := sessionGoroutines()
		return r-readers0 == n && w-writers0 == 0, fmt.Sprintf("%d idle sessions run %d readers and %d writers, want %d and 0", n, r-readers0, w-writers0, n)
	})
	// Pings go on without a writer: the sessions outlive many intervals
	// only if the agents' pongs answer them.
	time.Sleep(5 * 200 * time.Millisecond)
	for _, a := range agents {
		if v := c.agentView(a.key.id); v.Status != protocol.AgentOnline {
			t.Errorf("agent %s is %s after 5 ping intervals, want online", a.key.id, v.Status)
		}
	}
	// A job starts a writer again.
	v := c.submit(agents[0].key.id, time.Minute)
	if j := agents[0].expectJob(); j.JobID != v.ID {
		t.Fatalf("got job %s, want %s", j.JobID, v.ID)
	}
}

// sessionGoroutines counts the goroutines running a session's reader and
// a session's writer.
func sessionGoroutines() (readers, writers int) {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "controlplane.(*Server).readLoop(") {
			readers++
		}
		if strings.Contains(g, "controlplane.(*session).writer(") {
			writers++
		}
	}
	return readers, writers
}
