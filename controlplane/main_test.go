package controlplane

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
	"github.com/orchestrator/orchestrator/protocol"
)

// Every test closes what it opens (servers, stores, fake agents), so no
// goroutine is ignored but lumberjack's, which cannot be stopped.
func TestMain(m *testing.M) {
	// lumberjack's compression goroutine lives as long as the process
	// once a log file was opened (logfile_test.go); it holds nothing.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}

// The tests fake the agent, not the server: a real control plane (the real
// sqlite store in a temporary directory, the real handler behind httptest)
// and a small scripted agent that speaks protocol/ over a raw gorilla
// websocket. Each test reads as a script of what the agent sends and what
// the control plane must answer.

const testAdminToken = "test-admin-token-0123456789abcdef"

// testCtx is a context that ends with the test or after a minute.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testCP is a control plane under test. Its httptest server delegates to
// the current Server, so a restart keeps the URL that agents dial.
type testCP struct {
	t *testing.T // the test that uses this view; see with
	*cpState
}

// cpState is the control plane itself, shared by the views of subtests.
type cpState struct {
	dir  string
	opts Options
	// handshakeWait, when set, shortens the time a connection has to say
	// hello.
	handshakeWait time.Duration
	logs          *observer.ObservedLogs
	log           *zap.Logger

	ts  *httptest.Server
	cur atomic.Pointer[Server]

	// Touched only by the goroutine of the test that made it.
	st  *sqlite.Store
	srv *Server
}

// with returns a view of the control plane for subtest t, so that helpers
// fail the subtest that called them.
func (c *testCP) with(t *testing.T) *testCP { return &testCP{t: t, cpState: c.cpState} }

type cpOption func(*testCP)

func withOptions(f func(*Options)) cpOption { return func(c *testCP) { f(&c.opts) } }

func withHandshakeWait(d time.Duration) cpOption { return func(c *testCP) { c.handshakeWait = d } }

// newCP starts a control plane on a new store. Everything is closed at the
// end of the test; on failure the control plane's logs are printed.
func newCP(t *testing.T, opts ...cpOption) *testCP {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	c := &testCP{t: t, cpState: &cpState{dir: t.TempDir(), logs: logs, log: zap.New(core)}}
	c.opts.HeartbeatInterval = 2 * time.Second
	for _, o := range opts {
		o(c)
	}
	c.start()
	c.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.cur.Load().Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range c.logs.All() {
				t.Logf("cp log: %s %s %v", e.Level, e.Message, e.ContextMap())
			}
		}
	})
	t.Cleanup(c.ts.Close)
	t.Cleanup(c.stop) // runs before ts.Close: ends the sessions first
	return c
}

// start opens the store in c.dir and starts a new Server on it.
func (c *testCP) start() {
	c.t.Helper()
	st, err := sqlite.Open(testCtx(c.t), c.dir, sqlite.Options{})
	if err != nil {
		c.t.Fatalf("open store: %v", err)
	}
	o := c.opts
	o.Store, o.AdminToken, o.Logger = st, testAdminToken, c.log
	srv, err := New(o)
	if err != nil {
		st.Close()
		c.t.Fatalf("New: %v", err)
	}
	if c.handshakeWait > 0 {
		srv.handshakeWait = c.handshakeWait
	}
	if err := srv.Start(testCtx(c.t)); err != nil {
		st.Close()
		c.t.Fatalf("Start: %v", err)
	}
	c.st, c.srv = st, srv
	c.cur.Store(srv)
}

// stop closes the Server (ending every agent session) and the store.
func (c *testCP) stop() {
	c.t.Helper()
	if c.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.srv.Close(ctx); err != nil {
		c.t.Errorf("Server.Close: %v", err)
	}
	if err := c.st.Close(); err != nil {
		c.t.Errorf("store Close: %v", err)
	}
	c.srv, c.st = nil, nil
}

// restart stops the control plane and starts a new one on the same store,
// as after a crash or an upgrade.
func (c *testCP) restart() {
	c.t.Helper()
	c.stop()
	c.start()
}

func (c *testCP) wsURL() string {
	return "ws" + strings.TrimPrefix(c.ts.URL, "http") + protocol.ConnectPath
}

