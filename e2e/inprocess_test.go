package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/protocol"
)

// requireCode fails unless err carries a *protocol.Error with code, and
// names the code in its text.
func requireCode(t *testing.T, err error, code protocol.ErrorCode) {
	t.Helper()
	var pe *protocol.Error
	if err == nil || !errors.As(err, &pe) || pe.Code != code || !strings.Contains(err.Error(), string(code)) {
		t.Fatalf("error = %v, want one with code %s", err, code)
	}
}

// requireFatal fails unless err is an *agent.FatalError with code.
func requireFatal(t *testing.T, err error, code int) {
	t.Helper()
	var fe *agent.FatalError
	if !errors.As(err, &fe) || fe.Code != code {
		t.Fatalf("Run returned %v, want *agent.FatalError with close code %d", err, code)
	}
}

func requireState(t *testing.T, j protocol.JobView, state protocol.JobState, attempts int) {
	t.Helper()
	if j.State != state || j.Attempts != attempts {
		t.Fatalf("job %s: state %s after %d attempts (error %v), want %s after %d", j.ID, j.State, j.Attempts, j.Error, state, attempts)
	}
}

func requireJobError(t *testing.T, j protocol.JobView, state protocol.JobState, code protocol.ErrorCode) {
	t.Helper()
	if j.State != state || j.Error == nil || j.Error.Code != code {
		t.Fatalf("job %s: state %s, error %v; want %s with %s", j.ID, j.State, j.Error, state, code)
	}
}

