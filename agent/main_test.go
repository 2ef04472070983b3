package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/protocol"
)

// The tests fake the control plane, not the agent: a real Agent (real
// config, policy, runner, outbox, file secret backend) dials an httptest
// server that speaks protocol/ over a real gorilla websocket, verifies the
// hello's signature against the test identity's key, and plays a script.
// This package never imports controlplane.

// canary is the secret value in every test's secrets file. No frame the
// agent sends or receives and no line it logs may hold it, in any form.
const canary = "canary-5d1e8f27-agent-SECRET"

// leakSink collects every frame and log line of every test, for the final
// canary check in TestMain.
var leakSink struct {
	mu     sync.Mutex
	frames int
	buf    bytes.Buffer
}

func sinkWrite(b []byte) {
	leakSink.mu.Lock()
	leakSink.buf.Write(b)
	leakSink.buf.WriteByte('\n')
	leakSink.frames++
	leakSink.mu.Unlock()
}

// canaryReads counts the times a test backend returned credentials that
// hold the canary: the check below is only meaningful if it was read.
var canaryReads atomic.Int32

type mainWithCanary struct{ m *testing.M }

func (w mainWithCanary) Run() int {
	code := w.m.Run()
	leakSink.mu.Lock()
	defer leakSink.mu.Unlock()
	if form, found := redact.Find(leakSink.buf.Bytes(), canary); found {
		fmt.Fprintf(os.Stderr, "FAIL: the canary secret appears (as %q) in the frames or logs of the agent tests\n", form)
		return 1
	}
	if code == 0 {
		fmt.Printf("canary: %d frames and log lines checked, canary read %d times, never seen\n", leakSink.frames, canaryReads.Load())
	}
	return code
}

// Every test stops its agent and fake control plane, so no goroutine is
// ignored. After all tests, nothing recorded may hold the canary.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(mainWithCanary{m})
}

// testCtx is a context that ends with the test or after a minute.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 5ms until it holds, failing after d.
func eventually(t testing.TB, d time.Duration, cond func() (bool, string)) {
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
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder keeps frames or log lines of one test, and feeds the global sink.
type recorder struct {
	mu    sync.Mutex
	lines [][]byte
}

func (r *recorder) add(b []byte) {
	c := bytes.Clone(b)
	r.mu.Lock()
	r.lines = append(r.lines, c)
	r.mu.Unlock()
	sinkWrite(c)
}

func (r *recorder) all() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.lines...)
}

func (r *recorder) contains(sub string) bool {
	for _, l := range r.all() {
		if bytes.Contains(l, []byte(sub)) {
			return true
		}
	}
	return false
}

// Write makes a recorder a zap sink: one JSON line per call.
func (r *recorder) Write(p []byte) (int, error) {
	r.add(bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func (r *recorder) Sync() error { return nil }

// checkNoCanary fails t if any recorded line holds the canary.
func checkNoCanary(t testing.TB, what string, r *recorder) {
	t.Helper()
	for _, l := range r.all() {
		if form, found := redact.Find(l, canary); found {
			t.Errorf("%s leaks the canary (as %q): %s", what, form, l)
		}
	}
}

// testIdentity is an enrolled identity made for a test.
func testIdentity(t testing.TB, agentID string) Identity {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fp := make([]byte, 32)
	rand.Read(fp)
	return Identity{AgentID: agentID, ControlPlane: "http://fake", EnrolledAt: time.Now().UTC(), PrivateKey: priv.Seed(), FingerprintKey: fp}
}

// fakeCP is a control plane that speaks the session protocol and plays the
// test's script. Each accepted session is handed to the test through
// sessions.
type fakeCP struct {
	t        *testing.T
	ts       *httptest.Server
	agentID  string
	pub      ed25519.PublicKey
	hb       time.Duration
	frames   *recorder
	sessions chan *cpSession
	conns    atomic.Int32 // websocket connections upgraded
	wg       sync.WaitGroup

	mu sync.Mutex // guards the knobs below
	// refuse, when set, decides for connection n (from 1) whether to
	// close with a code instead of welcoming: 0 welcomes.
	refuse func(n int) (code int, reason string)
	// noPing lists the connections the control plane does not ping.
	noPing map[int]bool
	// skew is added to the control plane's clock.
	skew time.Duration
	// noSubprotocol makes the upgrade choose no subprotocol.
	noSubprotocol bool
	// open lists the live sessions, for the cleanup.
	open []*cpSession
}

// cpSession is one welcomed session, seen from the control plane.
type cpSession struct {
	t     *testing.T
	f     *fakeCP
	n     int
	conn  *websocket.Conn
	hello protocol.Hello
	at    time.Time // when welcome was sent

	in   chan *protocol.Message
	done chan struct{} // closed when the reader stops
	err  error         // why; read after done
}

func newFakeCP(t *testing.T, id Identity, hb time.Duration) *fakeCP {
	t.Helper()
	f := &fakeCP{
		t: t, agentID: id.AgentID, pub: id.Signer().Public().(ed25519.PublicKey), hb: hb,
		frames: &recorder{}, sessions: make(chan *cpSession, 64), noPing: map[int]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.ConnectPath, f.serveConnect)
	f.ts = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.mu.Lock()
		open := f.open
		f.mu.Unlock()
		for _, s := range open {
			s.conn.Close()
		}
		f.ts.Close()
		f.wg.Wait()
		checkNoCanary(t, "a frame", f.frames)
	})
	return f
}

