package e2e

// The fault scenarios that kill a process, with the built binaries
// (binary_test.go): the control plane killed mid-job (2), the agent killed
// mid-job (3), SIGTERM with jobs in flight (7), and a crash loop of the
// control plane during writes (9). The agent binary reads its secrets from
// the fake AWS Secrets Manager (secretstest) through an awsFront that holds
// a secret's reads for as long as the scenario needs a job to run; it finds
// the fake's static credentials in its environment, through the AWS SDK's
// default chain, and nothing else of the machine's AWS setup.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
	"github.com/orchestrator/orchestrator/protocol"
)

// binFaults is a control plane binary, an enrolled agent binary whose AWS
// backend reads the fake AWS through an awsFront, and every process started,
// for the canary search.
type binFaults struct {
	*binSetup
	aws   *secretstest.AWS
	front *awsFront
	env   []string

	procsMu sync.Mutex // guards procs
	procs   []*binProc
}

// binSecrets are the secrets in the fake AWS; the agent's policy allows
// ci/*.
var binSecrets = []string{"ci/a", "ci/b", "ci/c", "ci/d", "ci/e"}

// newBinFaults starts the control plane binary, enrolls an agent with the
// agent binary, and writes the agent's config: the AWS backend through a
// front that holds the reads of the secrets in hold. extra is added to the
// config (YAML, top level).
func newBinFaults(t *testing.T, extra string, hold ...string) *binFaults {
	t.Helper()
	b := &binFaults{binSetup: newBinSetup(t)}
	b.track(b.cp)
	b.aws = secretstest.NewAWS(t)
	for _, name := range binSecrets {
		b.aws.Put(secretstest.AWSSecret{Name: name, String: `{"username": "octo", "token": "` + binCanary + `"}`})
	}
	b.front = newAWSFront(t, b.aws, hold...)
	cfg := fmt.Sprintf(`control_plane: http://%s
insecure_allow_ws: true
state_dir: %s
drain_grace: 10s
concurrency: 4
log: {format: json, level: debug}
secrets:
  aws: {region: %s, endpoint: %q, max_backoff: 50ms}
policy:
  job_kinds: [resolve_credentials]
  secrets:
    - {backend: aws, secret_name: "ci/*"}
%s`, b.addr, filepath.Join(b.dir, "agent-state"), b.aws.Region, b.front.URL, extra)
	if err := os.WriteFile(b.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// The fake's static keys, through the SDK's default chain (environment
	// first); no shared file, profile or instance metadata of this machine.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b.env = []string{
		"AWS_ACCESS_KEY_ID=" + secretstest.AWSAccessKeyID, "AWS_SECRET_ACCESS_KEY=" + secretstest.AWSSecretAccessKey,
		"AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_DEFAULT_PROFILE=", "AWS_CONFIG_FILE=" + empty,
		"AWS_SHARED_CREDENTIALS_FILE=" + empty, "AWS_EC2_METADATA_DISABLED=true", "AWS_ROLE_ARN=",
		"AWS_WEB_IDENTITY_TOKEN_FILE=", "AWS_CONTAINER_CREDENTIALS_FULL_URI=", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=",
	}
	t.Cleanup(b.checkOutputs) // after the processes' own cleanups (registered later) killed them
	return b
}

func (b *binFaults) track(p *binProc) {
	b.procsMu.Lock()
	b.procs = append(b.procs, p)
	b.procsMu.Unlock()
}

// startAgentBin starts the agent binary with env added.
func (b *binFaults) startAgentBin(env ...string) *binProc {
	b.t.Helper()
	p := startBinEnv(b.t, "agent", append(slices.Clone(b.env), env...), "run", "--config", b.config)
	b.track(p)
	return p
}

// restartControlPlane starts a new control plane process on the same
// address and data directory.
func (b *binFaults) restartControlPlane() {
	b.t.Helper()
	b.startControlPlane(b.addr)
	b.track(b.cp)
}

