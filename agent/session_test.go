package agent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// quiet is how long a test waits to see that the agent sends nothing. Only
// negative checks use it.
const quiet = 300 * time.Millisecond

func TestHello(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{concurrency: 3, kinds: protocol.JobKinds})
	// A kind the policy allows but this build does not implement is not
	// offered (whatever the build implements today).
	delete(ta.a.handlers, protocol.KindListOrganizations)
	ta.start(t)
	s := f.session()
	h := s.hello
	var want []protocol.JobKind
	for _, k := range protocol.JobKinds {
		if ta.a.handlers[k] != nil {
			want = append(want, k)
		}
	}
	if !slices.Equal(h.Kinds, want) || !slices.Contains(h.Kinds, protocol.KindResolveCredentials) || slices.Contains(h.Kinds, protocol.KindListOrganizations) {
		t.Errorf("hello kinds %v, want policy ∩ implemented = %v", h.Kinds, want)
	}
	host, _ := os.Hostname()
	if h.AgentID != ta.id.AgentID || h.ProtocolVersion != protocol.Version || h.Concurrency != 3 || h.AgentVersion != "test-1.2.3" ||
		h.Hostname != host || h.OS != runtime.GOOS+"/"+runtime.GOARCH || len(h.Running) != 0 || len(h.Held) != 0 {
		t.Errorf("hello %+v", h)
	}
	if len(h.Backends) != 1 || h.Backends[0].Name != protocol.BackendFile || !strings.HasSuffix(h.Backends[0].Settings["path"], "secrets.json") {
		t.Errorf("hello backends %+v, want the file backend with its path", h.Backends)
	}
	// The fake verified the signature (it refuses otherwise); the status says
	// connected.
	eventually(t, 5*time.Second, func() (bool, string) {
		st := ta.a.Status()
		return st.Connected && st.SessionID == "ses_1", "status not connected to ses_1"
	})

	// The agent sends heartbeats with its load.
	timer := time.After(5 * time.Second)
	for got := false; !got; {
		select {
		case m := <-s.in:
			if m.Type == protocol.TypeHeartbeat {
				got = m.Heartbeat.Running == 0
			}
		case <-timer:
			t.Fatal("no heartbeat within 5s (interval 1s)")
		}
	}

	// A job of the unimplemented kind is refused with kind_not_allowed.
	j := jobMsg("job_orgs", secretFast, time.Minute)
	j.Job.Kind = protocol.KindListOrganizations
	j.Job.Params.GitHubKind, j.Job.Params.GitHubURL = protocol.GitHubCloud, "https://github.com"
	r := s.expectRejectedAfter(j, protocol.CodeKindNotAllowed)
	if !strings.Contains(r.Error.Message, "upgrade the agent") {
		t.Errorf("message %q, want it to say the build does not run the kind", r.Error.Message)
	}
}

// expectRejectedAfter sends m and expects its rejection.
func (s *cpSession) expectRejectedAfter(m *protocol.Message, code protocol.ErrorCode) *protocol.Rejected {
	s.t.Helper()
	s.send(m)
	return s.expectRejected(m.Job.JobID, code)
}