func (f *fakeCP) set(fn func(f *fakeCP)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

func (f *fakeCP) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Now().Add(f.skew).UTC()
}

func (f *fakeCP) serveConnect(w http.ResponseWriter, r *http.Request) {
	f.wg.Add(1)
	defer f.wg.Done()
	f.mu.Lock()
	up := websocket.Upgrader{}
	if !f.noSubprotocol {
		up.Subprotocols = []string{protocol.Subprotocol}
	}
	f.mu.Unlock()
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	n := int(f.conns.Add(1))
	write := func(m *protocol.Message) error {
		b, err := protocol.Encode(m)
		if err != nil {
			return err
		}
		f.frames.add(b)
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return conn.WriteMessage(websocket.TextMessage, b)
	}
	closeWith := func(code int, reason string) {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	}

	var raw [protocol.NonceSize]byte
	rand.Read(raw[:])
	nonce := base64.RawURLEncoding.EncodeToString(raw[:])
	if write(&protocol.Message{Type: protocol.TypeChallenge, Challenge: &protocol.Challenge{Nonce: nonce, ServerTime: f.now()}}) != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, frame, err := conn.ReadMessage()
	if err != nil {
		return
	}
	f.frames.add(frame)
	m, err := protocol.Decode(frame)
	if err != nil || m.Type != protocol.TypeHello {
		f.t.Errorf("connection %d: first frame %s (%v), want a valid hello", n, frame, err)
		closeWith(protocol.CloseProtocolError, "hello expected")
		return
	}
	h := m.Hello
	sig, _ := base64.RawURLEncoding.DecodeString(h.Signature)
	if h.AgentID != f.agentID || h.ProtocolVersion != protocol.Version ||
		!ed25519.Verify(f.pub, protocol.SigningPayload(h.AgentID, nonce, h.ProtocolVersion), sig) {
		closeWith(protocol.CloseAuthFailed, "the signature does not match the enrolled key")
		return
	}
	f.mu.Lock()
	refuse, noPing := f.refuse, f.noPing[n]
	f.mu.Unlock()
	if refuse != nil {
		if code, reason := refuse(n); code != 0 {
			closeWith(code, reason)
			return
		}
	}
	if write(&protocol.Message{Type: protocol.TypeWelcome, Welcome: &protocol.Welcome{
		SessionID: fmt.Sprintf("ses_%d", n), HeartbeatInterval: protocol.Duration(f.hb), ServerTime: f.now(),
	}}) != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	s := &cpSession{t: f.t, f: f, n: n, conn: conn, hello: *h, at: time.Now(), in: make(chan *protocol.Message, 256), done: make(chan struct{})}
	f.mu.Lock()
	f.open = append(f.open, s)
	f.mu.Unlock()
	if !noPing {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			tk := time.NewTicker(f.hb)
			defer tk.Stop()
			for {
				select {
				case <-s.done:
					return
				case <-tk.C:
					_ = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
				}
			}
		}()
	}
	f.sessions <- s
	defer close(s.done)
	for {
		_, frame, err := conn.ReadMessage()
		if err != nil {
			s.err = err
			return
		}
		f.frames.add(frame)
		m, err := protocol.Decode(frame)
		if err != nil {
			f.t.Errorf("session %d: the agent sent a frame that does not decode: %v: %s", n, err, frame)
			continue
		}
		s.in <- m
	}
}