// TestCanaryCheckFindsLeaks proves that the check run at the end of every
// test can fail: it finds the canary in each shape it may leak in.
func TestCanaryCheckFindsLeaks(t *testing.T) {
	t.Parallel()
	leakyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(leakyDir, "controlplane.db-wal"), []byte("\x00\x01page"+canary+"\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	files, err := filesUnder(leakyDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ev   evidence
		want bool
	}{
		{"base64 in a log line", evidence{"log", []byte(`{"msg":"auth","header":"` + base64.StdEncoding.EncodeToString([]byte(canary)) + `"}`)}, true},
		{"inside HTTP basic auth", evidence{"frame", []byte("Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("octo-bot:"+canary)))}, true},
		{"raw inside an error message", evidence{"body", []byte(`{"error":{"code":"internal","message":"bad token ` + canary + `"}}`)}, true},
		{"hex in a frame", evidence{"frame", []byte(fmt.Sprintf("%x", canary))}, true},
		{"raw in a store file", files[0], true},
		{"a clean log", evidence{"log", []byte(`{"msg":"job done","fingerprint":"hmac-sha256:0123"}`)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := findCanary([]evidence{tc.ev})
			if got := len(hits) > 0; got != tc.want {
				t.Fatalf("findCanary(%q) = %v, want a hit: %v", tc.ev.data, hits, tc.want)
			}
		})
	}
}

// TestEnrollment: enrollment tokens are single-use and short-lived, and of
// agents racing one token exactly one wins.
func TestEnrollment(t *testing.T) {
	t.Parallel()
	t.Run("used token is refused", func(t *testing.T) {
		t.Parallel()
		cp := newControlPlane(t)
		id, token := cp.register("agent-1")
		got, err := cp.enroll(token, filepath.Join(t.TempDir(), "state"))
		if err != nil {
			t.Fatalf("first enrollment: %v", err)
		}
		if got.AgentID != id {
			t.Fatalf("enrolled as %s, want %s", got.AgentID, id)
		}
		_, err = cp.enroll(token, filepath.Join(t.TempDir(), "state"))
		requireCode(t, err, protocol.CodeTokenInvalid)
	})

	t.Run("expired token is refused", func(t *testing.T) {
		t.Parallel()
		// The control plane's clock runs from the real time plus an offset
		// that the test moves forward: the token expires without a wait.
		var offset atomic.Int64
		now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		cp := newControlPlane(t, func(o *controlplane.Options) {
			o.Now = now
			o.EnrollmentTokenTTL = time.Hour
		})
		_, fresh := cp.register("agent-fresh")
		_, stale := cp.register("agent-stale")
		if _, err := cp.enroll(fresh, filepath.Join(t.TempDir(), "state")); err != nil {
			t.Fatalf("enrollment within the TTL: %v", err)
		}
		offset.Store(int64(time.Hour + time.Minute))
		dir := filepath.Join(t.TempDir(), "state")
		_, err := cp.enroll(stale, dir)
		requireCode(t, err, protocol.CodeTokenInvalid)
		if _, err := os.Stat(filepath.Join(dir, agent.IdentityFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused enrollment left an identity: %v", err)
		}
	})

	t.Run("racing enrollments: exactly one wins", func(t *testing.T) {
		t.Parallel()
		cp := newControlPlane(t)
		id, token := cp.register("agent-1")
		const racers = 10
		dirs := make([]string, racers)
		errs := make([]error, racers)
		ids := make([]agent.Identity, racers)
		for i := range dirs {
			dirs[i] = filepath.Join(t.TempDir(), "state")
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ids[i], errs[i] = cp.enroll(token, dirs[i])
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			if err == nil {
				if winner >= 0 {
					t.Fatalf("racers %d and %d both enrolled with one token", winner, i)
				}
				winner = i
				continue
			}
			requireCode(t, err, protocol.CodeTokenInvalid)
		}
		if winner < 0 {
			t.Fatalf("no racer enrolled: %v", errs)
		}
		if ids[winner].AgentID != id {
			t.Fatalf("the winner enrolled as %s, want %s", ids[winner].AgentID, id)
		}
		// The winner's key is the one the control plane accepts.
		a := startAgent(t, cp, agentConfig{stateDir: dirs[winner]})
		cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
	})
}

// TestSessionAuthBySignature: a session is opened only by a hello signed
// with the enrolled key over this connection's nonce.
func TestSessionAuthBySignature(t *testing.T) {
	t.Parallel()
	t.Run("hello signed with another key is refused", func(t *testing.T) {
		t.Parallel()
		cp := newControlPlane(t)
		id, _ := cp.enrollRaw("raw-1")
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		conn := cp.dialRaw()
		nonce := readChallenge(t, conn)
		sendMsg(t, conn, signedHello(id, other, nonce))
		if code := readCloseCode(t, conn); code != protocol.CloseAuthFailed {
			t.Fatalf("close code %d, want %d (auth failed)", code, protocol.CloseAuthFailed)
		}
		if got := cp.agent(id).Status; got != protocol.AgentOffline {
			t.Fatalf("agent status %s after a refused hello, want offline", got)
		}
	})

	t.Run("agent with another key stops for good", func(t *testing.T) {
		t.Parallel()
		cp := newControlPlane(t)
		a := startAgent(t, cp, agentConfig{name: "agent-key"})
		cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
		if err := a.Stop(10 * time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		id, err := agent.LoadIdentity(a.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		id.PrivateKey = make([]byte, ed25519.SeedSize)
		rand.Read(id.PrivateKey)
		b := runAgent(t, cp.leaks, cp.URL(), id, agentConfig{stateDir: a.StateDir})
		requireFatal(t, b.wait(5*time.Second), protocol.CloseAuthFailed)
	})

	t.Run("replayed hello is refused", func(t *testing.T) {
		t.Parallel()
		cp := newControlPlane(t)
		a := startAgent(t, cp, agentConfig{name: "agent-replay"})
		cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
		captured := a.frames.first("out", protocol.TypeHello)
		if captured == nil {
			t.Fatal("no hello captured")
		}
		conn := cp.dialRaw()
		if nonce := readChallenge(t, conn); strings.Contains(string(captured), nonce) {
			t.Fatal("the new challenge repeats the captured session's nonce")
		}
		sendFrame(t, conn, captured)
		if code := readCloseCode(t, conn); code != protocol.CloseAuthFailed {
			t.Fatalf("close code %d, want %d (auth failed)", code, protocol.CloseAuthFailed)
		}
		// The real agent's session is untouched.
		if v := cp.agent(a.ID); v.Status != protocol.AgentOnline {
			t.Fatalf("the agent is %s after the replay attempt, want online", v.Status)
		}
		if a.returned() {
			t.Fatalf("the agent stopped: %v", a.err)
		}
	})
}

// TestSubmitAndWait: a resolve_credentials job submitted with ?wait= comes
// back succeeded with what was found and a fingerprint, never the value;
// GET and the list agree.
func TestSubmitAndWait(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	a := startAgent(t, cp, agentConfig{name: "agent-1"})
	cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)

	j := cp.submit(a.ID, allowedSecret, 0, 10*time.Second)
	requireState(t, j, protocol.JobSucceeded, 1)
	if j.Result == nil || j.Result.Credentials == nil {
		t.Fatalf("job %s has no credentials output: %+v", j.ID, j.Result)
	}
	creds := j.Result.Credentials
	if want := []string{"username", "password"}; !slices.Equal(creds.KeysFound, want) {
		t.Fatalf("keys_found = %v, want %v", creds.KeysFound, want)
	}
	if creds.Backend != protocol.BackendFile || creds.Reference.SecretName != allowedSecret {
		t.Fatalf("output names %s:%s, want file:%s", creds.Backend, creds.Reference.SecretName, allowedSecret)
	}
	if !strings.HasPrefix(creds.Fingerprint, "hmac-sha256:") || len(creds.Fingerprint) != len("hmac-sha256:")+24 {
		t.Fatalf("fingerprint %q is not hmac-sha256:<24 hex>", creds.Fingerprint)
	}
	if j.FinishedAt == nil || j.DurationMS == nil {
		t.Fatalf("a finished job without finished_at or duration_ms: %+v", j)
	}

	got := cp.getJob(j.ID, 0)
	if got.State != j.State || got.Result == nil || got.Result.Credentials.Fingerprint != creds.Fingerprint ||
		!got.FinishedAt.Equal(*j.FinishedAt) || got.Attempts != 1 {
		t.Fatalf("GET disagrees with the submit answer:\n got %+v\nwant %+v", got, j)
	}

	listed := cp.listJobs("agent_id=" + a.ID)
	if len(listed) != 1 || listed[0].ID != j.ID || listed[0].State != protocol.JobSucceeded {
		t.Fatalf("list for the agent = %+v, want just %s succeeded", listed, j.ID)
	}
	if l := cp.listJobs("agent_id=" + a.ID + "&state=failed"); len(l) != 0 {
		t.Fatalf("failed jobs of the agent = %+v, want none", l)
	}

	// The same secret on the same agent gives the same fingerprint.
	j2 := cp.submit(a.ID, allowedSecret, 0, 10*time.Second)
	requireState(t, j2, protocol.JobSucceeded, 1)
	if j2.Result.Credentials.Fingerprint != creds.Fingerprint {
		t.Fatalf("fingerprints differ for one secret: %s, %s", creds.Fingerprint, j2.Result.Credentials.Fingerprint)
	}
	if n := a.Backend.calls.Load(); n != 2 {
		t.Fatalf("the secret was read %d times for two jobs", n)
	}
}

// TestCancelMidRun: canceling a running job ends it canceled at once,
// cancels its context on the agent, refuses a second cancel, and the
// agent's late result is acknowledged but not recorded.
func TestCancelMidRun(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	a := startAgent(t, cp, agentConfig{name: "agent-1", backend: newBackend(gated, 0)})
	cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)

	j := cp.submit(a.ID, allowedSecret, jobTimeout, 0)
	waitSignal(t, a.Backend.started, 5*time.Second, "the job to start reading its secret")
	cp.waitJobState(j.ID, protocol.JobRunning, 5*time.Second)

	status, body := cp.cancel(j.ID)
	if status != http.StatusOK {
		t.Fatalf("cancel: status %d: %s", status, body)
	}
	canceled := cp.getJob(j.ID, 0)
	requireJobError(t, canceled, protocol.JobCanceled, protocol.CodeCanceled)

	waitSignal(t, a.Backend.cancels, 5*time.Second, "the job's context on the agent to be canceled")
	eventually(t, 5*time.Second, "the agent's result to be acknowledged", func() bool {
		return a.frames.count("in", protocol.TypeResultAck, j.ID) == 1
	})
	results := a.frames.messages("out", protocol.TypeResult)
	if len(results) != 1 || results[0].Result.JobID != j.ID || results[0].Result.Error == nil ||
		results[0].Result.Error.Code != protocol.CodeCanceled {
		t.Fatalf("the agent's results = %+v, want one canceled result for %s", results, j.ID)
	}

	status, body = cp.cancel(j.ID)
	if status != http.StatusConflict {
		t.Fatalf("second cancel: status %d, want 409: %s", status, body)
	}
	if e := apiError(t, body); e.Code != protocol.CodeJobNotCancellable {
		t.Fatalf("second cancel: code %s, want %s", e.Code, protocol.CodeJobNotCancellable)
	}

	// The late result was not recorded: the job is as the cancel left it.
	got := cp.getJob(j.ID, 0)
	if got.State != protocol.JobCanceled || got.Result != nil || got.Error == nil ||
		got.Error.Message != canceled.Error.Message || !got.FinishedAt.Equal(*canceled.FinishedAt) {
		t.Fatalf("after the agent's result: %+v, want it as canceled: %+v", got, canceled)
	}

	// The outbox is empty: the drain has nothing to flush, and the result
	// was never sent again.
	if err := a.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if strings.Contains(a.logs.String(), "results not acknowledged before exit") {
		t.Fatalf("the agent exited holding unacknowledged results")
	}
	if n := a.frames.count("out", protocol.TypeResult, j.ID); n != 1 {
		t.Fatalf("the result was sent %d times, want once", n)
	}
}

// TestAgentKilledMidJob: a job whose agent dies stays open while the agent
// is away; when the agent comes back without it, it is dispatched again
// (attempt 2) and succeeds; when it never comes back, the job expires at
// its deadline.
func TestAgentKilledMidJob(t *testing.T) {
	t.Parallel()

	// kill starts a slow job on a new agent and kills the agent mid-job:
	// no result gets out.
	kill := func(t *testing.T, cp *controlPlane, timeout time.Duration) (*agentProc, protocol.JobView) {
		t.Helper()
		a := startAgent(t, cp, agentConfig{name: "agent-1", backend: newBackend(gatedAndHeld, 0)})
		cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
		j := cp.submit(a.ID, allowedSecret, timeout, 0)
		waitSignal(t, a.Backend.started, 5*time.Second, "the job to start")
		cp.waitJobState(j.ID, protocol.JobRunning, 5*time.Second)

		a.Agent.Abort()
		waitSignal(t, a.Backend.cancels, 5*time.Second, "the kill to cancel the job")
		cp.waitAgentStatus(a.ID, protocol.AgentOffline, 5*time.Second)
		eventually(t, 5*time.Second, "the agent to see its session gone", func() bool { return !a.Agent.Status().Connected })
		// Only now may the job's work end: its result has no session to go out on.
		a.Backend.release()
		if err := a.wait(5 * time.Second); err != nil {
			t.Fatalf("Run after Abort: %v", err)
		}
		if n := len(a.frames.messages("out", protocol.TypeResult)); n != 0 {
			t.Fatalf("the killed agent sent %d results", n)
		}
		return a, j
	}

	t.Run("agent comes back: dispatched again", func(t *testing.T) {
		t.Parallel()
		cp := newControlPlane(t)
		a, j := kill(t, cp, jobTimeout)
		away := cp.getJob(j.ID, 300*time.Millisecond)
		if away.State.Terminal() || away.Attempts != 1 {
			t.Fatalf("while the agent is away the job is %s after %d attempts, want open after 1", away.State, away.Attempts)
		}

		// A new process of the same agent (same identity), with nothing running.
		b := startAgent(t, cp, agentConfig{stateDir: a.StateDir})
		if b.ID != a.ID {
			t.Fatalf("the restarted agent is %s, want %s", b.ID, a.ID)
		}
		final := cp.waitJob(j.ID, 10*time.Second)
		requireState(t, final, protocol.JobSucceeded, 2)
		if n := b.Backend.calls.Load(); n != 1 {
			t.Fatalf("the new process read the secret %d times, want 1", n)
		}
		jobs := b.frames.messages("in", protocol.TypeJob)
		if len(jobs) != 1 || jobs[0].Job.JobID != j.ID || jobs[0].Job.Attempt != 2 {
			t.Fatalf("the new process received %+v, want %s as attempt 2", jobs, j.ID)
		}
	})

	t.Run("agent never comes back: expired", func(t *testing.T) {
		t.Parallel()
		cp := newControlPlane(t)
		_, j := kill(t, cp, 3*time.Second)
		final := cp.waitJob(j.ID, 10*time.Second)
		requireJobError(t, final, protocol.JobExpired, protocol.CodeTimeout)
		if final.FinishedAt.Before(final.Deadline) {
			t.Fatalf("expired at %s, before its deadline %s", final.FinishedAt, final.Deadline)
		}
	})
}

// TestControlPlaneRestart: the control plane restarts on its data
// directory while two agents each have a job in flight and one queued.
// The agents come back, every job succeeds, each result is recorded once,
// and no accepted job is lost.
func TestControlPlaneRestart(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	a1 := startAgent(t, cp, agentConfig{name: "agent-1", concurrency: 1, backend: newBackend(gated, 0)})
	a2 := startAgent(t, cp, agentConfig{name: "agent-2", concurrency: 1, backend: newBackend(gated, 0)})
	agents := []*agentProc{a1, a2}
	sessions := map[string]string{}
	for _, a := range agents {
		sessions[a.ID] = cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second).SessionID
	}
	// Per agent: one job in flight, one queued behind it (concurrency 1).
	inflight := map[string]string{}
	var all []string
	for _, a := range agents {
		j := cp.submit(a.ID, allowedSecret, jobTimeout, 0)
		q := cp.submit(a.ID, allowedSecret, jobTimeout, 0)
		inflight[a.ID] = j.ID
		all = append(all, j.ID, q.ID)
	}
	for _, a := range agents {
		waitSignal(t, a.Backend.started, 5*time.Second, "agent "+a.ID+"'s job to start")
		cp.waitJobState(inflight[a.ID], protocol.JobRunning, 5*time.Second)
	}

	cp.Restart(func() {
		// agent-2's job finishes while the control plane is down: its
		// result waits in the agent's outbox.
		eventually(t, 5*time.Second, "agent-2 to lose its session", func() bool { return !a2.Agent.Status().Connected })
		a2.Backend.release()
		eventually(t, 5*time.Second, "agent-2's job to finish", func() bool { return a2.Backend.returned.Load() == 1 })
	})

	for _, a := range agents {
		v := cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
		if v.SessionID == sessions[a.ID] {
			t.Fatalf("agent %s kept session %s across the restart", a.ID, v.SessionID)
		}
	}
	// agent-1's job finishes after the restart.
	a1.Backend.release()

	for _, id := range all {
		final := cp.waitJob(id, 10*time.Second)
		requireState(t, final, protocol.JobSucceeded, 1)
		again := cp.getJob(id, 0)
		if !again.FinishedAt.Equal(*final.FinishedAt) || again.State != final.State {
			t.Fatalf("job %s changed after it ended: %+v, then %+v", id, final, again)
		}
	}
	for _, a := range agents {
		for _, j := range cp.listJobs("agent_id=" + a.ID) {
			// Results may be sent again after a reconnect; each is
			// acknowledged, and recorded once (attempts 1, finished_at fixed).
			sent, acked := a.frames.count("out", protocol.TypeResult, j.ID), a.frames.count("in", protocol.TypeResultAck, j.ID)
			t.Logf("agent %s job %s: %d result frames sent, %d acks received", a.ID, j.ID, sent, acked)
			if sent < 1 || acked < 1 || acked > sent {
				t.Fatalf("job %s: %d results sent, %d acked", j.ID, sent, acked)
			}
		}
	}
	// What each agent told the new control plane in its hello.
	hello := func(a *agentProc) *protocol.Hello {
		hs := a.frames.messages("out", protocol.TypeHello)
		return hs[len(hs)-1].Hello
	}
	if h := hello(a1); !slices.Contains(h.Running, inflight[a1.ID]) {
		t.Fatalf("agent-1's hello after the restart lists running %v, want %s", h.Running, inflight[a1.ID])
	}
	if h := hello(a2); !slices.Contains(h.Held, inflight[a2.ID]) {
		t.Fatalf("agent-2's hello after the restart lists held %v, want %s", h.Held, inflight[a2.ID])
	}
	// No accepted job lost: every job submitted before the restart is there, ended.
	listed := map[string]protocol.JobState{}
	for _, j := range cp.listJobs("limit=1000") {
		listed[j.ID] = j.State
	}
	for _, id := range all {
		if st, ok := listed[id]; !ok || !st.Terminal() {
			t.Fatalf("job %s after the restart: listed %v, state %s", id, ok, st)
		}
	}
}

// TestDrainWithJobInFlight: stopping the agent (SIGTERM) drains it: the
// running job finishes within the grace and is recorded, a job submitted
// meanwhile is not sent to it, Run returns nil and the session closes
// normally.
func TestDrainWithJobInFlight(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	a := startAgent(t, cp, agentConfig{name: "agent-1", drainGrace: 10 * time.Second, backend: newBackend(gated, 0)})
	cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
	j1 := cp.submit(a.ID, allowedSecret, jobTimeout, 0)
	waitSignal(t, a.Backend.started, 5*time.Second, "the job to start")
	cp.waitJobState(j1.ID, protocol.JobRunning, 5*time.Second)

	a.cancel() // SIGTERM
	cp.waitAgentStatus(a.ID, protocol.AgentDraining, 5*time.Second)
	j2 := cp.submit(a.ID, allowedSecret, jobTimeout, 0)
	if got := cp.getJob(j2.ID, 300*time.Millisecond); got.State != protocol.JobQueued || got.Attempts != 0 {
		t.Fatalf("a job submitted while the agent drains is %s after %d attempts, want queued", got.State, got.Attempts)
	}

	a.Backend.release() // the running job finishes within the grace
	if err := a.wait(10 * time.Second); err != nil {
		t.Fatalf("Run after a drain returned %v, want nil", err)
	}
	final := cp.waitJob(j1.ID, 5*time.Second)
	requireState(t, final, protocol.JobSucceeded, 1)
	cp.waitAgentStatus(a.ID, protocol.AgentOffline, 5*time.Second)

	if got := cp.getJob(j2.ID, 0); got.State != protocol.JobQueued || got.Attempts != 0 {
		t.Fatalf("after the drain the second job is %s after %d attempts, want queued", got.State, got.Attempts)
	}
	if n := a.frames.count("in", protocol.TypeJob, j2.ID); n != 0 {
		t.Fatalf("the draining agent received the second job %d times", n)
	}
	if len(a.frames.messages("out", protocol.TypeDraining)) == 0 {
		t.Fatal("the agent never said it was draining")
	}
	if strings.Contains(a.logs.String(), "results not acknowledged before exit") {
		t.Fatal("the agent exited holding unacknowledged results")
	}
	eventually(t, 5*time.Second, "the control plane to log a normal close", func() bool {
		return hasLog(cp.logs.Bytes(), "agent disconnected", map[string]string{"agent_id": a.ID, "reason": "agent closed: agent stopped"})
	})
}

// TestRevocationClosesSession: revoking an agent ends its live session at
// once, fails its jobs with agent_revoked, and refuses it from then on.
func TestRevocationClosesSession(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	a := startAgent(t, cp, agentConfig{name: "agent-1", concurrency: 1, backend: newBackend(gated, 0)})
	cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
	running := cp.submit(a.ID, allowedSecret, jobTimeout, 0)
	queued := cp.submit(a.ID, allowedSecret, jobTimeout, 0)
	waitSignal(t, a.Backend.started, 5*time.Second, "the job to start")
	cp.waitJobState(running.ID, protocol.JobRunning, 5*time.Second)

	start := time.Now()
	var v protocol.AgentView
	cp.doJSON(http.MethodDelete, "/api/v1/agents/"+a.ID, nil, http.StatusOK, &v)
	if v.Status != protocol.AgentRevoked {
		t.Fatalf("DELETE answered status %s, want revoked", v.Status)
	}
	requireFatal(t, a.wait(2*time.Second), protocol.CloseRevoked)
	t.Logf("Run returned %s after the revocation", time.Since(start))

	if got := cp.agent(a.ID).Status; got != protocol.AgentRevoked {
		t.Fatalf("status %s, want revoked", got)
	}
	for _, id := range []string{running.ID, queued.ID} {
		requireJobError(t, cp.getJob(id, 0), protocol.JobFailed, protocol.CodeAgentRevoked)
	}
	status, body := cp.do(http.MethodPost, "/api/v1/jobs", protocol.SubmitJobRequest{
		AgentID: a.ID, Kind: protocol.KindResolveCredentials, Params: resolveParams(allowedSecret),
	})
	if status != http.StatusConflict || apiError(t, body).Code != protocol.CodeAgentRevoked {
		t.Fatalf("a job for a revoked agent: %d %s, want 409 agent_revoked", status, body)
	}

	// The same identity trying again is refused for good.
	b := startAgent(t, cp, agentConfig{stateDir: a.StateDir})
	requireFatal(t, b.wait(5*time.Second), protocol.CloseRevoked)
}

// TestBadInputControlPlane: malformed, unknown and misdirected messages get
// error replies and leave the session open; an oversized frame closes only
// that connection (1009); bad API input is refused naming the field.
func TestBadInputControlPlane(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	id, key := cp.enrollRaw("raw-1")
	conn, _ := cp.openRawSession(id, key)
	cp.waitAgentStatus(id, protocol.AgentOnline, 5*time.Second)

	expectError := func(code protocol.ErrorCode) *protocol.ErrorBody {
		t.Helper()
		m := readMsg(t, conn)
		if m.Type != protocol.TypeError || m.Error.Code != code {
			t.Fatalf("reply %s %+v, want an error with %s", m.Type, m.Error, code)
		}
		return m.Error
	}

	sendFrame(t, conn, []byte(`{not json`))
	expectError(protocol.CodeMalformedMessage)

	sendFrame(t, conn, []byte(`{"type":"frobnicate","id":"m-2"}`))
	if e := expectError(protocol.CodeUnknownType); e.RefID != "m-2" {
		t.Fatalf("the reply refers to %q, want m-2", e.RefID)
	}

	// A job is the control plane's message, not an agent's.
	sendMsg(t, conn, &protocol.Message{Type: protocol.TypeJob, ID: "m-3", Job: &protocol.Job{
		JobID: "job_from_agent", Kind: protocol.KindResolveCredentials, Params: resolveParams(allowedSecret),
		Deadline: time.Now().Add(time.Minute), Attempt: 1,
	}})
	if e := expectError(protocol.CodeUnknownType); e.RefType != protocol.TypeJob || e.RefID != "m-3" {
		t.Fatalf("the reply refers to %s %q, want job m-3", e.RefType, e.RefID)
	}

	// A result for a job that does not exist is acknowledged and dropped.
	now := time.Now()
	sendMsg(t, conn, &protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{
		JobID: "job_unknown", Attempt: 1, Error: protocol.Errorf(protocol.CodeInternal, "made up"), StartedAt: now, FinishedAt: now,
	}})
	if m := readMsg(t, conn); m.Type != protocol.TypeResultAck || m.ResultAck.JobID != "job_unknown" {
		t.Fatalf("reply to a result for an unknown job: %s %+v, want result_ack", m.Type, m)
	}
	if status, _ := cp.do(http.MethodGet, "/api/v1/jobs/job_unknown", nil); status != http.StatusNotFound {
		t.Fatalf("GET the made-up job: %d, want 404", status)
	}
	if got := cp.agent(id).Status; got != protocol.AgentOnline {
		t.Fatalf("after bad messages the session is %s, want online", got)
	}

	// An oversized frame closes that connection with 1009, and only it.
	big := bytes.Repeat([]byte("x"), protocol.MaxFrameSize+1)
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = conn.WriteMessage(websocket.TextMessage, big) // the peer may stop reading midway
	if code := readCloseCode(t, conn); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d after an oversized frame, want %d", code, websocket.CloseMessageTooBig)
	}
	cp.waitAgentStatus(id, protocol.AgentOffline, 5*time.Second)
	if status, body := cp.do(http.MethodGet, "/healthz", nil); status != http.StatusOK {
		t.Fatalf("/healthz after an oversized frame: %d %s", status, body)
	}
	conn2, _ := cp.openRawSession(id, key)
	cp.waitAgentStatus(id, protocol.AgentOnline, 5*time.Second)
	conn2.Close()

	// Bad API input: refused with invalid_params naming the field.
	for _, tc := range []struct {
		name string
		req  protocol.SubmitJobRequest
		want string
	}{
		{"unknown kind", protocol.SubmitJobRequest{AgentID: id, Kind: "frobnicate", Params: resolveParams(allowedSecret)}, "frobnicate"},
		{"missing secret", protocol.SubmitJobRequest{AgentID: id, Kind: protocol.KindResolveCredentials}, "params.secret"},
		{"bad backend", protocol.SubmitJobRequest{AgentID: id, Kind: protocol.KindResolveCredentials,
			Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "vault", SecretName: "x", PasswordKey: "y"}}}, "secret.backend"},
		{"missing password key", protocol.SubmitJobRequest{AgentID: id, Kind: protocol.KindResolveCredentials,
			Params: protocol.Params{Secret: &protocol.SecretRef{Backend: protocol.BackendFile, SecretName: "x"}}}, "secret.password_key"},
	} {
		status, body := cp.do(http.MethodPost, "/api/v1/jobs", tc.req)
		if status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", tc.name, status, body)
			continue
		}
		if e := apiError(t, body); e.Code != protocol.CodeInvalidParams || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s: error %+v, want invalid_params naming %q", tc.name, e, tc.want)
		}
	}
	if l := cp.listJobs("agent_id=" + id); len(l) != 0 {
		t.Fatalf("refused submissions stored jobs: %+v", l)
	}
}

