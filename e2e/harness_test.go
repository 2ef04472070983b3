package e2e

// The in-process harness: a real control plane (controlplane.New on the
// SQLite store, served over loopback HTTP), real agents (agent.Enroll over
// the HTTP API, then agent.New and Run), real websockets between them, and
// a canary check at the end of every test that proves the secret value got
// nowhere it must not go.

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
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
	"github.com/orchestrator/orchestrator/protocol"
)

// Every test stops what it starts: agents, servers, sessions and the HTTP
// client's keep-alive connections. No goroutine is ignored. At the end the
// binaries that binary_test.go built are removed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBinaries()
		os.Exit(code)
	}))
}

const (
	// canary is the secret value in every agent's secrets file. No form of
	// it (raw, base64, hex, URL- or JSON-escaped) may appear in what the
	// agent sends, in either side's logs, in an API answer or in the
	// control plane's store.
	canary = "canary-5f2b9e0c-DO-NOT-LEAK"

	adminToken = "e2e-admin-token-3b8f1d2a9c7e4f60"
	// heartbeat is the control plane's heartbeat interval in these tests:
	// a silent agent is offline after three of them.
	heartbeat = 500 * time.Millisecond

	// allowedSecret is in the secrets file and in the agents' policy.
	allowedSecret = "ci/github"
	// forbiddenSecret is in the secrets file but not in the policy.
	forbiddenSecret = "ci/other"

	// jobTimeout is long enough that no job of a test expires by accident.
	jobTimeout = 30 * time.Second
)

// testCtx bounds a test: it ends with the test or after d.
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSignal waits for one value on ch.
func waitSignal(t *testing.T, ch <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers (loggers).
type lockedBuffer struct {
	mu sync.Mutex // guards the fields below
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

func (l *lockedBuffer) String() string { return string(l.Bytes()) }

// newLogger writes JSON logs at debug level into w, the way the services
// log in production (JSON), so that the canary search reads what an
// operator's log collector would.
func newLogger(w io.Writer) *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey, ec.MessageKey = "ts", "msg"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(w), zapcore.DebugLevel))
}