func TestJobResult(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	ta.start(t)
	s := f.session()
	j := jobMsg("job_ok", secretFast, time.Minute)
	j.Job.Attempt = 3
	s.send(j)
	s.expectAccepted("job_ok")
	r := s.expectResult("job_ok")
	if !r.OK || r.Error != nil || r.Attempt != 3 || r.Output == nil || r.Output.Credentials == nil || r.StartedAt.IsZero() || r.FinishedAt.Before(r.StartedAt) {
		t.Fatalf("result %+v, want ok with credentials, attempt 3, times", r)
	}
	c := r.Output.Credentials
	if c.Backend != protocol.BackendFile || c.Reference.SecretName != secretFast || !slices.Equal(c.KeysFound, []string{"username", "password"}) {
		t.Errorf("credentials %+v", c)
	}
	// The fingerprint is the HMAC of the values under the identity's key:
	// the canary was read, and only its fingerprint travels.
	m := hmac.New(sha256.New, ta.id.FingerprintKey)
	m.Write([]byte("bot\x00" + canary))
	if want := "hmac-sha256:" + hex.EncodeToString(m.Sum(nil)[:12]); c.Fingerprint != want {
		t.Errorf("fingerprint %q, want %q", c.Fingerprint, want)
	}
	s.ack("job_ok")

	// The same secret gives the same fingerprint; errors are coded.
	s.send(jobMsg("job_ok2", secretFast, time.Minute))
	s.expectAccepted("job_ok2")
	if r2 := s.expectResult("job_ok2"); r2.Output.Credentials.Fingerprint != c.Fingerprint {
		t.Errorf("second fingerprint %q, want %q", r2.Output.Credentials.Fingerprint, c.Fingerprint)
	}
	s.ack("job_ok2")
	for _, tt := range []struct {
		id, name string
		code     protocol.ErrorCode
		want     string
	}{
		{"job_broken", secretBroken, protocol.CodeSecretMalformed, "pat"},
		{"job_missing", "ci/missing", protocol.CodeSecretNotFound, "ci/missing"},
		{"job_policy", "other/x", protocol.CodeSecretNotAllowed, "policy.secrets"},
	} {
		s.send(jobMsg(tt.id, tt.name, time.Minute))
		s.expectAccepted(tt.id)
		r := s.expectResult(tt.id)
		if r.OK || r.Error == nil || r.Error.Code != tt.code || !strings.Contains(r.Error.Message, tt.want) {
			t.Errorf("%s: result %+v, want error %s mentioning %q", tt.id, r.Error, tt.code, tt.want)
		}
		s.ack(tt.id)
	}
	// The policy is checked before the secret is read.
	if n := ta.backend.calls.Load(); n != 4 {
		t.Errorf("backend calls %d, want 4 (not for the secret the policy refuses)", n)
	}
}

// A result stays in the outbox until acknowledged: sent again after each
// reconnect, listed in hello's held, and never again once acked.
func TestResultResentUntilAcked(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	ta.start(t)
	s1 := f.session()
	s1.send(jobMsg("job_held", secretFast, time.Minute))
	s1.expectAccepted("job_held")
	first := s1.expectResult("job_held")
	s1.drop() // no ack

	s2 := f.session()
	if !slices.Equal(s2.hello.Held, []string{"job_held"}) || len(s2.hello.Running) != 0 {
		t.Errorf("hello after the drop: held %v running %v, want held [job_held]", s2.hello.Held, s2.hello.Running)
	}
	again := s2.expectResult("job_held")
	if !again.OK || again.Output.Credentials.Fingerprint != first.Output.Credentials.Fingerprint || !again.FinishedAt.Equal(first.FinishedAt) {
		t.Errorf("re-sent result %+v, want the same result", again)
	}
	s2.closeWith(protocol.CloseShuttingDown, "restart") // still no ack

	s3 := f.session()
	if !slices.Equal(s3.hello.Held, []string{"job_held"}) {
		t.Errorf("third hello held %v, want [job_held]", s3.hello.Held)
	}
	s3.expectResult("job_held")
	s3.ack("job_held")
	// Delivered again after the ack (a control plane that lost it): the job
	// does not run a second time.
	s3.send(jobMsg("job_held", secretFast, time.Minute))
	s3.expectNothing(quiet)
	s3.drop()

	s4 := f.session()
	if len(s4.hello.Held) != 0 || len(s4.hello.Running) != 0 {
		t.Errorf("hello after the ack: held %v running %v, want none", s4.hello.Held, s4.hello.Running)
	}
	s4.expectNothing(quiet)
	if n := ta.backend.calls.Load(); n != 1 {
		t.Errorf("the job ran %d times, want once", n)
	}
}