// session waits for the next welcomed session.
func (f *fakeCP) session() *cpSession {
	f.t.Helper()
	select {
	case s := <-f.sessions:
		return s
	case <-time.After(10 * time.Second):
		f.t.Fatalf("no session within 10s (%d connections so far)", f.conns.Load())
	}
	return nil
}

// noSession checks that no new session opens within d.
func (f *fakeCP) noSession(d time.Duration) {
	f.t.Helper()
	select {
	case s := <-f.sessions:
		f.t.Fatalf("unexpected session %d", s.n)
	case <-time.After(d):
	}
}

func (s *cpSession) send(m *protocol.Message) {
	s.t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		s.t.Fatalf("encode %s: %v", m.Type, err)
	}
	s.sendRaw(b)
}

func (s *cpSession) sendRaw(b []byte) {
	s.t.Helper()
	s.f.frames.add(b)
	_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := s.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		s.t.Fatalf("session %d: write: %v", s.n, err)
	}
}

// next returns the agent's next message other than a heartbeat.
func (s *cpSession) next(d time.Duration) *protocol.Message {
	s.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m := <-s.in:
			if m.Type == protocol.TypeHeartbeat {
				continue
			}
			return m
		case <-s.done:
			select {
			case m := <-s.in:
				if m.Type != protocol.TypeHeartbeat {
					return m
				}
				continue
			default:
			}
			s.t.Fatalf("session %d ended while waiting for a message: %v", s.n, s.err)
		case <-timer.C:
			s.t.Fatalf("session %d: no message from the agent within %s", s.n, d)
		}
	}
}

func (s *cpSession) expect(typ protocol.Type) *protocol.Message {
	s.t.Helper()
	m := s.next(10 * time.Second)
	if m.Type != typ {
		b, _ := json.Marshal(m)
		s.t.Fatalf("session %d: got %s, want a %s message", s.n, b, typ)
	}
	return m
}

func (s *cpSession) expectAccepted(jobID string) {
	s.t.Helper()
	if m := s.expect(protocol.TypeAccepted); m.Accepted.JobID != jobID {
		s.t.Fatalf("accepted %s, want %s", m.Accepted.JobID, jobID)
	}
}

func (s *cpSession) expectResult(jobID string) *protocol.Result {
	s.t.Helper()
	m := s.expect(protocol.TypeResult)
	if m.Result.JobID != jobID {
		s.t.Fatalf("result for %s, want %s", m.Result.JobID, jobID)
	}
	return m.Result
}

func (s *cpSession) expectRejected(jobID string, code protocol.ErrorCode) *protocol.Rejected {
	s.t.Helper()
	m := s.expect(protocol.TypeRejected)
	if m.Rejected.JobID != jobID || m.Rejected.Error.Code != code {
		s.t.Fatalf("rejected %s with %s (%s), want %s with %s", m.Rejected.JobID, m.Rejected.Error.Code, m.Rejected.Error.Message, jobID, code)
	}
	return m.Rejected
}

// expectNothing checks that the agent sends nothing but heartbeats for d.
func (s *cpSession) expectNothing(d time.Duration) {
	s.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m := <-s.in:
			if m.Type == protocol.TypeHeartbeat {
				continue
			}
			b, _ := json.Marshal(m)
			s.t.Fatalf("session %d: unexpected message %s", s.n, b)
		case <-timer.C:
			return
		}
	}
}