// killControlPlane kills the control plane with SIGKILL.
func (b *binFaults) killControlPlane() {
	b.t.Helper()
	b.cp.signal(syscall.SIGKILL)
	b.cp.wait(10 * time.Second)
}

// checkOutputs searches every process's output for the canary.
func (b *binFaults) checkOutputs() {
	b.procsMu.Lock()
	defer b.procsMu.Unlock()
	for i, p := range b.procs {
		for _, c := range []string{binCanary, canary} {
			if form, found := redact.Find([]byte(p.output()), c); found {
				b.t.Errorf("the canary secret (%s form) leaked into the output of %s process %d", form, p.name, i)
			}
		}
	}
}

// evidence is what the harness's canary check searches in a test that
// runs an agent of this process against the binaries: every process's
// output, every API answer and the store's files.
func (b *binFaults) evidence() ([]evidence, error) {
	b.procsMu.Lock()
	var ev []evidence
	for i, p := range b.procs {
		ev = append(ev, evidence{name: fmt.Sprintf("output of %s process %d", p.name, i), data: []byte(p.output())})
	}
	b.procsMu.Unlock()
	b.answerMu.Lock()
	ev = append(ev, evidence{name: "API answers", data: bytes.Clone(b.answers.Bytes())})
	b.answerMu.Unlock()
	files, err := filesUnder(filepath.Join(b.dir, "data"))
	return append(ev, files...), err
}

// submit queues a resolve_credentials job for secret and returns it.
func (b *binFaults) submit(secret string, timeout time.Duration) protocol.JobView {
	b.t.Helper()
	var j protocol.JobView
	b.api("POST", "/api/v1/jobs", protocol.SubmitJobRequest{
		AgentID: b.agentID, Kind: protocol.KindResolveCredentials, Timeout: protocol.Duration(timeout),
		Params: protocol.Params{Secret: &protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: secret, UsernameKey: "username", PasswordKey: "token"}},
	}, http.StatusCreated, &j)
	return j
}

// getJob reads a job, waiting up to wait for it to end.
func (b *binFaults) getJob(id string, wait time.Duration) protocol.JobView {
	b.t.Helper()
	var j protocol.JobView
	b.api("GET", "/api/v1/jobs/"+id+waitQuery(wait), nil, http.StatusOK, &j)
	return j
}

// waitState waits until the job is in state.
func (b *binFaults) waitState(id string, state protocol.JobState, d time.Duration) protocol.JobView {
	b.t.Helper()
	var j protocol.JobView
	eventually(b.t, d, "job "+id+" to be "+string(state), func() bool {
		j = b.getJob(id, 0)
		return j.State == state
	})
	return j
}

func (b *binFaults) dbPath() string { return filepath.Join(b.dir, "data", sqlite.FileName) }

// calls counts the agent's reads of a secret (held ones too).
func (b *binFaults) calls(secret string) int { return b.front.Calls(secret) }

// countLog counts the log lines of out with msg about jobID.
func countLog(out, msg, jobID string) int {
	n := 0
	for _, l := range logLines([]byte(out)) {
		if l["msg"] == msg && l["job_id"] == jobID {
			n++
		}
	}
	return n
}

// --- scenario 2 ---------------------------------------------------------------

// TestFaultBinaryControlPlaneKilledMidJob (scenario 2): the control plane
// is killed with SIGKILL while a job runs on the agent, the job finishes
// while it is down, and a new control plane process on the same data
// directory records the result the agent kept: once, as the first attempt.
// A job acknowledged just before the kill ends too.
func TestFaultBinaryControlPlaneKilledMidJob(t *testing.T) {
	t.Parallel()
	b := newBinFaults(t, "", "ci/a")
	ag := b.startAgentBin()
	b.waitStatus(protocol.AgentOnline, 20*time.Second)

	j1 := b.submit("ci/a", time.Minute)
	b.front.waitArrived(t, "ci/a", 10*time.Second)
	b.waitState(j1.ID, protocol.JobRunning, 5*time.Second)
	j2 := b.submit("ci/b", time.Minute) // acknowledged (201) just before the kill

	b.killControlPlane()
	b.front.Release("ci/a") // the job ends while the control plane is down
	ag.waitLog(10*time.Second, `"job done"`, j1.ID)
	b.restartControlPlane()
	b.waitStatus(protocol.AgentOnline, 30*time.Second)

	checkJobsEnded(t, b.getJob, b.dbPath(), map[string]wantJob{
		j1.ID: {protocol.JobSucceeded, "", 1},
		j2.ID: {protocol.JobSucceeded, "", 0},
	})
	if n := b.calls("ci/a"); n != 1 {
		t.Errorf("the job's secret was read %d times, want once", n)
	}
	if n := countLog(ag.output(), "job done", j1.ID); n != 1 {
		t.Errorf("the agent ran the job %d times, want once", n)
	}
	if !strings.Contains(b.cp.output(), "open jobs reloaded") {
		t.Errorf("the new control plane did not reload the open jobs:\n%s", b.cp.output())
	}
}