// Within one session, a result not acknowledged for resendAfter heartbeat
// intervals is sent again (the control plane failed to store it, or the
// acknowledgement was lost), until acknowledged; the job runs once.
func TestResultResentInSession(t *testing.T) {
	t.Parallel()
	const hb = 200 * time.Millisecond
	ta, f := newAgentCP(t, agentOpts{hb: hb})
	ta.start(t)
	s := f.session()
	s.send(jobMsg("job_unacked", secretFast, time.Minute))
	s.expectAccepted("job_unacked")
	first := s.expectResult("job_unacked")
	sent := time.Now()

	// Not before resendAfter intervals, and by one interval after.
	s.expectNothing(resendAfter*hb - 2*hb/3)
	again := s.next(resendAfter*hb + time.Second)
	if again.Type != protocol.TypeResult || again.Result.JobID != "job_unacked" || !again.Result.FinishedAt.Equal(first.FinishedAt) {
		b, _ := json.Marshal(again)
		t.Fatalf("got %s, want the same result again", b)
	}
	if el := time.Since(sent); el > (resendAfter+1)*hb+time.Second {
		t.Errorf("sent again after %s, want about %s", el, resendAfter*hb)
	}
	s.expectResult("job_unacked") // and again, while unacknowledged
	s.ack("job_unacked")
	s.expectNothing((resendAfter + 2) * hb)
	f.noSession(0) // all of it in the first session
	if n := ta.backend.calls.Load(); n != 1 {
		t.Errorf("the job ran %d times, want once", n)
	}
	if !ta.logs.contains("results not acknowledged by the control plane; sending them again") {
		t.Error("no warning logged for the results sent again")
	}
}

// More held results than the session's send queue holds (1024) all go out
// on the next session, without overflowing it (which would end the session
// and, on every reconnect, again).
func TestManyHeldResultsOnReconnect(t *testing.T) {
	t.Parallel()
	const n = 1500
	// A long heartbeat: the first session leaves every result unacknowledged
	// for longer than three of the default ones, and must not see them sent
	// again in the meantime.
	ta, f := newAgentCP(t, agentOpts{hb: time.Minute})
	ta.start(t)
	s1 := f.session()
	for i := range n {
		id := fmt.Sprintf("job_held_%04d", i)
		s1.send(jobMsg(id, secretFast, time.Minute))
		s1.expectAccepted(id)
		s1.expectResult(id)
	}
	s1.drop() // none acknowledged

	s2 := f.session()
	if len(s2.hello.Held) != n {
		t.Fatalf("hello holds %d results, want %d", len(s2.hello.Held), n)
	}
	for i := range n {
		id := fmt.Sprintf("job_held_%04d", i)
		s2.expectResult(id) // oldest first
		s2.ack(id)
	}
	s2.expectNothing(quiet)
	f.noSession(0)
}

// A job that finishes while the agent is disconnected reports on the next
// session; while it runs, hello lists it as running.
func TestJobSpansReconnect(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	ta.start(t)
	s1 := f.session()
	s1.send(jobMsg("job_span", secretSlow, time.Minute))
	s1.expectAccepted("job_span")
	ta.backend.waitStarted(t, secretSlow)
	s1.drop()
	s2 := f.session()
	if !slices.Equal(s2.hello.Running, []string{"job_span"}) || len(s2.hello.Held) != 0 {
		t.Errorf("hello while the job runs: running %v held %v, want running [job_span]", s2.hello.Running, s2.hello.Held)
	}
	ta.backend.release()
	if r := s2.expectResult("job_span"); !r.OK {
		t.Errorf("result %+v, want ok", r.Error)
	}
	s2.ack("job_span")
}

func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{concurrency: 4})
	ta.start(t)
	s := f.session()
	// While it runs: accepted again, run once.
	s.send(jobMsg("job_dup", secretSlow, time.Minute))
	s.expectAccepted("job_dup")
	ta.backend.waitStarted(t, secretSlow)
	s.send(jobMsg("job_dup", secretSlow, time.Minute))
	s.expectAccepted("job_dup")
	ta.backend.release()
	s.expectResult("job_dup")
	s.expectNothing(quiet) // one result only
	if n := ta.backend.calls.Load(); n != 1 {
		t.Errorf("backend calls %d, want 1", n)
	}
	// Finished but not acked: the held result is sent again, the job not run.
	s.send(jobMsg("job_dup", secretSlow, time.Minute))
	if r := s.expectResult("job_dup"); !r.OK {
		t.Errorf("re-sent result %+v, want ok", r.Error)
	}
	s.ack("job_dup")
	// Finished and acked: ignored.
	s.send(jobMsg("job_dup", secretSlow, time.Minute))
	s.expectNothing(quiet)
	if n := ta.backend.calls.Load(); n != 1 {
		t.Errorf("backend calls %d, want 1 after three more deliveries", n)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	ta.start(t)
	s := f.session()
	s.send(jobMsg("job_c", secretHang, time.Minute))
	s.expectAccepted("job_c")
	ta.backend.waitStarted(t, secretHang)
	s.cancel("job_unknown") // nothing runs under that id: ignored
	s.expectNothing(100 * time.Millisecond)
	s.cancel("job_c")
	r := s.expectResult("job_c")
	if r.OK || r.Error == nil || r.Error.Code != protocol.CodeCanceled || !strings.Contains(r.Error.Message, "canceled by the control plane") {
		t.Errorf("result %+v, want canceled by the control plane", r.Error)
	}
	s.ack("job_c")
	// The slot is free again.
	s.send(jobMsg("job_after", secretFast, time.Minute))
	s.expectAccepted("job_after")
	s.expectResult("job_after")
}