// TestBadInputAgentSide: a control plane that sends the agent malformed,
// unknown and misdirected messages gets error replies and the agent keeps
// serving; an oversized frame ends only that session and the agent
// reconnects. The control plane here is scripted by hand.
func TestBadInputAgentSide(t *testing.T) {
	t.Parallel()
	leaks := newLeakCheck(t)
	conns := make(chan *websocket.Conn, 16)
	stop := make(chan struct{})
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.SetReadLimit(protocol.MaxFrameSize)
		select {
		case conns <- c: // the test drives it; the handler may return
		case <-stop:
			c.Close()
		}
	}))
	t.Cleanup(func() {
		close(stop)
		fake.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	fp := make([]byte, 32)
	rand.Read(fp)
	id := agent.Identity{AgentID: "agt_scripted", PrivateKey: priv.Seed(), FingerprintKey: fp}
	a := runAgent(t, leaks, fake.URL, id, agentConfig{stateDir: t.TempDir()})

	accept := func() *websocket.Conn {
		t.Helper()
		select {
		case c := <-conns:
			t.Cleanup(func() { c.Close() })
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("the agent did not connect")
			return nil
		}
	}
	// handshake plays the control plane's side and checks the signature.
	handshake := func(c *websocket.Conn) {
		t.Helper()
		nonce := base64.RawURLEncoding.EncodeToString(make([]byte, protocol.NonceSize))
		sendMsg(t, c, &protocol.Message{Type: protocol.TypeChallenge, Challenge: &protocol.Challenge{Nonce: nonce, ServerTime: time.Now()}})
		m := readMsg(t, c)
		if m.Type != protocol.TypeHello || m.Hello.AgentID != id.AgentID {
			t.Fatalf("got %s, want the agent's hello", m.Type)
		}
		sig, _ := base64.RawURLEncoding.DecodeString(m.Hello.Signature)
		if !ed25519.Verify(pub, protocol.SigningPayload(id.AgentID, nonce, protocol.Version), sig) {
			t.Fatal("the hello's signature does not verify")
		}
		// A long heartbeat: this control plane does not ping.
		sendMsg(t, c, &protocol.Message{Type: protocol.TypeWelcome, Welcome: &protocol.Welcome{
			SessionID: "ses_scripted", HeartbeatInterval: protocol.Duration(time.Minute), ServerTime: time.Now(),
		}})
	}
	// next reads the agent's next message other than a heartbeat.
	next := func(c *websocket.Conn) *protocol.Message {
		t.Helper()
		for {
			if m := readMsg(t, c); m.Type != protocol.TypeHeartbeat {
				return m
			}
		}
	}
	expectError := func(c *websocket.Conn, code protocol.ErrorCode) *protocol.ErrorBody {
		t.Helper()
		m := next(c)
		if m.Type != protocol.TypeError || m.Error.Code != code {
			t.Fatalf("reply %s %+v, want an error with %s", m.Type, m.Error, code)
		}
		return m.Error
	}

	c := accept()
	handshake(c)
	sendFrame(t, c, []byte(`{"type":"job","job":`))
	expectError(c, protocol.CodeMalformedMessage)
	sendFrame(t, c, []byte(`{"type":"frobnicate","id":"x-1"}`))
	if e := expectError(c, protocol.CodeUnknownType); e.RefID != "x-1" {
		t.Fatalf("the reply refers to %q, want x-1", e.RefID)
	}
	// welcome is not a message of an open session; hello is the agent's own.
	sendMsg(t, c, &protocol.Message{Type: protocol.TypeWelcome, ID: "x-2", Welcome: &protocol.Welcome{
		SessionID: "ses_again", HeartbeatInterval: protocol.Duration(time.Minute), ServerTime: time.Now(),
	}})
	if e := expectError(c, protocol.CodeUnknownType); e.RefType != protocol.TypeWelcome {
		t.Fatalf("the reply refers to %s, want welcome", e.RefType)
	}
	// A job of a kind this agent does not know is rejected, not a crash.
	deadline := time.Now().Add(time.Minute)
	sendMsg(t, c, &protocol.Message{Type: protocol.TypeJob, Job: &protocol.Job{JobID: "job_odd", Kind: "frobnicate", Deadline: deadline, Attempt: 1}})
	if m := next(c); m.Type != protocol.TypeRejected || m.Rejected.JobID != "job_odd" || m.Rejected.Error.Code != protocol.CodeKindNotAllowed {
		t.Fatalf("reply to an unknown kind: %s %+v, want rejected kind_not_allowed", m.Type, m)
	}
	// And it still does its work.
	sendMsg(t, c, &protocol.Message{Type: protocol.TypeJob, Job: &protocol.Job{
		JobID: "job_ok", Kind: protocol.KindResolveCredentials, Params: resolveParams(allowedSecret), Deadline: deadline, Attempt: 1,
	}})
	// accepted, then the result (DESIGN §3), even for a job this fast.
	if m := next(c); m.Type != protocol.TypeAccepted || m.Accepted.JobID != "job_ok" {
		t.Fatalf("got %s %+v, want accepted before the result", m.Type, m)
	}
	if m := next(c); m.Type != protocol.TypeResult || m.Result.JobID != "job_ok" || !m.Result.OK || m.Result.Output.Credentials == nil {
		t.Fatalf("got %s %+v, want an ok result", m.Type, m)
	}
	sendMsg(t, c, &protocol.Message{Type: protocol.TypeResultAck, ResultAck: &protocol.ResultAck{JobID: "job_ok"}})

	// An oversized frame: the agent closes that session with 1009 ...
	big := bytes.Repeat([]byte("x"), protocol.MaxFrameSize+1)
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.WriteMessage(websocket.TextMessage, big)
	if code := readCloseCode(t, c); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d after an oversized frame, want %d", code, websocket.CloseMessageTooBig)
	}
	// ... and comes back.
	c2 := accept()
	handshake(c2)
	if a.returned() {
		t.Fatalf("the agent stopped: %v", a.err)
	}
	if n := a.Backend.calls.Load(); n != 1 {
		t.Fatalf("the secret was read %d times, want once", n)
	}
}

