package e2e

// The fault-injection suite, in process: a real control plane and real
// agents (harness_test.go) with the fault proxy (faultproxy_test.go)
// between them, and the fake secret manager and GitHub of secretstest and
// githubtest behind the agents. The scenarios that kill a process run the
// built binaries (faults_binary_test.go); the reconnect storm is in
// storm_test.go.
//
// Every scenario checks the same promise for the jobs it submits
// (checkExactlyOnce): each ends in exactly one terminal state with the
// right outcome, and no result is recorded twice. The harness's canary
// check runs at the end of each one.

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/goleak"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
	"github.com/orchestrator/orchestrator/protocol"

	_ "modernc.org/sqlite" // the store's driver, to read its file in the checks
)

// --- the exactly-once check ------------------------------------------------

// wantJob is how a job must end.
type wantJob struct {
	state protocol.JobState
	code  protocol.ErrorCode // the error code; "" when it succeeded
	// attempts is how many dispatches it took; 0: any from 1 to 3.
	attempts int
}

// storedJob is a job's row in the store's file.
type storedJob struct {
	state    string
	attempt  int
	finished sql.NullInt64
	rows     int
}

// openStoreFile opens the store's database file for reading, beside the
// control plane that may have it open (WAL lets readers in).
func openStoreFile(t *testing.T, path string) *sql.DB {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the store file: %v", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("open the store file: %v", err)
	}
	db.SetMaxOpenConns(1)
	return db
}

// readStoreJobs reads every job's row from the store's file, counting the
// rows per id.
func readStoreJobs(t *testing.T, path string) map[string]storedJob {
	t.Helper()
	db := openStoreFile(t, path)
	defer db.Close()
	rows, err := db.Query(`SELECT id, state, attempt, finished_at FROM jobs`)
	if err != nil {
		t.Fatalf("read the jobs from the store file: %v", err)
	}
	defer rows.Close()
	out := map[string]storedJob{}
	for rows.Next() {
		var id string
		var j storedJob
		if err := rows.Scan(&id, &j.state, &j.attempt, &j.finished); err != nil {
			t.Fatalf("scan a job row: %v", err)
		}
		j.rows = out[id].rows + 1
		out[id] = j
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read the jobs from the store file: %v", err)
	}
	return out
}

// sameEnd reports whether two views of a job show the same ending.
func sameEnd(a, b protocol.JobView) bool {
	if a.State != b.State || a.Attempts != b.Attempts || (a.FinishedAt == nil) != (b.FinishedAt == nil) ||
		(a.FinishedAt != nil && !a.FinishedAt.Equal(*b.FinishedAt)) {
		return false
	}
	ja, _ := json.Marshal([]any{a.Error, a.Result})
	jb, _ := json.Marshal([]any{b.Error, b.Result})
	return string(ja) == string(jb)
}

// checkJob checks one job's API view against want.
func checkJob(t *testing.T, j protocol.JobView, w wantJob) {
	t.Helper()
	code := protocol.ErrorCode("")
	if j.Error != nil {
		code = j.Error.Code
	}
	switch {
	case !j.State.Terminal() || j.FinishedAt == nil:
		t.Errorf("job %s is %s (finished %v), want it ended %s", j.ID, j.State, j.FinishedAt, w.state)
	case j.State != w.state || code != w.code:
		t.Errorf("job %s ended %s with %q (%v), want %s with %q", j.ID, j.State, code, j.Error, w.state, w.code)
	case w.attempts != 0 && j.Attempts != w.attempts:
		t.Errorf("job %s took %d attempts, want %d", j.ID, j.Attempts, w.attempts)
	case j.Attempts > 3:
		t.Errorf("job %s took %d attempts, more than the 3 the rule allows", j.ID, j.Attempts)
	case w.state == protocol.JobSucceeded && j.Result == nil:
		t.Errorf("job %s succeeded without a result", j.ID)
	}
}