// --- scenario 3 ---------------------------------------------------------------

// TestFaultBinaryAgentKilledMidJob (scenario 3): the agent is killed with
// SIGKILL while a job runs, and restarted. The README's rule: the job keeps
// its state while the agent is away; the new process does not list it in
// its hello, so it is dispatched again as attempt 2 (and succeeds). A job
// whose agent is killed under it three times fails with agent_offline.
func TestFaultBinaryAgentKilledMidJob(t *testing.T) {
	t.Parallel()
	b := newBinFaults(t, "", "ci/a", "ci/b")
	ag := b.startAgentBin()
	b.waitStatus(protocol.AgentOnline, 20*time.Second)

	j1 := b.submit("ci/a", time.Minute)
	b.front.waitArrived(t, "ci/a", 10*time.Second)
	b.waitState(j1.ID, protocol.JobRunning, 5*time.Second)
	ag.signal(syscall.SIGKILL)
	ag.wait(10 * time.Second)
	b.waitStatus(protocol.AgentOffline, detectBound+time.Second)
	if away := b.getJob(j1.ID, 300*time.Millisecond); away.State.Terminal() || away.Attempts != 1 {
		t.Fatalf("while the agent is away the job is %s after %d attempts, want open after 1", away.State, away.Attempts)
	}
	ag = b.startAgentBin()
	b.front.waitArrived(t, "ci/a", 20*time.Second) // dispatched again to the new process
	if j := b.getJob(j1.ID, 0); j.Attempts != 2 {
		t.Fatalf("the job came back as attempt %d, want 2", j.Attempts)
	}
	b.front.Release("ci/a")
	checkJobsEnded(t, b.getJob, b.dbPath(), map[string]wantJob{j1.ID: {protocol.JobSucceeded, "", 2}})
	if n := countLog(ag.output(), "job done", j1.ID); n != 1 {
		t.Errorf("the new process ran the job %d times, want once", n)
	}

	// Three times killed under the same job: it fails.
	j2 := b.submit("ci/b", time.Minute)
	for attempt := 1; attempt <= 3; attempt++ {
		b.front.waitArrived(t, "ci/b", 20*time.Second)
		if j := b.getJob(j2.ID, 0); j.Attempts != attempt {
			t.Fatalf("kill %d: the job is at attempt %d", attempt, j.Attempts)
		}
		ag.signal(syscall.SIGKILL)
		ag.wait(10 * time.Second)
		b.waitStatus(protocol.AgentOffline, detectBound+time.Second)
		ag = b.startAgentBin()
	}
	checkJobsEnded(t, b.getJob, b.dbPath(), map[string]wantJob{
		j1.ID: {protocol.JobSucceeded, "", 2},
		j2.ID: {protocol.JobFailed, protocol.CodeAgentOffline, 3},
	})
	b.waitStatus(protocol.AgentOnline, 20*time.Second)
	if j := b.resolveAWS("ci/c"); j.State != protocol.JobSucceeded {
		t.Fatalf("a job after the kills: %s %v", j.State, j.Error)
	}
	if n := b.calls("ci/b"); n != 3 {
		t.Errorf("the thrice-killed job's secret was read %d times, want 3 (one per attempt)", n)
	}
}