// request sends an HTTP request. body is nil, a string (sent as it is) or a
// value sent as JSON. auth is the whole Authorization header ("" for none).
func (c *testCP) request(method, path string, body any, auth string) (int, http.Header, []byte) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(testCtx(c.t), method, c.ts.URL+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.ts.Client().Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, raw
}

// api calls the API with the admin token, checks the status, and decodes
// the answer into out (when not nil).
func (c *testCP) api(method, path string, body any, wantStatus int, out any) []byte {
	c.t.Helper()
	status, _, raw := c.request(method, path, body, "Bearer "+testAdminToken)
	if status != wantStatus {
		c.t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, status, wantStatus, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decode %T: %v; body: %s", method, path, out, err, raw)
		}
	}
	return raw
}

// apiError calls the API with the admin token and checks that it answers
// with a JSON error of status and code whose message holds each of want.
func (c *testCP) apiError(method, path string, body any, status int, code protocol.ErrorCode, want ...string) protocol.Error {
	c.t.Helper()
	st, hdr, raw := c.request(method, path, body, "Bearer "+testAdminToken)
	return checkAPIError(c.t, method+" "+path, st, hdr, raw, status, code, want...)
}

func checkAPIError(t *testing.T, what string, status int, hdr http.Header, raw []byte, wantStatus int, code protocol.ErrorCode, want ...string) protocol.Error {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d; body: %s", what, status, wantStatus, raw)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var ae protocol.APIError
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ae); err != nil {
		t.Fatalf("%s: the body is not an API error: %v; body: %s", what, err, raw)
	}
	if ae.Error.Code != code {
		t.Errorf("%s: code %q, want %q (message %q)", what, ae.Error.Code, code, ae.Error.Message)
	}
	if ae.Error.Message == "" {
		t.Errorf("%s: the error has no message", what)
	}
	for _, w := range want {
		if !strings.Contains(ae.Error.Message, w) {
			t.Errorf("%s: message %q, want it to mention %q", what, ae.Error.Message, w)
		}
	}
	return ae.Error
}

// register registers an agent and returns the answer.
func (c *testCP) register(name string) protocol.RegisterAgentResponse {
	c.t.Helper()
	var r protocol.RegisterAgentResponse
	c.api("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: name}, http.StatusCreated, &r)
	return r
}

// enroll trades token for the agent id with a public key, as an agent does.
func (c *testCP) enroll(token string, pub ed25519.PublicKey) (int, http.Header, []byte) {
	c.t.Helper()
	return c.request("POST", protocol.EnrollPath, protocol.EnrollRequest{
		Token: token, PublicKey: protocol.EncodePublicKey(pub), Hostname: "fake-host", AgentVersion: "test",
	}, "")
}

// agentKey is a registered and enrolled agent: its id and private key.
type agentKey struct {
	id  string
	key ed25519.PrivateKey
}

// newAgent registers an agent and enrolls a fresh key for it.
func (c *testCP) newAgent(name string) agentKey {
	c.t.Helper()
	reg := c.register(name)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	status, _, raw := c.enroll(reg.EnrollmentToken.Token, pub)
	if status != http.StatusOK {
		c.t.Fatalf("enroll %s: status %d: %s", name, status, raw)
	}
	var er protocol.EnrollResponse
	if err := json.Unmarshal(raw, &er); err != nil || er.AgentID != reg.Agent.ID {
		c.t.Fatalf("enroll %s: answer %s (err %v), want agent id %s", name, raw, err, reg.Agent.ID)
	}
	return agentKey{id: reg.Agent.ID, key: priv}
}

// dial opens a websocket to the agent endpoint offering subprotocols. The
// connection is closed at the end of the test.
func (c *testCP) dial(subprotocols ...string) *websocket.Conn {
	c.t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.DialContext(testCtx(c.t), c.wsURL(), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		c.t.Fatalf("dial %s: %v (HTTP %d)", c.wsURL(), err, status)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// readChallenge reads the control plane's first frame and returns the nonce.
func readChallenge(t *testing.T, conn *websocket.Conn) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, frame, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read challenge: %v", err)
	}
	m, err := protocol.Decode(frame)
	if err != nil {
		t.Fatalf("decode challenge: %v", err)
	}
	if m.Type != protocol.TypeChallenge {
		t.Fatalf("first frame is %s, want challenge", m.Type)
	}
	return m.Challenge.Nonce
}

// helloFor builds the signed hello of agent k for nonce: every v1 kind,
// concurrency 4. mod, when set, changes it before it is signed; a mod that
// sets Signature keeps its own.
func helloFor(k agentKey, nonce string, mod func(*protocol.Hello)) *protocol.Message {
	h := &protocol.Hello{
		AgentID: k.id, ProtocolVersion: protocol.Version, AgentVersion: "fake-1.0", Hostname: "fake-host", OS: "linux/amd64",
		Backends:    []protocol.BackendInfo{{Name: "file", Settings: map[string]string{"path": "/etc/secrets.json"}}},
		Kinds:       protocol.JobKinds,
		Concurrency: 4,
	}
	if mod != nil {
		mod(h)
	}
	if h.Signature == "" {
		h.Signature = sign(k.key, h.AgentID, nonce, h.ProtocolVersion)
	}
	return &protocol.Message{Type: protocol.TypeHello, Hello: h}
}

func sign(key ed25519.PrivateKey, agentID, nonce string, version int) string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, protocol.SigningPayload(agentID, nonce, version)))
}