// checkExactlyOnce checks the promise of every fault scenario for the jobs
// in want: through the API each is in exactly one terminal state, the
// wanted one, and stays there (a second read, later, shows the same state,
// attempts, finished_at, error and result); the store's file holds one row
// per job, in that state; and each of agents that received the job sent a
// result for it and got no more acknowledgements than it sent results.
func checkExactlyOnce(t *testing.T, cp *controlPlane, want map[string]wantJob, agents ...*agentProc) {
	t.Helper()
	checkJobsEnded(t, cp.getJob, filepath.Join(cp.dir, sqlite.FileName), want)
	for id := range want {
		for _, a := range agents {
			if a.frames.count("in", protocol.TypeJob, id) == 0 {
				continue
			}
			sent, acked := a.frames.count("out", protocol.TypeResult, id), a.frames.count("in", protocol.TypeResultAck, id)
			if w := want[id]; w.state == protocol.JobSucceeded && sent == 0 {
				t.Errorf("agent %s: job %s succeeded but the agent sent no result", a.ID, id)
			}
			if acked > sent {
				t.Errorf("agent %s: job %s: %d acknowledgements for %d results sent", a.ID, id, acked, sent)
			}
		}
	}
}

// checkJobsEnded is the part of checkExactlyOnce that reads the API (get,
// which waits up to its second argument for a job to end) and the store's
// file at dbPath.
func checkJobsEnded(t *testing.T, get func(id string, wait time.Duration) protocol.JobView, dbPath string, want map[string]wantJob) {
	t.Helper()
	first := map[string]protocol.JobView{}
	deadline := time.Now().Add(30 * time.Second)
	for id, w := range want {
		j := get(id, 0)
		for !j.State.Terminal() && time.Now().Before(deadline) {
			j = get(id, min(5*time.Second, max(time.Until(deadline), time.Millisecond)))
		}
		checkJob(t, j, w)
		first[id] = j
	}
	time.Sleep(200 * time.Millisecond) // a late duplicate would land meanwhile
	stored := readStoreJobs(t, dbPath)
	for id := range want {
		again := get(id, 0)
		if !sameEnd(first[id], again) {
			t.Errorf("job %s changed after it ended: %+v, then %+v", id, first[id], again)
		}
		s, ok := stored[id]
		switch {
		case !ok:
			t.Errorf("job %s is not in the store's file", id)
		case s.rows != 1:
			t.Errorf("job %s has %d rows in the store's file", id, s.rows)
		case s.state != string(again.State) || s.attempt != again.Attempts || !s.finished.Valid || again.FinishedAt == nil ||
			s.finished.Int64 != again.FinishedAt.UnixNano():
			t.Errorf("job %s: the store's row (%s, attempt %d, finished %v) differs from the API (%s, %d, %v)",
				id, s.state, s.attempt, s.finished, again.State, again.Attempts, again.FinishedAt)
		}
	}
}

// --- agents behind the proxy ------------------------------------------------

// startAgentVia registers and enrolls an agent over the API, then runs it
// against url (the fault proxy in front of cp) until the end of the test.
func startAgentVia(t *testing.T, cp *controlPlane, url string, c agentConfig) *agentProc {
	t.Helper()
	_, token := cp.register(c.name)
	c.stateDir = filepath.Join(t.TempDir(), "state")
	id, err := cp.enroll(token, c.stateDir)
	if err != nil {
		t.Fatalf("enroll %s: %v", c.name, err)
	}
	return runAgent(t, cp.leaks, url, id, c)
}

// session returns the agent's current session id, "" while disconnected.
func (p *agentProc) session() string {
	s := p.Agent.Status()
	if !s.Connected {
		return ""
	}
	return s.SessionID
}

// lastHello returns the last hello the agent sent.
func (p *agentProc) lastHello(t *testing.T) *protocol.Hello {
	t.Helper()
	hs := p.frames.messages("out", protocol.TypeHello)
	if len(hs) == 0 {
		t.Fatal("the agent sent no hello")
	}
	return hs[len(hs)-1].Hello
}

// faultSetup is a control plane and one agent that reaches it through a
// fault proxy, with a job running on the agent.
type faultSetup struct {
	cp  *controlPlane
	px  *faultProxy
	a   *agentProc
	job protocol.JobView // running, its secret read held until a.Backend.release
	ses string           // the control plane's session id of the agent
}

func newFaultSetup(t *testing.T, frames bool, mode backendMode) *faultSetup {
	t.Helper()
	cp := newControlPlane(t)
	px := newFaultProxy(t, cp.addr, frames)
	a := startAgentVia(t, cp, px.URL(), agentConfig{name: "agent-1", backend: newBackend(mode, 0)})
	s := &faultSetup{cp: cp, px: px, a: a}
	s.ses = cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second).SessionID
	return s
}