// resolveAWS submits a job for secret and waits for it to end.
func (b *binFaults) resolveAWS(secret string) protocol.JobView {
	b.t.Helper()
	var j protocol.JobView
	b.api("POST", "/api/v1/jobs?wait=20s", protocol.SubmitJobRequest{
		AgentID: b.agentID, Kind: protocol.KindResolveCredentials,
		Params: protocol.Params{Secret: &protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: secret, UsernameKey: "username", PasswordKey: "token"}},
	}, http.StatusCreated, &j)
	return j
}

// --- scenario 7 ---------------------------------------------------------------

// TestFaultBinaryAgentSIGTERM (scenario 7): SIGTERM with two jobs in
// flight. The agent says it is draining (no new job is sent to it), the
// jobs finish within the grace period, their results are recorded, and the
// agent exits 0 with a normal close. A job that outlasts the grace period
// (AGENT_DRAIN_GRACE=1s) is canceled on the agent, reported, and ends
// failed with canceled; the agent still exits 0.
func TestFaultBinaryAgentSIGTERM(t *testing.T) {
	t.Parallel()
	b := newBinFaults(t, "", "ci/a", "ci/b")
	ag := b.startAgentBin()
	b.waitStatus(protocol.AgentOnline, 20*time.Second)
	j1, j2 := b.submit("ci/a", time.Minute), b.submit("ci/b", time.Minute)
	for _, j := range []protocol.JobView{j1, j2} {
		b.waitState(j.ID, protocol.JobRunning, 10*time.Second)
	}

	sent := time.Now()
	ag.signal(syscall.SIGTERM)
	b.waitStatus(protocol.AgentDraining, 5*time.Second)
	j3 := b.submit("ci/c", time.Minute)
	if got := b.getJob(j3.ID, 300*time.Millisecond); got.State != protocol.JobQueued || got.Attempts != 0 {
		t.Fatalf("a job submitted during the drain is %s after %d attempts, want queued", got.State, got.Attempts)
	}
	b.front.Release("ci/a", "ci/b")
	if code := ag.wait(15 * time.Second); code != 0 {
		t.Fatalf("the agent exited %d after SIGTERM, want 0", code)
	}
	if took := time.Since(sent); took > 10*time.Second {
		t.Errorf("the drain took %s, more than the grace of 10s", took)
	}
	if out := ag.output(); strings.Contains(out, "results not acknowledged before exit") || !strings.Contains(out, `"draining"`) {
		t.Errorf("the agent's drain did not flush its results:\n%s", tail(out, 5000))
	}
	b.cp.waitLog(5*time.Second, `"agent disconnected"`, "agent closed: agent stopped")
	checkJobsEnded(t, b.getJob, b.dbPath(), map[string]wantJob{
		j1.ID: {protocol.JobSucceeded, "", 1}, j2.ID: {protocol.JobSucceeded, "", 1},
	})
	if got := b.getJob(j3.ID, 0); got.State != protocol.JobQueued {
		t.Fatalf("after the drain the third job is %s, want still queued", got.State)
	}

	// The next process runs the queued job; one that outlasts a short grace
	// is canceled.
	b.front.Hold("ci/d")
	ag = b.startAgentBin("AGENT_DRAIN_GRACE=1s")
	j4 := b.submit("ci/d", time.Minute)
	b.front.waitArrived(t, "ci/d", 20*time.Second)
	b.waitState(j4.ID, protocol.JobRunning, 5*time.Second)
	sent = time.Now()
	ag.signal(syscall.SIGTERM)
	if code := ag.wait(10 * time.Second); code != 0 {
		t.Fatalf("the agent exited %d after SIGTERM past its grace, want 0", code)
	}
	if took := time.Since(sent); took > 6*time.Second {
		t.Errorf("the drain took %s with a grace of 1s", took)
	}
	checkJobsEnded(t, b.getJob, b.dbPath(), map[string]wantJob{
		j1.ID: {protocol.JobSucceeded, "", 1}, j2.ID: {protocol.JobSucceeded, "", 1},
		j3.ID: {protocol.JobSucceeded, "", 1}, j4.ID: {protocol.JobFailed, protocol.CodeCanceled, 1},
	})
	if j := b.getJob(j4.ID, 0); !strings.Contains(j.Error.Message, "grace") {
		t.Errorf("the canceled job says %q, want the drain grace named", j.Error.Message)
	}
}