func TestDeadline(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	ta.start(t)
	s := f.session()
	start := time.Now()
	s.send(jobMsg("job_dl", secretHang, 300*time.Millisecond))
	s.expectAccepted("job_dl")
	r := s.expectResult("job_dl")
	if el := time.Since(start); el < 250*time.Millisecond || el > 5*time.Second {
		t.Errorf("timed out after %s, want about 300ms", el)
	}
	if r.OK || r.Error == nil || r.Error.Code != protocol.CodeTimeout {
		t.Errorf("result %+v, want timeout", r.Error)
	}
	// A job already past its deadline times out at once.
	s.send(jobMsg("job_late", secretHang, -time.Second))
	s.expectAccepted("job_late")
	if r := s.expectResult("job_late"); r.Error == nil || r.Error.Code != protocol.CodeTimeout {
		t.Errorf("late job %+v, want timeout", r.Error)
	}
}

// Deadlines travel on the control plane's clock: an agent whose clock is an
// hour ahead still gives a job its full time.
func TestDeadlineOnControlPlaneClock(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	f.set(func(f *fakeCP) { f.skew = -time.Hour })
	ta.start(t)
	s := f.session()
	start := time.Now()
	s.send(jobAt("job_skew", secretHang, f.now().Add(500*time.Millisecond)))
	s.expectAccepted("job_skew")
	r := s.expectResult("job_skew")
	if el := time.Since(start); el < 400*time.Millisecond || el > 5*time.Second {
		t.Errorf("a 500ms job timed out after %s with the agent's clock an hour ahead", el)
	}
	if r.Error == nil || r.Error.Code != protocol.CodeTimeout {
		t.Errorf("result %+v, want timeout", r.Error)
	}
	if !ta.logged("check NTP") {
		t.Error("no warning about the clock skew in the log")
	}
}

func TestRejections(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{concurrency: 1})
	ta.start(t)
	s := f.session()

	// Kinds outside the policy.
	tc := jobMsg("job_tc", secretFast, time.Minute)
	tc.Job.Kind, tc.Job.Params.GitHubKind, tc.Job.Params.GitHubURL = protocol.KindTestConnection, protocol.GitHubCloud, "https://github.com"
	if r := s.expectRejectedAfter(tc, protocol.CodeKindNotAllowed); !strings.Contains(r.Error.Message, "policy.job_kinds") {
		t.Errorf("message %q, want it to name policy.job_kinds", r.Error.Message)
	}
	unknown := jobMsg("job_unk", secretFast, time.Minute)
	unknown.Job.Kind = "workflow_dispatch"
	s.expectRejectedAfter(unknown, protocol.CodeKindNotAllowed)

	// Busy: concurrency 1 with a job running.
	s.send(jobMsg("job_run", secretSlow, time.Minute))
	s.expectAccepted("job_run")
	ta.backend.waitStarted(t, secretSlow)
	if r := s.expectRejectedAfter(jobMsg("job_busy", secretFast, time.Minute), protocol.CodeAgentBusy); r.Attempt != 1 {
		t.Errorf("rejection attempt %d, want 1", r.Attempt)
	}
	ta.backend.release()
	s.expectResult("job_run")
	s.ack("job_run")
	// The refused job can come again and runs.
	s.send(jobMsg("job_busy", secretFast, time.Minute))
	s.expectAccepted("job_busy")
	s.expectResult("job_busy")
	if n := ta.backend.calls.Load(); n != 2 {
		t.Errorf("backend calls %d, want 2 (none for refused jobs)", n)
	}
}