// runningJob submits a job and waits until it runs on the agent.
func (s *faultSetup) runningJob(t *testing.T) protocol.JobView {
	t.Helper()
	j := s.cp.submit(s.a.ID, allowedSecret, jobTimeout, 0)
	waitSignal(t, s.a.Backend.started, 5*time.Second, "the job to start reading its secret")
	s.cp.waitJobState(j.ID, protocol.JobRunning, 5*time.Second)
	return j
}

// detectBound is how long either side may take to see that its peer went
// silent: the documented three heartbeat intervals, plus slack for a busy
// machine running -race.
const detectBound = 3*heartbeat + time.Second

// --- scenario 1 --------------------------------------------------------------

// TestFaultLinkCutMidJob (scenario 1): the link is cut for longer than the
// heartbeat timeout while a job runs; the job finishes while the agent is
// cut off, and its result arrives after the reconnect, recorded once.
// "reset" closes the connections (and refuses new ones); "silent" drops
// everything without closing anything (a pulled cable), so that each side
// must notice by its heartbeat timeout.
func TestFaultLinkCutMidJob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		silent bool
	}{{"reset", false}, {"silent", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newFaultSetup(t, false, gated)
			j := s.runningJob(t)

			cut := time.Now()
			s.px.Refuse(true)
			if tc.silent {
				s.px.Blackhole(toServer, toClient)
			} else {
				s.px.Cut()
			}
			s.cp.waitAgentStatus(s.a.ID, protocol.AgentOffline, detectBound+time.Second)
			eventually(t, detectBound+time.Second, "the agent to see the link gone", func() bool { return s.a.session() == "" })
			t.Logf("both sides saw the cut within %s", time.Since(cut).Round(time.Millisecond))
			// The job ends while the link is down: its result waits in the outbox.
			s.a.Backend.release()
			eventually(t, 5*time.Second, "the job to finish on the agent", func() bool { return s.a.Backend.returned.Load() == 1 })
			if away := s.cp.getJob(j.ID, 0); away.State != protocol.JobRunning {
				t.Fatalf("while the link is down the job is %s, want still running", away.State)
			}
			// Down for longer than the heartbeat timeout in all.
			time.Sleep(time.Until(cut.Add(3*heartbeat + 500*time.Millisecond)))
			if n := s.a.frames.count("in", protocol.TypeResultAck, j.ID); n != 0 {
				t.Fatalf("the result was acknowledged %d times while the link was down", n)
			}

			s.px.Refuse(false)
			final := s.cp.waitJob(j.ID, 10*time.Second)
			if v := s.cp.agent(s.a.ID); v.SessionID == s.ses {
				t.Fatalf("the agent kept its session %s across the cut", v.SessionID)
			}
			if h := s.a.lastHello(t); !slices.Contains(h.Held, j.ID) {
				t.Errorf("the hello after the cut holds %v, want the finished job %s", h.Held, j.ID)
			}
			if !final.FinishedAt.After(cut.Add(3 * heartbeat)) {
				t.Errorf("the job was recorded at %s, before the link came back", final.FinishedAt)
			}
			checkExactlyOnce(t, s.cp, map[string]wantJob{j.ID: {protocol.JobSucceeded, "", 1}}, s.a)
			if n := s.a.Backend.calls.Load(); n != 1 {
				t.Errorf("the secret was read %d times, want once", n)
			}
			eventually(t, 5*time.Second, "the result to be acknowledged", func() bool {
				return s.a.frames.count("in", protocol.TypeResultAck, j.ID) == 1
			})
			// And the agent works on.
			next := s.cp.submit(s.a.ID, allowedSecret, jobTimeout, 10*time.Second)
			checkExactlyOnce(t, s.cp, map[string]wantJob{next.ID: {protocol.JobSucceeded, "", 1}}, s.a)
		})
	}
}

// --- scenario 4 --------------------------------------------------------------