func (s *cpSession) ack(jobID string) {
	s.t.Helper()
	s.send(&protocol.Message{Type: protocol.TypeResultAck, ResultAck: &protocol.ResultAck{JobID: jobID}})
}

func (s *cpSession) cancel(jobID string) {
	s.t.Helper()
	s.send(&protocol.Message{Type: protocol.TypeCancel, Cancel: &protocol.Cancel{JobID: jobID, Reason: "test"}})
}

// closeWith ends the session from the control plane's side with a code.
func (s *cpSession) closeWith(code int, reason string) {
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	s.conn.Close()
}

// drop cuts the connection without a close frame.
func (s *cpSession) drop() { s.conn.Close() }

// closed waits for the session to end and returns the close code the agent
// sent (-1: none).
func (s *cpSession) closed(within time.Duration) int {
	s.t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case m := <-s.in:
			if m.Type != protocol.TypeHeartbeat {
				b, _ := json.Marshal(m)
				s.t.Logf("session %d: message before the close: %s", s.n, b)
			}
		case <-s.done:
			var ce *websocket.CloseError
			if errors.As(s.err, &ce) {
				return ce.Code
			}
			return -1
		case <-timer.C:
			s.t.Fatalf("session %d did not end within %s", s.n, within)
		}
	}
}

// jobMsg is a resolve_credentials job for the secret name, due in d.
func jobMsg(id, secretName string, d time.Duration) *protocol.Message {
	return jobAt(id, secretName, time.Now().Add(d))
}

func jobAt(id, secretName string, deadline time.Time) *protocol.Message {
	return &protocol.Message{Type: protocol.TypeJob, Job: &protocol.Job{
		JobID: id, Kind: protocol.KindResolveCredentials, Attempt: 1, Deadline: deadline,
		Params: protocol.Params{Secret: &protocol.SecretRef{Backend: protocol.BackendFile, SecretName: secretName, UsernameKey: "username", PasswordKey: "token"}},
	}}
}

// Secret names in the test secrets file. The backend wrapper holds
// "ci/slow" until released and "ci/hang" until its context ends.
const (
	secretFast   = "ci/github"
	secretSlow   = "ci/slow"
	secretHang   = "ci/hang"
	secretBroken = "ci/broken" // no "token" key, the canary under another key
)

// writeSecretsFile writes the test secrets, every one holding the canary.
func writeSecretsFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secrets.json")
	content := map[string]map[string]string{
		secretFast:   {"username": "bot", "token": canary},
		secretSlow:   {"username": "bot", "token": canary},
		secretHang:   {"username": "bot", "token": canary},
		secretBroken: {"username": "bot", "pat": canary},
		"other/x":    {"username": "bot", "token": canary},
	}
	b, _ := json.Marshal(content)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if !redact.Contains(b, canary) {
		t.Fatal("the secrets file does not hold the canary")
	}
	return path
}

// gateBackend wraps the real file backend to control timing: a test
// interface only for when a job ends, never for what it reads.
type gateBackend struct {
	secrets.Backend
	calls   atomic.Int32
	started chan string // names of references being resolved

	mu   sync.Mutex
	gate chan struct{} // closed to release secretSlow
}

func newGateBackend(t testing.TB, path string) *gateBackend {
	t.Helper()
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return &gateBackend{Backend: f, started: make(chan string, 64), gate: make(chan struct{})}
}

var _ secrets.Backend = (*gateBackend)(nil)

func (g *gateBackend) Resolve(ctx context.Context, ref protocol.SecretRef) (secrets.Credentials, error) {
	g.calls.Add(1)
	select {
	case g.started <- ref.SecretName:
	default:
	}
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	switch ref.SecretName {
	case secretSlow:
		select {
		case <-gate:
		case <-ctx.Done():
			return secrets.Credentials{}, ctx.Err()
		}
	case secretHang:
		<-ctx.Done()
		return secrets.Credentials{}, ctx.Err()
	}
	c, err := g.Backend.Resolve(ctx, ref)
	if err == nil && c.Password.Reveal() == canary {
		canaryReads.Add(1)
	}
	return c, err
}