// A job sent the moment the previous job's result arrives finds its slot
// free: the agent frees the slot before the result can reach the control
// plane, which frees it on reading the result and may send the next job at
// once. (An agent_busy there would pause the agent's whole queue.)
func TestSlotFreeWhenResultArrives(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{concurrency: 1})
	// Widen the moment between the result's delivery and the slot's
	// release: a control plane fast enough to answer within it must still
	// find the slot free.
	ta.a.runner.afterDeliver = func() { time.Sleep(20 * time.Millisecond) }
	ta.start(t)
	s := f.session()
	for i := range 20 {
		id := fmt.Sprintf("job_next_%03d", i)
		s.send(jobMsg(id, secretFast, time.Minute))
		if m := s.next(10 * time.Second); m.Type != protocol.TypeAccepted || m.Accepted.JobID != id {
			b, _ := json.Marshal(m)
			t.Fatalf("job %d: got %s, want accepted", i, b)
		}
		s.expectResult(id)
		s.ack(id)
	}
}

func TestFatalCloseCodes(t *testing.T) {
	t.Parallel()
	for _, code := range []int{protocol.CloseRevoked, protocol.CloseAuthFailed, protocol.CloseIncompatible} {
		for _, when := range []string{"handshake", "session"} {
			t.Run(fmt.Sprintf("%d in %s", code, when), func(t *testing.T) {
				t.Parallel()
				ta, f := newAgentCP(t, agentOpts{})
				if when == "handshake" {
					f.set(func(f *fakeCP) { f.refuse = func(int) (int, string) { return code, "scripted refusal" } })
				}
				ta.start(t)
				if when == "session" {
					s := f.session()
					s.closeWith(code, "scripted refusal")
				}
				err := ta.wait(t, 10*time.Second)
				var fe *FatalError
				if !errors.As(err, &fe) || fe.Code != code || fe.Reason != "scripted refusal" {
					t.Fatalf("Run = %v, want a *FatalError with code %d", err, code)
				}
				if n := f.conns.Load(); n != 1 {
					t.Errorf("%d connections, want 1 (no retry)", n)
				}
				if st := ta.a.Status(); st.Connected || st.LastError == "" {
					t.Errorf("status %+v, want disconnected with the last error", st)
				}
				if !ta.logged("not retrying") {
					t.Error("the refusal is not logged")
				}
			})
		}
	}
}

func TestFatalErrorMessages(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]string{
		protocol.CloseRevoked:      "enroll it again",
		protocol.CloseAuthFailed:   "does not accept this agent's key",
		protocol.CloseIncompatible: protocol.Subprotocol,
		4999:                       "4999",
	} {
		if msg := (&FatalError{Code: code, Reason: "why"}).Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "why") {
			t.Errorf("FatalError %d: %q, want it to hold %q and the reason", code, msg, want)
		}
	}
}

// An agent whose key is not the enrolled one is refused for good.
func TestWrongKey(t *testing.T) {
	t.Parallel()
	other := testIdentity(t, "agt_other")
	ta, f := newAgentCP(t, agentOpts{identity: &other})
	ta.start(t)
	err := ta.wait(t, 10*time.Second)
	var fe *FatalError
	if !errors.As(err, &fe) || fe.Code != protocol.CloseAuthFailed {
		t.Fatalf("Run = %v, want FatalError CloseAuthFailed", err)
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// A control plane that does not choose the protocol's subprotocol does not
// speak it: the agent stops and says so.
func TestNoSubprotocol(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	f.set(func(f *fakeCP) { f.noSubprotocol = true })
	ta.start(t)
	err := ta.wait(t, 10*time.Second)
	var fe *FatalError
	if !errors.As(err, &fe) || fe.Code != protocol.CloseIncompatible || !strings.Contains(err.Error(), protocol.Subprotocol) {
		t.Fatalf("Run = %v, want FatalError CloseIncompatible naming %s", err, protocol.Subprotocol)
	}
}

func TestRetryCloseCodes(t *testing.T) {
	t.Parallel()
	for _, code := range []int{protocol.CloseSuperseded, protocol.CloseShuttingDown, protocol.CloseProtocolError, websocket.CloseGoingAway, websocket.CloseTryAgainLater} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			ta, f := newAgentCP(t, agentOpts{})
			// Refused once during the handshake, then closed in session.
			f.set(func(f *fakeCP) {
				f.refuse = func(n int) (int, string) {
					if n == 1 {
						return code, "try again"
					}
					return 0, ""
				}
			})
			ta.start(t)
			s := f.session()
			if s.n != 2 {
				t.Errorf("first session on connection %d, want 2", s.n)
			}
			s.closeWith(code, "try again")
			s2 := f.session()
			// The new session works.
			s2.send(jobMsg("job_r", secretFast, time.Minute))
			s2.expectAccepted("job_r")
			s2.expectResult("job_r")
			select {
			case err := <-ta.done:
				t.Fatalf("Run returned %v after close code %d", err, code)
			default:
			}
		})
	}
}