// TestFaultJobDeliveredTwice (scenario 4): the proxy delivers a job frame
// again (forced redelivery) while the job runs, after it finished but
// before its result was acknowledged, and after the acknowledgement on a
// new connection. Each job runs once: one secret read, one result recorded.
func TestFaultJobDeliveredTwice(t *testing.T) {
	t.Parallel()
	s := newFaultSetup(t, true, gated)
	anyJob := func(m *protocol.Message) bool { return m.Type == protocol.TypeJob }
	anyAck := func(m *protocol.Message) bool { return m.Type == protocol.TypeResultAck }

	// While it runs: the frame arrives twice, back to back.
	dup := s.px.Rule(&frameRule{dir: toClient, match: anyJob, action: duplicateFrame, times: 1})
	j1 := s.runningJob(t)
	eventually(t, 5*time.Second, "the job to arrive twice", func() bool { return s.a.frames.count("in", protocol.TypeJob, j1.ID) == 2 })
	if dup.Hits() != 1 {
		t.Fatalf("the duplicate rule acted %d times", dup.Hits())
	}
	eventually(t, 5*time.Second, "the agent to accept it twice", func() bool {
		return s.a.frames.count("out", protocol.TypeAccepted, j1.ID) == 2
	})
	s.a.Backend.release()
	checkExactlyOnce(t, s.cp, map[string]wantJob{j1.ID: {protocol.JobSucceeded, "", 1}}, s.a)
	if n := s.a.Backend.calls.Load(); n != 1 {
		t.Fatalf("job delivered twice while it ran: the secret was read %d times, want once", n)
	}
	if n := s.a.frames.count("out", protocol.TypeResult, j1.ID); n != 1 {
		t.Fatalf("job delivered twice while it ran: %d results sent, want one", n)
	}

	// After it finished, before the acknowledgement: the agent answers with
	// the result it holds, and does not run the job again.
	keep2 := s.px.Rule(&frameRule{dir: toClient, match: anyJob, action: captureFrame, times: 1})
	lost := s.px.Rule(&frameRule{dir: toClient, match: anyAck, action: dropFrame, times: 1})
	j2 := s.cp.submit(s.a.ID, allowedSecret, jobTimeout, 10*time.Second)
	eventually(t, 5*time.Second, "the proxy to drop the ack", func() bool { return lost.Hits() == 1 })
	if lost.Hits() != 1 || len(keep2.Captured()) != 1 {
		t.Fatalf("rules acted: ack dropped %d, job kept %d; want 1 and 1", lost.Hits(), len(keep2.Captured()))
	}
	if n := s.px.Inject(toClient, keep2.Captured()...); n != 1 {
		t.Fatalf("the job frame went into %d connections, want 1", n)
	}
	eventually(t, 5*time.Second, "the held result to be sent again and acknowledged", func() bool {
		return s.a.frames.count("out", protocol.TypeResult, j2.ID) == 2 && s.a.frames.count("in", protocol.TypeResultAck, j2.ID) == 1
	})
	if n := s.a.Backend.calls.Load(); n != 2 {
		t.Fatalf("after two jobs the secret was read %d times, want twice", n)
	}

	// After the acknowledgement, on a new connection: ignored.
	old := s.a.session()
	s.px.Cut()
	eventually(t, 5*time.Second, "the agent to reconnect", func() bool {
		id := s.a.session()
		return id != "" && id != old && s.cp.agent(s.a.ID).SessionID == id
	})
	if n := s.px.Inject(toClient, keep2.Captured()...); n != 1 {
		t.Fatalf("the job frame went into %d connections, want 1", n)
	}
	eventually(t, 5*time.Second, "the agent to log the repeat", func() bool {
		return hasLog(s.a.logs.Bytes(), "job delivered again after it finished; not running it twice", map[string]string{"job_id": j2.ID})
	})
	checkExactlyOnce(t, s.cp, map[string]wantJob{j1.ID: {protocol.JobSucceeded, "", 1}, j2.ID: {protocol.JobSucceeded, "", 1}}, s.a)
	if n := s.a.Backend.calls.Load(); n != 2 {
		t.Fatalf("after the repeats the secret was read %d times, want twice", n)
	}
	if n := s.a.frames.count("out", protocol.TypeAccepted, j2.ID); n != 1 {
		t.Fatalf("the repeated job was accepted %d times, want once", n)
	}
}

// --- scenario 5 --------------------------------------------------------------