func writeMsg(t *testing.T, conn *websocket.Conn, m *protocol.Message) {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatalf("encode %s: %v", m.Type, err)
	}
	writeRaw(t, conn, b)
}

func writeRaw(t *testing.T, conn *websocket.Conn, b []byte) {
	t.Helper()
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readClose reads until the connection ends and returns the close code the
// control plane sent, or -1 if it ended without a close frame.
func readClose(t *testing.T, conn *websocket.Conn, within time.Duration) (int, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	for {
		_, frame, err := conn.ReadMessage()
		if err == nil {
			t.Logf("frame before the close: %s", frame)
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		t.Logf("connection ended without a close frame: %v", err)
		return -1, ""
	}
}

// fakeAgent is one session of a scripted agent. A reader goroutine reads
// every frame (answering pings, as a real agent does) into in; the test
// goroutine does all the writing.
type fakeAgent struct {
	t       *testing.T
	key     agentKey
	conn    *websocket.Conn
	welcome protocol.Welcome

	in   chan []byte
	done chan struct{} // closed when the reader stops
	err  error         // why the reader stopped; read after done
}

// connect runs the handshake for agent k and fails the test unless the
// control plane welcomes it.
func (c *testCP) connect(k agentKey, mod func(*protocol.Hello)) *fakeAgent {
	c.t.Helper()
	return c.connectConn(k, mod, nil)
}

// connectSilent connects an agent whose reader reads pings but never
// answers them (and that sends no heartbeats): a hung agent.
func (c *testCP) connectSilent(k agentKey) *fakeAgent {
	c.t.Helper()
	return c.connectConn(k, nil, func(conn *websocket.Conn) { conn.SetPingHandler(func(string) error { return nil }) })
}

// connectConn is connect, with setup run on the connection before its
// reader starts.
func (c *testCP) connectConn(k agentKey, mod func(*protocol.Hello), setup func(*websocket.Conn)) *fakeAgent {
	c.t.Helper()
	conn := c.dial(protocol.Subprotocol)
	nonce := readChallenge(c.t, conn)
	writeMsg(c.t, conn, helloFor(k, nonce, mod))
	_, frame, err := conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("agent %s: no welcome: %v", k.id, err)
	}
	m, err := protocol.Decode(frame)
	if err != nil || m.Type != protocol.TypeWelcome {
		c.t.Fatalf("agent %s: got %s (%v), want welcome", k.id, frame, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	if setup != nil {
		setup(conn)
	}
	a := &fakeAgent{t: c.t, key: k, conn: conn, welcome: *m.Welcome, in: make(chan []byte, 256), done: make(chan struct{})}
	go a.read()
	c.t.Cleanup(a.drop)
	// The control plane sends welcome, stores the hello, and only then
	// attaches the session to the dispatcher: wait for that, so that the
	// script's next step meets an online agent (and a later session of the
	// same agent really is the newer one).
	eventually(c.t, 10*time.Second, func() (bool, string) {
		l := c.cur.Load().disp.live(k.id)
		return l.sessionID == a.welcome.SessionID, fmt.Sprintf("session %s of agent %s is not attached (live session %q)", a.welcome.SessionID, k.id, l.sessionID)
	})
	return a
}

func (a *fakeAgent) read() {
	defer close(a.done)
	for {
		_, frame, err := a.conn.ReadMessage()
		if err != nil {
			a.err = err
			return
		}
		a.in <- frame
	}
}

// drop ends the connection without a close frame, as a crash or a network
// cut does, and waits for the reader.
func (a *fakeAgent) drop() {
	a.conn.Close()
	<-a.done
}

func (a *fakeAgent) send(m *protocol.Message) {
	a.t.Helper()
	writeMsg(a.t, a.conn, m)
}

// next returns the next message from the control plane, failing the test if
// none comes within d or the connection ends.
func (a *fakeAgent) next(d time.Duration) *protocol.Message {
	a.t.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case frame := <-a.in:
		m, err := protocol.Decode(frame)
		if err != nil {
			a.t.Fatalf("the control plane sent a frame that does not decode: %v: %s", err, frame)
		}
		return m
	case <-a.done:
		// Frames read before the end are still in a.in.
		select {
		case frame := <-a.in:
			m, err := protocol.Decode(frame)
			if err != nil {
				a.t.Fatalf("undecodable frame: %v: %s", err, frame)
			}
			return m
		default:
		}
		a.t.Fatalf("the session ended while waiting for a message: %v", a.err)
	case <-t.C:
		a.t.Fatalf("no message from the control plane within %s", d)
	}
	return nil
}

// expect returns the next message and fails unless it is of type typ.
func (a *fakeAgent) expect(typ protocol.Type) *protocol.Message {
	a.t.Helper()
	m := a.next(5 * time.Second)
	if m.Type != typ {
		b, _ := json.Marshal(m)
		a.t.Fatalf("got %s, want a %s message", b, typ)
	}
	return m
}

func (a *fakeAgent) expectJob() *protocol.Job {
	a.t.Helper()
	return a.expect(protocol.TypeJob).Job
}

func (a *fakeAgent) expectAck(jobID string) {
	a.t.Helper()
	if m := a.expect(protocol.TypeResultAck); m.ResultAck.JobID != jobID {
		a.t.Fatalf("result_ack for %s, want %s", m.ResultAck.JobID, jobID)
	}
}

// expectAckAndJob reads the ack of jobID and the next job, in either
// order: a result frees a slot, and the next job may be sent before the
// result's ack.
func (a *fakeAgent) expectAckAndJob(jobID string) *protocol.Job {
	a.t.Helper()
	var job *protocol.Job
	acked := false
	for !acked || job == nil {
		m := a.next(5 * time.Second)
		switch {
		case m.Type == protocol.TypeResultAck && m.ResultAck.JobID == jobID && !acked:
			acked = true
		case m.Type == protocol.TypeJob && job == nil:
			job = m.Job
		default:
			b, _ := json.Marshal(m)
			a.t.Fatalf("got %s, want the result_ack of %s and a job", b, jobID)
		}
	}
	return job
}

// expectNothing checks that the control plane sends nothing for d. Only
// for asserting that something does not happen; d is kept short.
func (a *fakeAgent) expectNothing(d time.Duration) {
	a.t.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case frame := <-a.in:
		a.t.Fatalf("unexpected message from the control plane: %s", frame)
	case <-t.C:
	}
}

// closeCode waits for the control plane to end the session and returns the
// close code it sent (-1: no close frame).
func (a *fakeAgent) closeCode(within time.Duration) int {
	a.t.Helper()
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case frame := <-a.in:
			a.t.Logf("frame before the close: %s", frame)
		case <-a.done:
			var ce *websocket.CloseError
			if errors.As(a.err, &ce) {
				return ce.Code
			}
			return -1
		case <-t.C:
			a.t.Fatalf("the session did not end within %s", within)
		}
	}
}