// Connection failures (nothing listening, HTTP errors) are retried.
func TestRetryDialErrors(t *testing.T) {
	t.Parallel()
	id := testIdentity(t, "agt_dial")
	var hits atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	ta := newTestAgent(t, ts.URL, id, agentOpts{})
	ta.start(t)
	eventually(t, 10*time.Second, func() (bool, string) {
		return hits.Load() >= 3, fmt.Sprintf("%d attempts, want 3 or more", hits.Load())
	})
	if st := ta.a.Status(); !strings.Contains(st.LastError, "503") {
		t.Errorf("last error %q, want it to name HTTP 503", st.LastError)
	}
	ta.cancel()
	if err := ta.wait(t, 10*time.Second); err != nil {
		t.Errorf("Run = %v after cancel, want nil", err)
	}
}

// A control plane that stops pinging is noticed within three heartbeat
// intervals, and the agent reconnects.
func TestPingTimeout(t *testing.T) {
	t.Parallel()
	const hb = 200 * time.Millisecond
	ta, f := newAgentCP(t, agentOpts{hb: hb})
	f.set(func(f *fakeCP) { f.noPing[1] = true })
	ta.start(t)
	s1 := f.session()
	s1.closed(10 * time.Second)
	el := time.Since(s1.at)
	if el < 3*hb-50*time.Millisecond || el > 3*hb+time.Second {
		t.Errorf("the silent control plane was dropped after %s, want about 3 x %s", el, hb)
	}
	s2 := f.session()
	if !ta.logged("no ping from the control plane") {
		t.Error("the reason is not logged")
	}
	// With pings the session lasts.
	s2.expectNothing(6 * hb)
	f.noSession(0)
	if st := ta.a.Status(); !st.Connected || st.SessionID != "ses_2" {
		t.Errorf("status %+v, want connected to ses_2", st)
	}
}

func TestBadFrames(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	ta.start(t)
	s := f.session()
	tests := []struct {
		name    string
		frame   string
		code    protocol.ErrorCode
		refType protocol.Type
		refID   string
	}{
		{"malformed JSON", `{"type":"job",`, protocol.CodeMalformedMessage, "", ""},
		{"not an object", `"hello"`, protocol.CodeMalformedMessage, "", ""},
		{"unknown type", `{"type":"gossip","id":"m-1"}`, protocol.CodeUnknownType, "gossip", "m-1"},
		{"job without a deadline", `{"type":"job","id":"m-2","job":{"job_id":"j","kind":"resolve_credentials","attempt":1}}`, protocol.CodeMalformedMessage, protocol.TypeJob, "m-2"},
		{"two bodies", `{"type":"cancel","id":"m-3","cancel":{"job_id":"j"},"result_ack":{"job_id":"j"}}`, protocol.CodeMalformedMessage, protocol.TypeCancel, "m-3"},
		{"welcome in session", `{"type":"welcome","id":"m-4","welcome":{"session_id":"s","heartbeat_interval":"1s","server_time":"2026-01-01T00:00:00Z"}}`, protocol.CodeUnknownType, protocol.TypeWelcome, "m-4"},
		{"hello from the control plane", `{"type":"result","id":"m-5","result":{"job_id":"j","ok":true}}`, protocol.CodeUnknownType, protocol.TypeResult, "m-5"},
	}
	for _, tt := range tests {
		s.sendRaw([]byte(tt.frame))
		m := s.expect(protocol.TypeError)
		if m.Error.Code != tt.code || m.Error.RefType != tt.refType || m.Error.RefID != tt.refID || m.Error.Message == "" {
			t.Errorf("%s: reply %+v, want %s ref_type %q ref_id %q", tt.name, m.Error, tt.code, tt.refType, tt.refID)
		}
	}
	// An error from the control plane is logged, not answered.
	s.send(&protocol.Message{Type: protocol.TypeError, Error: &protocol.ErrorBody{Error: *protocol.Errorf(protocol.CodeUnknownType, "scripted"), RefType: protocol.TypeHeartbeat}})
	s.expectNothing(100 * time.Millisecond)
	// The session carries on.
	s.send(jobMsg("job_after", secretFast, time.Minute))
	s.expectAccepted("job_after")
	s.expectResult("job_after")
	if n := f.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1 (bad frames do not end the session)", n)
	}
	if !ta.logged("bad message from the control plane") {
		t.Error("bad frames are not logged")
	}
}