// TestFaultResultAckLost (scenario 5): the control plane records a result
// and its result_ack is lost on the way. The agent keeps the result and
// sends it again: within the same session once it has gone unacknowledged
// for three heartbeat intervals, or at once on the next session after a
// reconnect. The control plane acknowledges it each time without recording
// it a second time.
func TestFaultResultAckLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		reconnect bool
	}{
		{"in-session", false},
		{"after-reconnect", true},
	} {
		reconnect := tc.reconnect
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newFaultSetup(t, true, fast)
			ses := s.a.session()
			lost := s.px.Rule(&frameRule{dir: toClient, match: func(m *protocol.Message) bool { return m.Type == protocol.TypeResultAck }, action: dropFrame, times: 1})
			j := s.cp.submit(s.a.ID, allowedSecret, jobTimeout, 10*time.Second)
			eventually(t, 5*time.Second, "the proxy to drop the ack", func() bool { return lost.Hits() == 1 })
			if j.State != protocol.JobSucceeded || lost.Hits() != 1 {
				t.Fatalf("job %s, ack dropped %d times; want succeeded and 1", j.State, lost.Hits())
			}
			if n := s.a.frames.count("in", protocol.TypeResultAck, j.ID); n != 0 {
				t.Fatalf("the agent got %d acks, want none (dropped)", n)
			}
			if reconnect {
				s.px.Cut() // at once: well before the in-session re-send is due
			}
			eventually(t, 10*time.Second, "the result to be sent again and acknowledged", func() bool {
				return s.a.frames.count("out", protocol.TypeResult, j.ID) == 2 && s.a.frames.count("in", protocol.TypeResultAck, j.ID) == 1
			})
			h := s.a.lastHello(t)
			switch {
			case reconnect && !slices.Contains(h.Held, j.ID):
				t.Errorf("the hello after the cut holds %v, want %s", h.Held, j.ID)
			case !reconnect && s.a.session() != ses:
				t.Errorf("session %q, want the result sent again in session %q", s.a.session(), ses)
			case !reconnect && !strings.Contains(s.a.logs.String(), "results not acknowledged by the control plane; sending them again"):
				t.Error("the agent did not log the result it sent again")
			}
			again := s.cp.getJob(j.ID, 0)
			if !sameEnd(j, again) {
				t.Fatalf("the repeated result changed the job: %+v, then %+v", j, again)
			}
			checkExactlyOnce(t, s.cp, map[string]wantJob{j.ID: {protocol.JobSucceeded, "", 1}}, s.a)
			if n := s.a.Backend.calls.Load(); n != 1 {
				t.Fatalf("the secret was read %d times, want once", n)
			}
			if err := s.a.Stop(10 * time.Second); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if strings.Contains(s.a.logs.String(), "results not acknowledged before exit") {
				t.Fatal("the agent exited holding unacknowledged results")
			}
		})
	}
}

// --- scenario 6 --------------------------------------------------------------

// TestFaultHalfOpen (scenario 6): the proxy stops forwarding one direction
// (or both) without closing anything. The side that no longer hears its
// peer notices within three heartbeat intervals (the documented bound:
// controlplane.Options.HeartbeatInterval), the session ends, the agent
// reconnects on a new connection, and the job that ran meanwhile (its
// result or its ack lost in the black hole) is recorded once.
func TestFaultHalfOpen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		dirs []direction
	}{
		{"to-agent-dropped", []direction{toClient}},
		{"to-control-plane-dropped", []direction{toServer}},
		{"both-dropped", []direction{toServer, toClient}},
	} {
		name, dirs := tc.name, tc.dirs
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newFaultSetup(t, false, gated)
			j := s.runningJob(t)
			oldAgentSession := s.a.session()

			start := time.Now()
			s.px.Blackhole(dirs...)
			s.a.Backend.release() // the result (or its ack) goes into the black hole
			var cpSaw, agentSaw time.Duration
			eventually(t, detectBound+time.Second, "both sides to end the session", func() bool {
				if cpSaw == 0 && s.cp.agent(s.a.ID).SessionID != s.ses {
					cpSaw = time.Since(start)
				}
				if agentSaw == 0 && s.a.session() != oldAgentSession {
					agentSaw = time.Since(start)
				}
				return cpSaw != 0 && agentSaw != 0
			})
			t.Logf("blackholed %s: the control plane ended the session after %s, the agent after %s",
				name, cpSaw.Round(time.Millisecond), agentSaw.Round(time.Millisecond))
			if cpSaw > detectBound || agentSaw > detectBound {
				t.Errorf("detected after %s (control plane) and %s (agent), want within %s", cpSaw, agentSaw, detectBound)
			}
			s.cp.waitAgentStatus(s.a.ID, protocol.AgentOnline, 5*time.Second)
			checkExactlyOnce(t, s.cp, map[string]wantJob{j.ID: {protocol.JobSucceeded, "", 1}}, s.a)
			eventually(t, 5*time.Second, "the result to be acknowledged", func() bool {
				return s.a.frames.count("in", protocol.TypeResultAck, j.ID) >= 1
			})
			if n := s.a.Backend.calls.Load(); n != 1 {
				t.Errorf("the secret was read %d times, want once", n)
			}
		})
	}
}