// release lets the held secretSlow resolutions finish.
func (g *gateBackend) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.gate:
	default:
		close(g.gate)
	}
}

// waitStarted waits until a resolution of name began.
func (g *gateBackend) waitStarted(t testing.TB, name string) {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case n := <-g.started:
			if n == name {
				return
			}
		case <-timer.C:
			t.Fatalf("no resolution of %s started", name)
		}
	}
}

// agentOpts shape a test agent.
type agentOpts struct {
	concurrency int
	grace       time.Duration
	kinds       []protocol.JobKind // policy.job_kinds; default resolve_credentials
	identity    *Identity          // default: the fake control plane's
	hb          time.Duration      // the fake's heartbeat; default 1s
}

// testAgent is a running Agent with what the test watches.
type testAgent struct {
	a       *Agent
	id      Identity
	backend *gateBackend
	logs    *recorder
	frames  *recorder // what the agent's Observe saw
	cancel  context.CancelFunc
	done    chan error // Run's result
}

// newAgentCP makes an identity, a fake control plane for it and an agent
// that dials it. The agent is not started.
func newAgentCP(t *testing.T, o agentOpts) (*testAgent, *fakeCP) {
	t.Helper()
	id := testIdentity(t, "agt_test_"+fmt.Sprint(time.Now().UnixNano()))
	if o.hb == 0 {
		o.hb = time.Second
	}
	f := newFakeCP(t, id, o.hb)
	if o.identity != nil {
		id = *o.identity
		id.AgentID = f.agentID
	}
	return newTestAgent(t, f.ts.URL, id, o), f
}

func newTestAgent(t *testing.T, url string, id Identity, o agentOpts) *testAgent {
	t.Helper()
	if o.concurrency == 0 {
		o.concurrency = 2
	}
	if o.grace == 0 {
		o.grace = 5 * time.Second
	}
	if o.kinds == nil {
		o.kinds = []protocol.JobKind{protocol.KindResolveCredentials}
	}
	var kinds []string
	for _, k := range o.kinds {
		kinds = append(kinds, string(k))
	}
	path := writeSecretsFile(t)
	cfg := Config{
		ControlPlane: url, InsecureAllowWS: true, StateDir: t.TempDir(), Concurrency: o.concurrency, DrainGrace: o.grace,
		Log:     LogConfig{Format: "json", Level: "debug"},
		Secrets: SecretsConfig{File: &FileSecretsConfig{Path: path}},
		Policy:  policy.Config{JobKinds: kinds, Secrets: []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: "ci/*"}}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	ta := &testAgent{id: id, backend: newGateBackend(t, path), logs: &recorder{}, frames: &recorder{}, done: make(chan error, 1)}
	enc := zap.NewProductionEncoderConfig()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(ta.logs), zapcore.DebugLevel))
	a, err := New(Options{
		Config: cfg, Identity: id, Secrets: secrets.NewSet(ta.backend), Logger: log, Version: "test-1.2.3",
		Backoff: backoff.Options{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Observe: func(_ string, frame []byte) { ta.frames.add(frame) },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ta.a = a
	t.Cleanup(func() {
		if ta.cancel != nil {
			ta.backend.release()
			ta.cancel()
			a.Abort()
			select {
			case <-ta.done:
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return after Abort")
			}
		}
		checkNoCanary(t, "an agent log line", ta.logs)
		checkNoCanary(t, "a frame the agent saw", ta.frames)
		if t.Failed() {
			for _, l := range ta.logs.all() {
				t.Logf("agent log: %s", l)
			}
		}
	})
	return ta
}

// start runs the agent until the test ends (or the test cancels it).
func (ta *testAgent) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	go func() { ta.done <- ta.a.Run(ctx) }()
}

// wait returns Run's result, failing if it does not return within d.
func (ta *testAgent) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-ta.done:
		ta.done <- err // keep it for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("Run did not return within %s", d)
	}
	return nil
}

// logged reports whether a log line holds sub.
func (ta *testAgent) logged(sub string) bool { return ta.logs.contains(sub) }