// logLines decodes JSON log lines, skipping any that are not JSON.
func logLines(b []byte) []map[string]any {
	var out []map[string]any
	for _, line := range bytes.Split(b, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// hasLog reports whether a log line has msg and every field in fields.
func hasLog(b []byte, msg string, fields map[string]string) bool {
	for _, l := range logLines(b) {
		if l["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range fields {
			if fmt.Sprint(l[k]) != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// --- the canary check -----------------------------------------------------

// evidence is one named piece of output to search for the canary.
type evidence struct {
	name string
	data []byte
}

// leakCheck collects the places a test must search for the canary. Sources
// are read when the check runs, at the very end of the test, when every
// server, store and agent has stopped.
type leakCheck struct {
	mu      sync.Mutex // guards the fields below
	sources []func() ([]evidence, error)
}

func (l *leakCheck) add(src func() ([]evidence, error)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sources = append(l.sources, src)
}

// collect reads every source.
func (l *leakCheck) collect() ([]evidence, []error) {
	l.mu.Lock()
	srcs := append([]func() ([]evidence, error)(nil), l.sources...)
	l.mu.Unlock()
	var ev []evidence
	var errs []error
	for _, src := range srcs {
		e, err := src()
		ev = append(ev, e...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return ev, errs
}

// findCanary lists every piece of evidence that holds a form of the canary
// (redact.Forms: raw, base64 in both alphabets and inside longer base64,
// URL-escaped, JSON-escaped, Go-quoted, hex), saying which form.
func findCanary(ev []evidence) []string {
	var hits []string
	for _, e := range ev {
		if form, ok := redact.Find(e.data, canary); ok {
			hits = append(hits, fmt.Sprintf("%s holds the canary as %q", e.name, form))
		}
	}
	return hits
}

// newLeakCheck registers the canary check. Register it before anything it
// searches is started, so that it runs after their cleanups (t.Cleanup runs
// last-registered first).
func newLeakCheck(t *testing.T) *leakCheck {
	l := &leakCheck{}
	t.Cleanup(func() {
		ev, errs := l.collect()
		for _, err := range errs {
			t.Errorf("canary check: %v", err)
		}
		if len(ev) == 0 {
			t.Errorf("canary check: nothing to search")
		}
		for _, hit := range findCanary(ev) {
			t.Errorf("secret leaked: %s", hit)
		}
	})
	return l
}

// filesUnder reads every regular file under dir, raw.
func filesUnder(dir string) ([]evidence, error) {
	var ev []evidence
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		ev = append(ev, evidence{name: "file " + path, data: b})
		return nil
	})
	return ev, err
}

// --- the control plane ----------------------------------------------------

// controlPlane is a real control plane on a SQLite store in its own data
// directory, served on a fixed loopback address that survives Restart.
type controlPlane struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	opts   controlplane.Options
	logs   *lockedBuffer
	log    *zap.Logger
	leaks  *leakCheck
	client *http.Client

	bodiesMu sync.Mutex // guards the fields below
	bodies   []evidence // every API answer's body

	// Owned by the test goroutine (and the cleanups).
	addr string
	srv  *controlplane.Server
	st   *sqlite.Store
	ts   *httptest.Server
	up   bool
}

// cpOption adjusts the control plane's Options.
type cpOption func(*controlplane.Options)

// newControlPlane starts a control plane on a new data directory, stopped
// at the end of the test. Its heartbeat interval is heartbeat unless an
// option says otherwise.
func newControlPlane(t *testing.T, opts ...cpOption) *controlPlane {
	t.Helper()
	dir := t.TempDir() // removed after the canary check has read it
	leaks := newLeakCheck(t)
	logs := &lockedBuffer{}
	cp := &controlPlane{
		t: t, ctx: testCtx(t, time.Minute), dir: filepath.Join(dir, "data"),
		logs: logs, log: newLogger(logs), leaks: leaks,
		opts: controlplane.Options{HeartbeatInterval: heartbeat, Version: "e2e"},
	}
	for _, o := range opts {
		o(&cp.opts)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
	cp.client = &http.Client{Transport: &recordingTransport{base: tr, record: cp.record}, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	leaks.add(cp.evidence)
	cp.start()
	t.Cleanup(func() {
		if cp.up {
			cp.stop()
		}
		if t.Failed() {
			t.Logf("control plane log:\n%s", tail(cp.logs.String(), 30000))
		}
	})
	return cp
}

// URL is the control plane's base URL, the same across restarts.
func (cp *controlPlane) URL() string { return "http://" + cp.addr }

func (cp *controlPlane) start() {
	t := cp.t
	t.Helper()
	st, err := sqlite.Open(cp.ctx, cp.dir, sqlite.Options{})
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	o := cp.opts
	o.Store, o.AdminToken, o.Logger = st, adminToken, cp.log
	srv, err := controlplane.New(o)
	if err != nil {
		st.Close()
		t.Fatalf("controlplane.New: %v", err)
	}
	if err := srv.Start(cp.ctx); err != nil {
		st.Close()
		t.Fatalf("controlplane Start: %v", err)
	}
	ln := cp.listen()
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Listener.Close()
	ts.Listener = ln
	ts.Config.ErrorLog = zap.NewStdLog(cp.log.Named("http"))
	ts.Start()
	cp.srv, cp.st, cp.ts, cp.up = srv, st, ts, true
}

// listen listens on the control plane's address: a new loopback port the
// first time, the same one after a restart (agents keep their URL).
func (cp *controlPlane) listen() net.Listener {
	t := cp.t
	t.Helper()
	if cp.addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		cp.addr = ln.Addr().String()
		return ln
	}
	// Go sets SO_REUSEADDR, so connections in TIME_WAIT do not hold the
	// port; retry briefly in case another process took it meanwhile.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", cp.addr)
		if err == nil {
			return ln
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen again on %s: %v", cp.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop closes the agent sessions, the HTTP server and the store.
func (cp *controlPlane) stop() {
	t := cp.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.srv.Close(ctx); err != nil {
		t.Errorf("control plane Close: %v", err)
	}
	cp.ts.Close()
	if err := cp.st.Close(); err != nil {
		t.Errorf("store Close: %v", err)
	}
	cp.up = false
}

// Restart stops the control plane, runs whileDown, and starts a new one on
// the same data directory and address.
func (cp *controlPlane) Restart(whileDown func()) {
	cp.t.Helper()
	cp.stop()
	if whileDown != nil {
		whileDown()
	}
	cp.start()
}

func (cp *controlPlane) record(name string, body []byte) {
	cp.bodiesMu.Lock()
	defer cp.bodiesMu.Unlock()
	cp.bodies = append(cp.bodies, evidence{name: name, data: body})
}

// evidence is what the control plane's side of the canary check searches:
// its log, every API answer, and every file of its data directory.
func (cp *controlPlane) evidence() ([]evidence, error) {
	ev := []evidence{{name: "control plane log", data: cp.logs.Bytes()}}
	cp.bodiesMu.Lock()
	ev = append(ev, cp.bodies...)
	cp.bodiesMu.Unlock()
	files, err := filesUnder(cp.dir)
	if err != nil {
		return ev, fmt.Errorf("read the data directory: %w", err)
	}
	found := false
	for _, f := range files {
		if filepath.Base(strings.TrimPrefix(f.name, "file ")) == sqlite.FileName && len(f.data) > 0 {
			found = true
		}
	}
	if !found {
		return ev, fmt.Errorf("the data directory %s holds no %s to search", cp.dir, sqlite.FileName)
	}
	return append(ev, files...), nil
}

// recordingTransport hands every response body to record, whole, and
// gives the caller an identical copy.
type recordingTransport struct {
	base   http.RoundTripper
	record func(name string, body []byte)
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	r.record(fmt.Sprintf("API answer to %s %s (%d)", req.Method, req.URL.RequestURI(), resp.StatusCode), b)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// do sends an API request with the admin token. body, when not nil, is
// sent as JSON (a []byte as it is).
func (cp *controlPlane) do(method, path string, body any) (int, []byte) {
	t := cp.t
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal %T: %v", body, err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(cp.ctx, method, cp.URL()+path, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cp.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// doJSON sends a request, checks the status and decodes the answer into out.
func (cp *controlPlane) doJSON(method, path string, body any, wantStatus int, out any) {
	t := cp.t
	t.Helper()
	status, b := cp.do(method, path, body)
	if status != wantStatus {
		t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, status, wantStatus, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %T: %v; body: %s", method, path, out, err, b)
		}
	}
}

// apiError decodes an API error body.
func apiError(t *testing.T, b []byte) protocol.Error {
	t.Helper()
	var e protocol.APIError
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("not an API error: %s", b)
	}
	return e.Error
}

// register registers an agent and returns its id and enrollment token.
func (cp *controlPlane) register(name string) (id, token string) {
	cp.t.Helper()
	var r protocol.RegisterAgentResponse
	cp.doJSON(http.MethodPost, "/api/v1/agents", protocol.RegisterAgentRequest{Name: name}, http.StatusCreated, &r)
	if r.Agent.ID == "" || r.EnrollmentToken.Token == "" {
		cp.t.Fatalf("register %s: no id or token in the answer", name)
	}
	return r.Agent.ID, r.EnrollmentToken.Token
}

// enroll runs the agent's own enrollment into stateDir.
func (cp *controlPlane) enroll(token, stateDir string) (agent.Identity, error) {
	return agent.Enroll(cp.ctx, agent.EnrollOptions{
		ControlPlane: cp.URL(), InsecureAllowWS: true, HTTPClient: cp.client,
		Token: token, StateDir: stateDir, Hostname: "e2e-host", Version: "e2e",
	})
}

func resolveParams(secret string) protocol.Params {
	return protocol.Params{Secret: &protocol.SecretRef{
		Backend: protocol.BackendFile, SecretName: secret, UsernameKey: "username", PasswordKey: "token",
	}}
}

func waitQuery(wait time.Duration) string {
	if wait <= 0 {
		return ""
	}
	return "?wait=" + wait.String()
}

// submit queues a resolve_credentials job for secret and, with wait > 0,
// waits up to wait for it to end.
func (cp *controlPlane) submit(agentID, secret string, timeout, wait time.Duration) protocol.JobView {
	cp.t.Helper()
	var j protocol.JobView
	cp.doJSON(http.MethodPost, "/api/v1/jobs"+waitQuery(wait), protocol.SubmitJobRequest{
		AgentID: agentID, Kind: protocol.KindResolveCredentials, Params: resolveParams(secret), Timeout: protocol.Duration(timeout),
	}, http.StatusCreated, &j)
	return j
}

// getJob reads a job, waiting up to wait for it to end.
func (cp *controlPlane) getJob(id string, wait time.Duration) protocol.JobView {
	cp.t.Helper()
	var j protocol.JobView
	cp.doJSON(http.MethodGet, "/api/v1/jobs/"+id+waitQuery(wait), nil, http.StatusOK, &j)
	return j
}

// waitJob waits until the job is terminal.
func (cp *controlPlane) waitJob(id string, timeout time.Duration) protocol.JobView {
	cp.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		j := cp.getJob(id, min(max(left, time.Millisecond), 5*time.Second))
		if j.State.Terminal() {
			return j
		}
		if left <= 0 {
			cp.t.Fatalf("job %s is still %s after %s", id, j.State, timeout)
		}
	}
}

// listJobs lists jobs with a query such as "agent_id=...".
func (cp *controlPlane) listJobs(query string) []protocol.JobView {
	cp.t.Helper()
	var l protocol.JobList
	cp.doJSON(http.MethodGet, "/api/v1/jobs?"+query, nil, http.StatusOK, &l)
	return l.Jobs
}

// cancel cancels a job through the API.
func (cp *controlPlane) cancel(id string) (int, []byte) {
	cp.t.Helper()
	return cp.do(http.MethodPost, "/api/v1/jobs/"+id+"/cancel", nil)
}

func (cp *controlPlane) agent(id string) protocol.AgentView {
	cp.t.Helper()
	var a protocol.AgentView
	cp.doJSON(http.MethodGet, "/api/v1/agents/"+id, nil, http.StatusOK, &a)
	return a
}

// waitAgentStatus waits until the API shows the agent in status and
// returns that view.
func (cp *controlPlane) waitAgentStatus(id, status string, timeout time.Duration) protocol.AgentView {
	cp.t.Helper()
	var a protocol.AgentView
	eventually(cp.t, timeout, "agent "+id+" to be "+status, func() bool {
		a = cp.agent(id)
		return a.Status == status
	})
	return a
}

// waitJobState waits until the job is in state.
func (cp *controlPlane) waitJobState(id string, state protocol.JobState, timeout time.Duration) protocol.JobView {
	cp.t.Helper()
	var j protocol.JobView
	eventually(cp.t, timeout, "job "+id+" to be "+string(state), func() bool {
		j = cp.getJob(id, 0)
		return j.State == state
	})
	return j
}

// --- agents ---------------------------------------------------------------

// secretBackend wraps the real file backend to control timing: it can hold
// each read until released (gate), delay it, and count and time the calls.
// The real file backend still does the reading. It is the agent's own
// secrets.Backend interface, used only to make jobs slow.
type secretBackend struct {
	real  secrets.Backend
	delay time.Duration
	// gate, when not nil, holds every read until release or until the
	// job's context ends.
	gate chan struct{}
	// hold, when not nil, keeps a read whose job context ended from
	// returning until release: the job cannot report before then.
	hold        chan struct{}
	releaseOnce sync.Once

	calls, running, maxRunning, canceled, returned atomic.Int64
	started                                        chan struct{} // a value per read begun
	cancels                                        chan struct{} // a value per read whose job context ended
}

var _ secrets.Backend = (*secretBackend)(nil)

type backendMode int

const (
	fast         backendMode = iota
	gated                    // held until release
	gatedAndHeld             // held until release, even once canceled
)

func newBackend(mode backendMode, delay time.Duration) *secretBackend {
	b := &secretBackend{delay: delay, started: make(chan struct{}, 100), cancels: make(chan struct{}, 100)}
	if mode >= gated {
		b.gate = make(chan struct{})
	}
	if mode == gatedAndHeld {
		b.hold = make(chan struct{})
	}
	return b
}

// release lets every held read go on. Idempotent.
func (b *secretBackend) release() {
	b.releaseOnce.Do(func() {
		if b.gate != nil {
			close(b.gate)
		}
		if b.hold != nil {
			close(b.hold)
		}
	})
}

func (b *secretBackend) Name() string               { return b.real.Name() }
func (b *secretBackend) Info() protocol.BackendInfo { return b.real.Info() }

func (b *secretBackend) Resolve(ctx context.Context, ref protocol.SecretRef) (secrets.Credentials, error) {
	defer b.returned.Add(1)
	b.calls.Add(1)
	n := b.running.Add(1)
	defer b.running.Add(-1)
	for m := b.maxRunning.Load(); n > m && !b.maxRunning.CompareAndSwap(m, n); m = b.maxRunning.Load() {
	}
	notify(b.started)
	if b.gate != nil || b.delay > 0 {
		var timer <-chan time.Time
		if b.delay > 0 {
			tm := time.NewTimer(b.delay)
			defer tm.Stop()
			timer = tm.C
		}
		select {
		case <-ctx.Done():
			b.canceled.Add(1)
			notify(b.cancels)
			if b.hold != nil {
				<-b.hold
			}
			return secrets.Credentials{}, ctx.Err()
		case <-b.gate:
		case <-timer:
		}
	}
	return b.real.Resolve(ctx, ref)
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// frameLog records every frame an agent sends and receives.
type frameLog struct {
	mu     sync.Mutex // guards the fields below
	frames []frame
}

type frame struct {
	dir  string // "out" (agent → control plane) or "in"
	data []byte
	msg  *protocol.Message // nil if it does not decode
}

func (f *frameLog) observe(dir string, b []byte) {
	fr := frame{dir: dir, data: bytes.Clone(b)}
	fr.msg, _ = protocol.Decode(fr.data)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frames = append(f.frames, fr)
}

// messages returns the decoded messages of dir and type, oldest first.
func (f *frameLog) messages(dir string, typ protocol.Type) []*protocol.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*protocol.Message
	for _, fr := range f.frames {
		if fr.dir == dir && fr.msg != nil && fr.msg.Type == typ {
			out = append(out, fr.msg)
		}
	}
	return out
}

// first returns the raw first frame of dir and type, nil if none.
func (f *frameLog) first(dir string, typ protocol.Type) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fr := range f.frames {
		if fr.dir == dir && fr.msg != nil && fr.msg.Type == typ {
			return fr.data
		}
	}
	return nil
}

// count counts the messages of dir and type about jobID.
func (f *frameLog) count(dir string, typ protocol.Type, jobID string) int {
	n := 0
	for _, m := range f.messages(dir, typ) {
		if jobIDOf(m) == jobID {
			n++
		}
	}
	return n
}

func (f *frameLog) evidence(name string) evidence {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b bytes.Buffer
	for _, fr := range f.frames {
		fmt.Fprintf(&b, "%s %s\n", fr.dir, fr.data)
	}
	return evidence{name: name, data: b.Bytes()}
}

func jobIDOf(m *protocol.Message) string {
	switch {
	case m.Job != nil:
		return m.Job.JobID
	case m.Accepted != nil:
		return m.Accepted.JobID
	case m.Rejected != nil:
		return m.Rejected.JobID
	case m.Result != nil:
		return m.Result.JobID
	case m.ResultAck != nil:
		return m.ResultAck.JobID
	case m.Cancel != nil:
		return m.Cancel.JobID
	}
	return ""
}

// agentConfig says how to start an agent.
type agentConfig struct {
	// name registers a new agent (with stateDir empty).
	name string
	// stateDir, when set, starts another process of an enrolled agent.
	stateDir    string
	concurrency int           // default 2
	drainGrace  time.Duration // default 10s
	backend     *secretBackend
}

// agentProc is one running agent process.
type agentProc struct {
	t        *testing.T
	ID       string
	StateDir string
	Agent    *agent.Agent
	Backend  *secretBackend
	frames   *frameLog
	logs     *lockedBuffer

	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done is closed
}

// startAgent registers and enrolls an agent over the API (or, with
// c.stateDir, loads an enrolled identity) and runs it against cp until the
// end of the test.
func startAgent(t *testing.T, cp *controlPlane, c agentConfig) *agentProc {
	t.Helper()
	if c.stateDir == "" {
		_, token := cp.register(c.name)
		c.stateDir = filepath.Join(t.TempDir(), "state")
		if _, err := cp.enroll(token, c.stateDir); err != nil {
			t.Fatalf("enroll %s: %v", c.name, err)
		}
	}
	id, err := agent.LoadIdentity(c.stateDir)
	if err != nil {
		t.Fatalf("load the identity: %v", err)
	}
	return runAgent(t, cp.leaks, cp.URL(), id, c)
}

// writeSecretsFile writes the agents' secrets file, mode 0600, outside
// every directory the canary check searches.
func writeSecretsFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secrets.json")
	b, err := json.Marshal(map[string]map[string]string{
		allowedSecret:   {"username": "octo-bot", "token": canary},
		forbiddenSecret: {"username": "octo-bot", "token": canary},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runAgent builds an agent with identity for the control plane at url and
// runs it in a goroutine until Stop, Abort or the end of the test.
func runAgent(t *testing.T, leaks *leakCheck, url string, identity agent.Identity, c agentConfig) *agentProc {
	t.Helper()
	if c.concurrency == 0 {
		c.concurrency = 2
	}
	if c.drainGrace == 0 {
		c.drainGrace = 10 * time.Second
	}
	if c.backend == nil {
		c.backend = newBackend(fast, 0)
	}
	secretsPath := writeSecretsFile(t)
	cfg := agent.Config{
		ControlPlane: url, StateDir: c.stateDir, InsecureAllowWS: true,
		Concurrency: c.concurrency, DrainGrace: c.drainGrace,
		Log:     agent.LogConfig{Format: "json", Level: "debug"},
		Secrets: agent.SecretsConfig{File: &agent.FileSecretsConfig{Path: secretsPath}},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindResolveCredentials)},
			Secrets:  []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: allowedSecret}},
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("agent config: %v", err)
	}
	file, err := secrets.NewFile(secretsPath)
	if err != nil {
		t.Fatalf("file backend: %v", err)
	}
	c.backend.real = file
	p := &agentProc{
		t: t, ID: identity.AgentID, StateDir: c.stateDir, Backend: c.backend,
		frames: &frameLog{}, logs: &lockedBuffer{}, done: make(chan struct{}),
	}
	p.Agent, err = agent.New(agent.Options{
		Config: cfg, Identity: identity, Secrets: secrets.NewSet(c.backend), Logger: newLogger(p.logs),
		Version: "e2e", Observe: p.frames.observe,
		Backoff: backoff.Options{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	leaks.add(func() ([]evidence, error) {
		return []evidence{
			p.frames.evidence("frames of agent " + p.ID),
			{name: "log of agent " + p.ID, data: p.logs.Bytes()},
		}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		p.err = p.Agent.Run(ctx)
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Backend.release()
		p.Agent.Abort()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("agent %s: Run did not return within 10s of Abort", p.ID)
		}
		cancel()
		if t.Failed() {
			t.Logf("agent %s log:\n%s", p.ID, tail(p.logs.String(), 20000))
		}
	})
	return p
}

// Stop cancels Run's context (SIGTERM: drain) and waits for Run.
func (p *agentProc) Stop(timeout time.Duration) error {
	p.t.Helper()
	p.cancel()
	return p.wait(timeout)
}

// wait waits for Run to return and returns its error.
func (p *agentProc) wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("agent %s: Run did not return within %s", p.ID, timeout)
		return nil
	}
}

// returned reports whether Run has returned.
func (p *agentProc) returned() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// --- raw websocket sessions -----------------------------------------------

// enrollRaw registers an agent and enrolls a key pair made here, through
// the enrollment endpoint, for sessions driven by hand.
func (cp *controlPlane) enrollRaw(name string) (string, ed25519.PrivateKey) {
	cp.t.Helper()
	id, token := cp.register(name)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		cp.t.Fatal(err)
	}
	var r protocol.EnrollResponse
	cp.doJSON(http.MethodPost, protocol.EnrollPath, protocol.EnrollRequest{
		Token: token, PublicKey: protocol.EncodePublicKey(pub), Hostname: "raw-host", AgentVersion: "raw",
	}, http.StatusOK, &r)
	if r.AgentID != id {
		cp.t.Fatalf("enrolled as %q, registered as %q", r.AgentID, id)
	}
	return id, priv
}

// dialRaw opens a websocket to the agent endpoint, closed at the end of the
// test.
func (cp *controlPlane) dialRaw() *websocket.Conn {
	cp.t.Helper()
	return dialWS(cp.t, "ws://"+cp.addr+protocol.ConnectPath)
}

func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readMsg reads one message, failing the test on a read error.
func readMsg(t *testing.T, conn *websocket.Conn) *protocol.Message {
	t.Helper()
	m, err := tryReadMsg(conn, 5*time.Second)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

// tryReadMsg reads one message within timeout.
func tryReadMsg(conn *websocket.Conn, timeout time.Duration) (*protocol.Message, error) {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	return protocol.Decode(b)
}

// readCloseCode reads until the peer closes the connection and returns the
// close code.
func readCloseCode(t *testing.T, conn *websocket.Conn) int {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, b, err := conn.ReadMessage()
		if err == nil {
			continue // a frame sent before the close
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("the connection ended without a close frame (%v); last frame %s", err, b)
		}
		return ce.Code
	}
}

func sendMsg(t *testing.T, conn *websocket.Conn, m *protocol.Message) {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	sendFrame(t, conn, b)
}

func sendFrame(t *testing.T, conn *websocket.Conn, b []byte) {
	t.Helper()
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// signedHello is the hello a raw session sends, signed with key over nonce.
func signedHello(agentID string, key ed25519.PrivateKey, nonce string) *protocol.Message {
	sig := ed25519.Sign(key, protocol.SigningPayload(agentID, nonce, protocol.Version))
	return &protocol.Message{Type: protocol.TypeHello, Hello: &protocol.Hello{
		AgentID: agentID, Signature: base64.RawURLEncoding.EncodeToString(sig), ProtocolVersion: protocol.Version,
		AgentVersion: "raw", Hostname: "raw-host", OS: "linux/amd64",
		Kinds: []protocol.JobKind{protocol.KindResolveCredentials}, Concurrency: 1,
	}}
}

// readChallenge reads the control plane's first frame.
func readChallenge(t *testing.T, conn *websocket.Conn) string {
	t.Helper()
	m := readMsg(t, conn)
	if m.Type != protocol.TypeChallenge {
		t.Fatalf("first frame is %s, want challenge", m.Type)
	}
	return m.Challenge.Nonce
}

// openRawSession runs the handshake by hand and returns the open session
// and its welcome.
func (cp *controlPlane) openRawSession(agentID string, key ed25519.PrivateKey) (*websocket.Conn, *protocol.Welcome) {
	cp.t.Helper()
	conn := cp.dialRaw()
	nonce := readChallenge(cp.t, conn)
	sendMsg(cp.t, conn, signedHello(agentID, key, nonce))
	m := readMsg(cp.t, conn)
	if m.Type != protocol.TypeWelcome {
		cp.t.Fatalf("answer to hello is %s, want welcome", m.Type)
	}
	return conn, m.Welcome
}