// --- scenario 8 --------------------------------------------------------------

// awsFront sits in front of the fake AWS Secrets Manager and holds the
// GetSecretValue calls for the secrets it was told to hold until they are
// released (or the caller goes away), so that a job can be made as slow as a
// scenario needs. It signals each held call on arrived.
type awsFront struct {
	fake    *secretstest.AWS
	srv     *httptest.Server
	URL     string
	arrived chan string // the secret id of each held call

	mu    sync.Mutex               // guards the fields below
	hold  map[string]chan struct{} // closed on release
	calls map[string]int           // calls received, held or not, by secret id
}

func newAWSFront(t *testing.T, fake *secretstest.AWS, hold ...string) *awsFront {
	t.Helper()
	f := &awsFront{fake: fake, arrived: make(chan string, 64), hold: map[string]chan struct{}{}, calls: map[string]int{}}
	f.Hold(hold...)
	target, _ := url.Parse(fake.URL)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		var in struct{ SecretId string }
		_ = json.Unmarshal(body, &in)
		f.mu.Lock()
		release := f.hold[in.SecretId]
		f.calls[in.SecretId]++
		f.mu.Unlock()
		if release != nil {
			select {
			case f.arrived <- in.SecretId:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target.String()+r.URL.Path, strings.NewReader(string(body)))
		req.Header = r.Header.Clone()
		resp, err := fake.Client().Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		b, _ := io.ReadAll(resp.Body)
		_, _ = w.Write(b)
	}))
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { f.Release() })
	return f
}

// Calls returns how many calls for the secret id came in, held or not.
func (f *awsFront) Calls(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

// Hold holds the calls for the secret ids from now on.
func (f *awsFront) Hold(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if f.hold[id] == nil {
			f.hold[id] = make(chan struct{})
		}
	}
}

// Release lets the held calls for ids (all, without ids) go on, and stops
// holding them.
func (f *awsFront) Release(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, ch := range f.hold {
		if len(ids) == 0 || slices.Contains(ids, id) {
			close(ch)
			delete(f.hold, id)
		}
	}
}

// waitArrived waits for a held call for id.
func (f *awsFront) waitArrived(t *testing.T, id string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case got := <-f.arrived:
			if got == id {
				return
			}
		case <-deadline:
			t.Fatalf("no call for the secret %s within %s", id, d)
		}
	}
}