func (a *fakeAgent) accept(j *protocol.Job) {
	a.t.Helper()
	a.send(&protocol.Message{Type: protocol.TypeAccepted, Accepted: &protocol.Accepted{JobID: j.JobID, Attempt: j.Attempt}})
}

func (a *fakeAgent) reject(j *protocol.Job, code protocol.ErrorCode) {
	a.t.Helper()
	a.send(&protocol.Message{Type: protocol.TypeRejected, Rejected: &protocol.Rejected{
		JobID: j.JobID, Attempt: j.Attempt, Error: *protocol.Errorf(code, "the fake agent rejects this job (%s)", code),
	}})
}

// succeed sends an ok result for the job, with fingerprint fp.
func (a *fakeAgent) succeed(jobID string, attempt int, fp string) {
	a.t.Helper()
	a.send(okResult(jobID, attempt, fp))
}

func okResult(jobID string, attempt int, fp string) *protocol.Message {
	now := time.Now().UTC()
	return &protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{
		JobID: jobID, Attempt: attempt, OK: true, StartedAt: now, FinishedAt: now,
		Output: &protocol.Output{Credentials: &protocol.CredentialsOutput{
			Backend: "file", Reference: *fileRef(), KeysFound: []string{"password"}, Fingerprint: fp,
		}},
	}}
}