// TestHeartbeatOffline: a session that goes silent (answers no ping, sends
// nothing) is marked offline within three heartbeat intervals.
func TestHeartbeatOffline(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	id, key := cp.enrollRaw("raw-1")
	_, welcome := cp.openRawSession(id, key) // never read again: no pong goes back
	silentSince := time.Now()
	if got := welcome.HeartbeatInterval.D(); got != heartbeat {
		t.Fatalf("welcome says heartbeat %s, want %s", got, heartbeat)
	}
	cp.waitAgentStatus(id, protocol.AgentOnline, 5*time.Second)
	cp.waitAgentStatus(id, protocol.AgentOffline, 5*time.Second)
	elapsed := time.Since(silentSince)
	// Three intervals, plus slack for a busy machine running -race.
	if limit := 3*heartbeat + time.Second; elapsed > limit {
		t.Fatalf("offline after %s, want within %s", elapsed, limit)
	}
	t.Logf("offline %s after going silent", elapsed)
	eventually(t, 5*time.Second, "the control plane to log the missed heartbeats", func() bool {
		return hasLog(cp.logs.Bytes(), "agent disconnected", map[string]string{"agent_id": id, "reason": "no heartbeat for " + (3 * heartbeat).String()})
	})
}

// TestPolicyRefusal: a job for a secret outside the agent's policy fails
// with secret_not_allowed, names the setting, and the secret is never read.
func TestPolicyRefusal(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	a := startAgent(t, cp, agentConfig{name: "agent-1"})
	cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
	j := cp.submit(a.ID, forbiddenSecret, 0, 10*time.Second)
	requireJobError(t, j, protocol.JobFailed, protocol.CodeSecretNotAllowed)
	if !strings.Contains(j.Error.Message, "policy.secrets") {
		t.Fatalf("the refusal %q does not name policy.secrets", j.Error.Message)
	}
	if j.Result != nil {
		t.Fatalf("a refused job has a result: %+v", j.Result)
	}
	if n := a.Backend.calls.Load(); n != 0 {
		t.Fatalf("the secret backend was called %d times for a refused job", n)
	}
}