// TestFaultBackendsThrottledSlowFailing (scenario 8): the secret manager
// throttles, fails, flakes and hangs, and GitHub is slow, fails with 5xx and
// rate-limits. Each job ends with its own error code by its deadline (or
// succeeds where a retry or a short wait helps), and once all have ended
// and the agent has stopped no goroutine is left behind. The real AWS SDK
// and go-github clients talk to the fakes. This test is not parallel, so
// that the goroutine check sees only what it started.
func TestFaultBackendsThrottledSlowFailing(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// After every other cleanup (this one was registered first).
		if err := goleak.Find(baseline); err != nil {
			t.Errorf("goroutines left behind: %v", err)
		}
	})
	fakeAWS := secretstest.NewAWS(t)
	gh := githubtest.New(githubtest.Options{Mode: githubtest.GHES})
	t.Cleanup(gh.Close)
	value := func(token string) string { return `{"username": "octo-bot", "token": "` + token + `"}` }
	tok := func(name string) string { return canary + "-" + name }
	for _, name := range []string{"aws/throttled", "aws/5xx", "aws/flaky", "aws/slow", "aws/denied", "aws/ok"} {
		fakeAWS.Put(secretstest.AWSSecret{Name: name, String: value(canary)})
	}
	classic := func(faults ...githubtest.Fault) githubtest.Token {
		return githubtest.Token{Type: githubtest.Classic, Login: "svc", UserID: 7, Scopes: []string{"repo"}, Faults: faults}
	}
	ghCases := map[string]githubtest.Token{
		"gh/slow":      classic(githubtest.Fault{Kind: githubtest.Slow, Delay: time.Minute}),
		"gh/5xx":       classic(githubtest.Fault{Kind: githubtest.ServerError, Status: 503}),
		"gh/limited":   classic(githubtest.Fault{Kind: githubtest.RateLimited, RetryAfter: time.Hour}),
		"gh/secondary": classic(githubtest.Fault{Kind: githubtest.SecondaryRateLimited, RetryAfter: time.Second, Times: 1}),
		"gh/ok":        classic(),
	}
	for name, tk := range ghCases {
		fakeAWS.Put(secretstest.AWSSecret{Name: name, String: value(tok(name))})
		gh.AddToken(tok(name), tk)
	}
	fakeAWS.Fail(func(call int, r secretstest.AWSRequest) *secretstest.AWSError {
		switch r.SecretID {
		case "aws/throttled":
			return &secretstest.AWSError{Status: 400, Type: "ThrottlingException", Message: "Rate exceeded"}
		case "aws/5xx":
			return &secretstest.AWSError{Status: 500, Type: "InternalServiceError", Message: "internal error"}
		case "aws/denied":
			return &secretstest.AWSError{Status: 400, Type: "AccessDeniedException", Message: "not authorized to perform secretsmanager:GetSecretValue"}
		case "aws/flaky":
			if flaky := countCalls(fakeAWS, "aws/flaky"); flaky <= 2 {
				return &secretstest.AWSError{Status: 503, Type: "ServiceUnavailableException", Message: "try again"}
			}
		}
		return nil
	})
	front := newAWSFront(t, fakeAWS, "aws/slow")

	cp := newControlPlane(t)
	_, token := cp.register("faulty-backends")
	stateDir := filepath.Join(t.TempDir(), "state")
	id, err := cp.enroll(token, stateDir)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	caFile, err := gh.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		ControlPlane: cp.URL(), StateDir: stateDir, InsecureAllowWS: true, Concurrency: 16, DrainGrace: 5 * time.Second,
		Log: agent.LogConfig{Format: "json", Level: "debug"},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindResolveCredentials), string(protocol.KindTestConnection)},
			Secrets: []policy.SecretRule{
				{Backend: protocol.BackendAWS, SecretName: "aws/*"},
				{Backend: protocol.BackendAWS, SecretName: "gh/*", Hosts: []string{gh.URL()}},
			},
		},
		GitHub: github.Config{CAFile: caFile, Timeout: 20 * time.Second},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("agent config: %v", err)
	}
	p := &agentProc{t: t, ID: id.AgentID, StateDir: stateDir, frames: &frameLog{}, logs: &lockedBuffer{}, done: make(chan struct{})}
	log := newLogger(p.logs)
	aws, err := secrets.NewAWS(context.Background(), secrets.AWSConfig{Region: fakeAWS.Region, Endpoint: front.URL, MaxBackoff: 50 * time.Millisecond},
		secrets.AWSOptions{
			Credentials: credentials.NewStaticCredentialsProvider(secretstest.AWSAccessKeyID, secretstest.AWSSecretAccessKey, ""),
			HTTPClient:  front.srv.Client(), Logger: log.Named("aws"),
		})
	if err != nil {
		t.Fatalf("NewAWS: %v", err)
	}
	p.Agent, err = agent.New(agent.Options{
		Config: cfg, Identity: id, Secrets: secrets.NewSet(aws), Logger: log, Version: "e2e", Observe: p.frames.observe,
		Backoff: backoff.Options{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	cp.leaks.add(func() ([]evidence, error) {
		return []evidence{p.frames.evidence("frames of agent " + p.ID), {name: "log of agent " + p.ID, data: p.logs.Bytes()}}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.err = p.Agent.Run(ctx); close(p.done) }()
	t.Cleanup(func() {
		p.Agent.Abort()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of Abort")
		}
		cancel()
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(p.logs.String(), 20000))
		}
	})
	cp.waitAgentStatus(p.ID, protocol.AgentOnline, 10*time.Second)

	const timeout = 3 * time.Second
	type jobCase struct {
		kind   protocol.JobKind
		secret string
		want   wantJob
	}
	cases := []jobCase{
		{protocol.KindResolveCredentials, "aws/throttled", wantJob{protocol.JobFailed, protocol.CodeSecretBackendUnavailable, 1}},
		{protocol.KindResolveCredentials, "aws/5xx", wantJob{protocol.JobFailed, protocol.CodeSecretBackendUnavailable, 1}},
		{protocol.KindResolveCredentials, "aws/denied", wantJob{protocol.JobFailed, protocol.CodeSecretAccessDenied, 1}},
		{protocol.KindResolveCredentials, "aws/flaky", wantJob{protocol.JobSucceeded, "", 1}},
		{protocol.KindResolveCredentials, "aws/ok", wantJob{protocol.JobSucceeded, "", 1}},
		{protocol.KindTestConnection, "gh/5xx", wantJob{protocol.JobFailed, protocol.CodeGitHubUnreachable, 1}},
		{protocol.KindTestConnection, "gh/limited", wantJob{protocol.JobFailed, protocol.CodeGitHubRateLimited, 1}},
		{protocol.KindTestConnection, "gh/secondary", wantJob{protocol.JobSucceeded, "", 1}},
		{protocol.KindTestConnection, "gh/ok", wantJob{protocol.JobSucceeded, "", 1}},
	}
	// Those that cannot end in time fail with timeout (or expire with it,
	// when the control plane's deadline comes first).
	slow := []jobCase{
		{protocol.KindResolveCredentials, "aws/slow", wantJob{}},
		{protocol.KindTestConnection, "gh/slow", wantJob{}},
	}
	submit := func(c jobCase) protocol.JobView {
		params := protocol.Params{Secret: &protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: c.secret, UsernameKey: "username", PasswordKey: "token"}}
		if c.kind == protocol.KindTestConnection {
			params.GitHubURL, params.GitHubKind = gh.URL(), protocol.GitHubEnterpriseServer
			params.RequiredScopes = []string{"repo"}
		}
		var j protocol.JobView
		cp.doJSON(http.MethodPost, "/api/v1/jobs", protocol.SubmitJobRequest{
			AgentID: p.ID, Kind: c.kind, Params: params, Timeout: protocol.Duration(timeout),
		}, http.StatusCreated, &j)
		return j
	}
	ids := map[string]jobCase{}
	for _, c := range append(slices.Clone(cases), slow...) {
		ids[submit(c).ID] = c
	}
	front.waitArrived(t, "aws/slow", 5*time.Second)

	want := map[string]wantJob{}
	for id, c := range ids {
		j := cp.waitJob(id, timeout+10*time.Second)
		late := j.FinishedAt.Sub(j.Deadline)
		if late > time.Second {
			t.Errorf("%s (%s) ended %s after its deadline", c.secret, c.kind, late)
		}
		w := c.want
		if w.state == "" {
			// Too slow for its deadline: failed by the agent or expired by
			// the control plane, whichever came first; timeout either way.
			if j.State != protocol.JobFailed && j.State != protocol.JobExpired {
				t.Errorf("%s: %s, want failed or expired with timeout", c.secret, j.State)
			}
			w = wantJob{j.State, protocol.CodeTimeout, 1}
			if j.FinishedAt.Before(j.Deadline.Add(-200 * time.Millisecond)) {
				t.Errorf("%s ended at %s, before its deadline %s", c.secret, j.FinishedAt, j.Deadline)
			}
		}
		want[id] = w
		if c.kind == protocol.KindTestConnection && j.State == protocol.JobSucceeded && (j.Result.Connection == nil || j.Result.Connection.Login != "svc") {
			t.Errorf("%s: the connection test says %+v, want login svc", c.secret, j.Result.Connection)
		}
		t.Logf("%-14s %-20s %-9s %-28v after %s", c.secret, c.kind, j.State, errCode(j), j.FinishedAt.Sub(j.CreatedAt).Round(time.Millisecond))
	}
	checkExactlyOnce(t, cp, want, p)
	eventually(t, 5*time.Second, "no job to run on the agent", func() bool { return p.Agent.Status().JobsRunning == 0 })
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

func errCode(j protocol.JobView) protocol.ErrorCode {
	if j.Error == nil {
		return ""
	}
	return j.Error.Code
}

// countCalls counts the fake's calls for a secret id.
func countCalls(f *secretstest.AWS, id string) int {
	n := 0
	for _, r := range f.Requests() {
		if r.SecretID == id {
			n++
		}
	}
	return n
}