// --- scenario 9 ---------------------------------------------------------------

// TestFaultBinaryControlPlaneCrashLoop (scenario 9): while a client submits
// jobs and an agent runs them, the control plane binary is killed with
// SIGKILL at random points, many times. After each kill the store's file
// passes PRAGMA integrity_check and holds every job whose submission the
// API acknowledged (201 with an id); each restart opens it cleanly. At the
// end every acknowledged job reaches one terminal state, recorded once.
func TestFaultBinaryControlPlaneCrashLoop(t *testing.T) {
	t.Parallel()
	const (
		kills   = 20
		budget  = 50 * time.Second // 20 kills take about 25s on 2 cores under -race
		timeout = 30 * time.Second
	)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 9))
	t.Logf("random seed %d", seed)

	setup := time.Now()
	b := newBinFaults(t, "")
	// An agent in this process (fast reconnects, so that it works between
	// the kills), enrolled over the API.
	leaks := newLeakCheck(t)
	leaks.add(b.evidence)
	var reg protocol.RegisterAgentResponse
	b.api("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "crash-loop-agent"}, http.StatusCreated, &reg)
	stateDir := filepath.Join(t.TempDir(), "state")
	id, err := agent.Enroll(testCtx(t, time.Minute), agent.EnrollOptions{
		ControlPlane: "http://" + b.addr, InsecureAllowWS: true, HTTPClient: b.client,
		Token: reg.EnrollmentToken.Token, StateDir: stateDir, Hostname: "e2e-host", Version: "e2e",
	})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	a := runAgent(t, leaks, "http://"+b.addr, id, agentConfig{stateDir: stateDir, concurrency: 8})
	b.agentID = id.AgentID
	b.waitStatus(protocol.AgentOnline, 20*time.Second)

	// The client: submits jobs without pause, keeps the ids the API
	// acknowledged (at most maxJobs, what one list answer holds).
	const maxJobs = 900
	var (
		ackMu    sync.Mutex
		acked    []string
		failures atomic.Int64
	)
	body, _ := json.Marshal(protocol.SubmitJobRequest{
		AgentID: a.ID, Kind: protocol.KindResolveCredentials, Params: resolveParams(allowedSecret), Timeout: protocol.Duration(timeout),
	})
	addr := b.addr // the same across restarts
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for range 3 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ackMu.Lock()
				full := len(acked) >= maxJobs
				ackMu.Unlock()
				if full {
					return
				}
				status, answer, err := b.try(addr, "POST", "/api/v1/jobs", body)
				var j protocol.JobView
				if err == nil && status == http.StatusCreated && json.Unmarshal(answer, &j) == nil && j.ID != "" {
					ackMu.Lock()
					acked = append(acked, j.ID)
					ackMu.Unlock()
				} else {
					failures.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(15 * time.Millisecond)
			}
		}()
	}
	stopClients := sync.OnceFunc(func() { close(stop); clients.Wait() })
	t.Cleanup(stopClients)
	ackedSoFar := func() []string {
		ackMu.Lock()
		defer ackMu.Unlock()
		return slices.Clone(acked)
	}

	start := time.Now()
	t.Logf("set up in %s", time.Since(setup).Round(time.Millisecond))
	done, lastRestart := 0, time.Now()
	for done < kills && time.Since(start) < budget {
		time.Sleep(time.Duration(200+rng.IntN(900)) * time.Millisecond) // up and writing
		before := ackedSoFar()
		b.killControlPlane()
		done++
		integrityCheck(t, b.dbPath(), before)
		b.restartControlPlane()
		lastRestart = time.Now()
	}
	t.Logf("%d kills in %s", done, time.Since(start).Round(time.Millisecond))
	if done < 15 {
		t.Errorf("only %d kills within %s, want at least 15", done, budget)
	}
	stopClients()
	ids := ackedSoFar()
	t.Logf("%d submissions acknowledged, %d failed or cut (not acknowledged)", len(ids), failures.Load())
	if len(ids) < 50 {
		t.Fatalf("only %d jobs acknowledged: the client did not get through", len(ids))
	}

	// The last control plane stays up: every acknowledged job ends.
	b.waitStatus(protocol.AgentOnline, 20*time.Second)
	list := func() map[string]protocol.JobView {
		var l protocol.JobList
		b.api("GET", "/api/v1/jobs?limit=1000&agent_id="+a.ID, nil, http.StatusOK, &l)
		out := make(map[string]protocol.JobView, len(l.Jobs))
		for _, j := range l.Jobs {
			out[j.ID] = j
		}
		return out
	}
	var first map[string]protocol.JobView
	eventually(t, timeout+20*time.Second, "every acknowledged job to end", func() bool {
		first = list()
		for _, id := range ids {
			if j, ok := first[id]; !ok || !j.State.Terminal() {
				return false
			}
		}
		return true
	})
	t.Logf("every acknowledged job ended %s after the last restart", time.Since(lastRestart).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond) // a late duplicate would land meanwhile
	second := list()
	stored := readStoreJobs(t, b.dbPath())
	ran := map[string]int{}
	for _, l := range logLines(a.logs.Bytes()) {
		if id, ok := l["job_id"].(string); ok && l["msg"] == "job done" {
			ran[id]++
		}
	}
	states := map[string]int{}
	for _, id := range ids {
		j := first[id]
		// Succeeded; or lost three times (agent_offline); or out of time
		// while the control plane was down (expired): each is one end.
		states[string(j.State)+" "+string(errCode(j))]++
		checkJob(t, j, wantJob{state: j.State, code: errCode(j)})
		if j.State == protocol.JobCanceled {
			t.Errorf("job %s ended canceled (%v)", id, j.Error)
		}
		if !sameEnd(j, second[id]) {
			t.Errorf("job %s changed after it ended: %+v, then %+v", id, j, second[id])
		}
		if st := stored[id]; st.rows != 1 || st.state != string(j.State) || st.attempt != j.Attempts ||
			!st.finished.Valid || st.finished.Int64 != j.FinishedAt.UnixNano() {
			t.Errorf("job %s: the store's row %+v differs from the API (%s, %d, %v)", id, st, j.State, j.Attempts, j.FinishedAt)
		}
		// The agent never ran a job more often than it was dispatched.
		if ran[id] > j.Attempts {
			t.Errorf("job %s ran %d times in %d attempts", id, ran[id], j.Attempts)
		}
	}
	t.Logf("ends: %v", states)
	if states["succeeded "] < len(ids)/2 {
		t.Errorf("only %d of %d jobs succeeded", states["succeeded "], len(ids))
	}
}

// try calls the API without failing the test: the control plane may be
// down. Answers are kept for the canary search.
func (b *binFaults) try(addr, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: b.client.Transport, Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	a, err := io.ReadAll(resp.Body)
	b.answerMu.Lock()
	b.answers.Write(a)
	b.answerMu.Unlock()
	return resp.StatusCode, a, err
}

// integrityCheck opens the store's file of a stopped control plane, runs
// PRAGMA integrity_check, and checks that it holds every job in ids.
func integrityCheck(t *testing.T, path string, ids []string) {
	t.Helper()
	db := openStoreFile(t, path)
	defer db.Close()
	var result string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&result); err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	if result != "ok" {
		t.Fatalf("integrity_check: %s", result)
	}
	have := map[string]bool{}
	rows, err := db.Query("SELECT id FROM jobs")
	if err != nil {
		t.Fatalf("read the jobs: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	for _, id := range ids {
		if !have[id] {
			t.Fatalf("job %s was acknowledged (201) but is not in the store after the kill", id)
		}
	}
}