// TestAgentConcurrency: an agent with concurrency 2 never runs more than two
// jobs at once, and all five jobs succeed without a busy rejection.
func TestAgentConcurrency(t *testing.T) {
	t.Parallel()
	cp := newControlPlane(t)
	a := startAgent(t, cp, agentConfig{name: "agent-1", concurrency: 2, backend: newBackend(fast, 300*time.Millisecond)})
	if v := cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second); v.Concurrency != 2 {
		t.Fatalf("the agent announced concurrency %d, want 2", v.Concurrency)
	}
	var ids []string
	for range 5 {
		ids = append(ids, cp.submit(a.ID, allowedSecret, jobTimeout, 0).ID)
	}
	for _, id := range ids {
		requireState(t, cp.waitJob(id, 15*time.Second), protocol.JobSucceeded, 1)
	}
	if got := a.Backend.maxRunning.Load(); got != 2 {
		t.Fatalf("at most %d jobs ran at once, want exactly 2", got)
	}
	if n := a.Backend.calls.Load(); n != 5 {
		t.Fatalf("%d secret reads for 5 jobs", n)
	}
	if r := a.frames.messages("out", protocol.TypeRejected); len(r) != 0 {
		t.Fatalf("the agent rejected %d jobs: the control plane sent more than its concurrency", len(r))
	}
}