// draining waits until the runner refuses new jobs.
func (ta *testAgent) draining(t *testing.T) {
	t.Helper()
	eventually(t, 5*time.Second, func() (bool, string) {
		ta.a.runner.mu.Lock()
		defer ta.a.runner.mu.Unlock()
		return ta.a.runner.draining, "the runner is not draining"
	})
}

func TestDrain(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{concurrency: 2, grace: 10 * time.Second})
	ta.start(t)
	s := f.session()
	s.send(jobMsg("job_run", secretSlow, time.Minute))
	s.expectAccepted("job_run")
	ta.backend.waitStarted(t, secretSlow)

	ta.cancel() // SIGTERM
	m := s.expect(protocol.TypeDraining)
	if m.Draining.Grace.D() != 10*time.Second || m.Draining.Reason == "" {
		t.Errorf("draining %+v, want grace 10s and a reason", m.Draining)
	}
	ta.draining(t)
	s.expectRejectedAfter(jobMsg("job_new", secretFast, time.Minute), protocol.CodeAgentBusy)

	ta.backend.release()
	if r := s.expectResult("job_run"); !r.OK {
		t.Errorf("running job's result %+v, want ok (it had time to finish)", r.Error)
	}
	select {
	case err := <-ta.done:
		t.Fatalf("Run returned %v before the result was acknowledged", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.ack("job_run")
	if code := s.closed(10 * time.Second); code != websocket.CloseNormalClosure {
		t.Errorf("close code %d, want %d", code, websocket.CloseNormalClosure)
	}
	if err := ta.wait(t, 10*time.Second); err != nil {
		t.Errorf("Run = %v after a drain, want nil", err)
	}
	f.noSession(quiet) // no reconnect
	if n := ta.backend.calls.Load(); n != 1 {
		t.Errorf("backend calls %d, want 1", n)
	}
}

// When the grace period ends, running jobs are canceled and their results
// still sent before the close.
func TestDrainGraceEnds(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{grace: 300 * time.Millisecond})
	ta.start(t)
	s := f.session()
	s.send(jobMsg("job_hang", secretHang, time.Minute))
	s.expectAccepted("job_hang")
	ta.backend.waitStarted(t, secretHang)
	start := time.Now()
	ta.cancel()
	s.expect(protocol.TypeDraining)
	r := s.expectResult("job_hang")
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("canceled after %s, want the grace period (300ms) first", el)
	}
	if r.Error == nil || r.Error.Code != protocol.CodeCanceled || !strings.Contains(r.Error.Message, "drain grace period") {
		t.Errorf("result %+v, want canceled by the drain grace period", r.Error)
	}
	s.ack("job_hang")
	if code := s.closed(10 * time.Second); code != websocket.CloseNormalClosure {
		t.Errorf("close code %d, want %d", code, websocket.CloseNormalClosure)
	}
	if err := ta.wait(t, 10*time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// A drain that begins while disconnected tells the next session.
func TestDrainWhileDisconnected(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{grace: 10 * time.Second})
	ta.start(t)
	s1 := f.session()
	s1.send(jobMsg("job_run", secretSlow, time.Minute))
	s1.expectAccepted("job_run")
	ta.backend.waitStarted(t, secretSlow)
	// The next connection waits in its handshake until the drain began.
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	f.set(func(f *fakeCP) {
		f.refuse = func(n int) (int, string) {
			if n == 2 {
				<-gate
			}
			return 0, ""
		}
	})
	s1.drop()
	ta.cancel()
	ta.draining(t)
	open()
	s2 := f.session()
	if !slices.Equal(s2.hello.Running, []string{"job_run"}) {
		t.Errorf("hello running %v, want [job_run]", s2.hello.Running)
	}
	s2.expect(protocol.TypeDraining)
	ta.backend.release()
	s2.expectResult("job_run")
	s2.ack("job_run")
	if code := s2.closed(10 * time.Second); code != websocket.CloseNormalClosure {
		t.Errorf("close code %d, want %d", code, websocket.CloseNormalClosure)
	}
	if err := ta.wait(t, 10*time.Second); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestAbort(t *testing.T) {
	t.Parallel()
	t.Run("while running", func(t *testing.T) {
		t.Parallel()
		ta, f := newAgentCP(t, agentOpts{grace: time.Minute})
		ta.start(t)
		s := f.session()
		s.send(jobMsg("job_hang", secretHang, time.Minute))
		s.expectAccepted("job_hang")
		ta.backend.waitStarted(t, secretHang)
		start := time.Now()
		ta.a.Abort()
		if err := ta.wait(t, 5*time.Second); err != nil {
			t.Errorf("Run = %v after Abort, want nil", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("Run returned %s after Abort, want at once", el)
		}
		s.closed(5 * time.Second)
		f.noSession(quiet)
	})
	t.Run("during a drain", func(t *testing.T) {
		t.Parallel()
		ta, f := newAgentCP(t, agentOpts{grace: time.Minute})
		ta.start(t)
		s := f.session()
		s.send(jobMsg("job_hang", secretHang, time.Minute))
		s.expectAccepted("job_hang")
		ta.backend.waitStarted(t, secretHang)
		ta.cancel()
		s.expect(protocol.TypeDraining)
		start := time.Now()
		ta.a.Abort() // the second signal
		if err := ta.wait(t, 5*time.Second); err != nil {
			t.Errorf("Run = %v after Abort, want nil", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("Run returned %s after Abort during a one-minute grace, want at once", el)
		}
		f.noSession(quiet)
	})
}

// Every scenario above checks its own frames and logs in its cleanup, and
// TestMain checks them all together at the end. This test makes sure the
// check has something to find: the canary is read, and a leak would be seen.
func TestCanaryIsExercised(t *testing.T) {
	t.Parallel()
	ta, f := newAgentCP(t, agentOpts{})
	ta.start(t)
	s := f.session()
	before := canaryReads.Load()
	s.send(jobMsg("job_canary", secretFast, time.Minute))
	s.expectAccepted("job_canary")
	s.expectResult("job_canary")
	s.ack("job_canary")
	if canaryReads.Load() == before {
		t.Error("the job did not read the canary")
	}
	basic := []byte(`{"authorization":"Basic ` + base64.StdEncoding.EncodeToString([]byte("bot:"+canary)) + `"}`)
	if !redact.Contains(basic, canary) {
		t.Error("redact.Contains does not see the canary in an HTTP Basic header")
	}
}

// The contract: accepted (or rejected), then result. A fast job's result
// must not overtake its accepted. (Before the fix this failed about one run
// in ten under -race -cpu 4.)
func TestAcceptedBeforeResult(t *testing.T) {
	t.Parallel()
	const n = 200
	ta, f := newAgentCP(t, agentOpts{concurrency: n})
	ta.start(t)
	s := f.session()
	for i := range n {
		s.send(jobMsg(fmt.Sprintf("job_%03d", i), secretFast, time.Minute))
	}
	accepted := map[string]bool{}
	for results := 0; results < n; {
		m := s.next(10 * time.Second)
		switch m.Type {
		case protocol.TypeAccepted:
			accepted[m.Accepted.JobID] = true
		case protocol.TypeResult:
			if !accepted[m.Result.JobID] {
				t.Errorf("the result of %s came before its accepted", m.Result.JobID)
			}
			results++
			s.ack(m.Result.JobID)
		default:
			t.Fatalf("unexpected %s", m.Type)
		}
	}
}