func errResult(jobID string, attempt int, code protocol.ErrorCode) *protocol.Message {
	now := time.Now().UTC()
	return &protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{
		JobID: jobID, Attempt: attempt, StartedAt: now, FinishedAt: now,
		Error: protocol.Errorf(code, "the fake agent's job failed (%s)", code),
	}}
}

func fileRef() *protocol.SecretRef {
	return &protocol.SecretRef{Backend: protocol.BackendFile, SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"}
}

func resolveParams() protocol.Params { return protocol.Params{Secret: fileRef()} }

// submit queues a resolve_credentials job for agentID.
func (c *testCP) submit(agentID string, timeout time.Duration) protocol.JobView {
	c.t.Helper()
	var v protocol.JobView
	c.api("POST", "/api/v1/jobs", protocol.SubmitJobRequest{
		AgentID: agentID, Kind: protocol.KindResolveCredentials, Params: resolveParams(), Timeout: protocol.Duration(timeout),
	}, http.StatusCreated, &v)
	if v.State != protocol.JobQueued && v.State != protocol.JobDispatched {
		c.t.Fatalf("submitted job is %s, want queued or dispatched", v.State)
	}
	return v
}

func (c *testCP) job(id string) protocol.JobView {
	c.t.Helper()
	var v protocol.JobView
	c.api("GET", "/api/v1/jobs/"+id, nil, http.StatusOK, &v)
	return v
}

func (c *testCP) agentView(id string) protocol.AgentView {
	c.t.Helper()
	var v protocol.AgentView
	c.api("GET", "/api/v1/agents/"+id, nil, http.StatusOK, &v)
	return v
}

// eventually polls cond every 10ms until it holds, failing after d with
// the last description cond gave.
func eventually(t *testing.T, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, desc := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, desc)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState polls the job until it is in state.
func (c *testCP) waitState(id string, state protocol.JobState) protocol.JobView {
	c.t.Helper()
	var v protocol.JobView
	eventually(c.t, 10*time.Second, func() (bool, string) {
		v = c.job(id)
		return v.State == state, fmt.Sprintf("job %s is %s (attempts %d, error %v), want %s", id, v.State, v.Attempts, v.Error, state)
	})
	return v
}

// waitStatus polls the agent until its status is status.
func (c *testCP) waitStatus(id, status string) protocol.AgentView {
	c.t.Helper()
	var v protocol.AgentView
	eventually(c.t, 10*time.Second, func() (bool, string) {
		v = c.agentView(id)
		return v.Status == status, fmt.Sprintf("agent %s is %s, want %s", id, v.Status, status)
	})
	return v
}

// waitOffline waits until the dispatcher has no session for the agent, so
// that the next connect is a reconnection rather than a superseding session.
func (c *testCP) waitOffline(id string) { c.t.Helper(); c.waitStatus(id, protocol.AgentOffline) }
