package controlplane

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// The dispatcher's rules (see its doc comment), each played by a fake agent.

// quiet is how long a test waits to see that the control plane sends
// nothing. Only negative checks use it.
const quiet = 300 * time.Millisecond

func TestDispatchConcurrency(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("conc-1")
	a := c.connect(k, func(h *protocol.Hello) { h.Concurrency = 1 })
	j1 := c.submit(k.id, time.Minute)
	j2 := c.submit(k.id, time.Minute)
	j3 := c.submit(k.id, time.Minute)

	got := a.expectJob()
	if got.JobID != j1.ID || got.Attempt != 1 || got.Kind != protocol.KindResolveCredentials || got.Params.Secret == nil || !got.Deadline.Equal(j1.Deadline) {
		t.Fatalf("first job %+v, want %s attempt 1 with its params and deadline %s", got, j1.ID, j1.Deadline)
	}
	if v := c.job(j1.ID); v.State != protocol.JobDispatched || v.Attempts != 1 || v.DispatchedAt == nil {
		t.Errorf("first job: %s attempts %d, want dispatched attempts 1", v.State, v.Attempts)
	}
	a.accept(got) // accepted still holds the slot
	a.expectNothing(quiet)
	if v := c.job(j2.ID); v.State != protocol.JobQueued {
		t.Errorf("second job is %s while the first runs, want queued", v.State)
	}
	if v := c.agentView(k.id); v.RunningJobs != 1 {
		t.Errorf("running_jobs %d, want 1", v.RunningJobs)
	}
	a.succeed(j1.ID, 1, "hmac-sha256:111111111111111111111111")
	// In order: j2, then j3 only after j2's result.
	if got := a.expectAckAndJob(j1.ID); got.JobID != j2.ID {
		t.Fatalf("second dispatch %s, want %s", got.JobID, j2.ID)
	}
	a.expectNothing(quiet)
	a.send(errResult(j2.ID, 1, protocol.CodeSecretNotFound))
	if got := a.expectAckAndJob(j2.ID); got.JobID != j3.ID {
		t.Fatalf("third dispatch %s, want %s", got.JobID, j3.ID)
	}
	if v := c.job(j2.ID); v.State != protocol.JobFailed || v.Error == nil || v.Error.Code != protocol.CodeSecretNotFound {
		t.Errorf("second job %s %v, want failed secret_not_found (the agent's error)", v.State, v.Error)
	}

	// A wider agent gets as many jobs as it announced, at once.
	k2 := c.newAgent("conc-3")
	b := c.connect(k2, func(h *protocol.Hello) { h.Concurrency = 3 })
	for range 4 {
		c.submit(k2.id, time.Minute)
	}
	for range 3 {
		b.expectJob()
	}
	b.expectNothing(quiet)
}

func TestDispatchBusyRejection(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("busy-1")
	a := c.connect(k, nil)
	j := c.submit(k.id, time.Minute)
	got := a.expectJob()
	rejectedAt := time.Now()
	a.reject(got, protocol.CodeAgentBusy)
	// Queued again (the refused dispatch is not counted), then sent again
	// after a pause.
	again := a.expectJob()
	if again.JobID != j.ID || again.Attempt != 1 {
		t.Errorf("re-sent job %s attempt %d, want %s attempt 1", again.JobID, again.Attempt, j.ID)
	}
	if el := time.Since(rejectedAt); el < 400*time.Millisecond {
		t.Errorf("re-sent %s after the busy rejection, want a pause (500ms)", el)
	}
	a.succeed(j.ID, again.Attempt, "hmac-sha256:222222222222222222222222")
	a.expectAck(j.ID)
	if v := c.job(j.ID); v.State != protocol.JobSucceeded || v.Attempts != 1 {
		t.Errorf("job %s attempts %d, want succeeded attempts 1", v.State, v.Attempts)
	}
}

func TestDispatchBusyRequeuedState(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("busy-2")
	a := c.connect(k, nil)
	j := c.submit(k.id, time.Minute)
	a.reject(a.expectJob(), protocol.CodeAgentBusy)
	// Between the rejection and the next dispatch (500ms later) the job is
	// queued, its refused dispatch not counted.
	v := c.waitState(j.ID, protocol.JobQueued)
	if v.Attempts != 0 || v.DispatchedAt != nil {
		t.Errorf("after agent_busy: attempts %d dispatched_at %v, want 0, none", v.Attempts, v.DispatchedAt)
	}
	a.expectJob()
}

func TestDispatchRejectionFails(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("rej-1")
	a := c.connect(k, func(h *protocol.Hello) { h.Concurrency = 1 })
	j1 := c.submit(k.id, time.Minute)
	j2 := c.submit(k.id, time.Minute)
	got := a.expectJob()
	a.reject(got, protocol.CodeKindNotAllowed)
	v := c.waitState(j1.ID, protocol.JobFailed)
	if v.Error == nil || v.Error.Code != protocol.CodeKindNotAllowed || !strings.Contains(v.Error.Message, "fake agent rejects") || v.FinishedAt == nil {
		t.Errorf("rejected job: %+v, want failed with the agent's kind_not_allowed error", v.Error)
	}
	// The slot is free: the next job goes out; a rejection is not re-sent.
	if got := a.expectJob(); got.JobID != j2.ID {
		t.Errorf("next job %s, want %s", got.JobID, j2.ID)
	}
	// A late result for the failed job is acknowledged and changes nothing.
	a.succeed(j1.ID, 1, "hmac-sha256:333333333333333333333333")
	a.expectAck(j1.ID)
	if v := c.job(j1.ID); v.State != protocol.JobFailed {
		t.Errorf("after a late result: %s, want failed", v.State)
	}
}

func TestDispatchResultRecordedOnce(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("once-1")
	a := c.connect(k, nil)
	j := c.submit(k.id, time.Minute)
	got := a.expectJob()
	a.accept(got)
	a.succeed(j.ID, 1, "hmac-sha256:first00000000000000000000")
	a.expectAck(j.ID)
	first := c.job(j.ID)
	// The agent did not see the ack (say) and sends again, differently.
	a.send(errResult(j.ID, 1, protocol.CodeTimeout))
	a.expectAck(j.ID)
	a.succeed(j.ID, 1, "hmac-sha256:third00000000000000000000")
	a.expectAck(j.ID)
	v := c.job(j.ID)
	if v.State != protocol.JobSucceeded || v.Result == nil || v.Result.Credentials.Fingerprint != "hmac-sha256:first00000000000000000000" ||
		!v.FinishedAt.Equal(*first.FinishedAt) {
		t.Errorf("job after repeated results: %s %+v, want the first result only", v.State, v.Result)
	}
}

// The ack means stored: a GET made as soon as the ack arrives sees the
// result.
func TestDispatchAckAfterStore(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("ack-1")
	a := c.connect(k, func(h *protocol.Hello) { h.Concurrency = 8 })
	var ids []string
	for range 8 {
		ids = append(ids, c.submit(k.id, time.Minute).ID)
	}
	for range ids {
		j := a.expectJob()
		a.succeed(j.JobID, j.Attempt, "hmac-sha256:444444444444444444444444")
	}
	for range ids {
		m := a.expect(protocol.TypeResultAck)
		// Read the store directly: nothing in between may answer for it.
		sj, err := c.st.GetJob(testCtx(t), m.ResultAck.JobID)
		if err != nil || sj.State != protocol.JobSucceeded || sj.Output == nil {
			t.Errorf("job %s when its ack arrived: %s (%v), want succeeded with its output stored", m.ResultAck.JobID, sj.State, err)
		}
	}
}

func TestDispatchResultFromAnotherAgent(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	ka := c.newAgent("own-a")
	kb := c.newAgent("own-b")
	a := c.connect(ka, nil)
	b := c.connect(kb, nil)
	j := c.submit(ka.id, time.Minute)
	got := a.expectJob()
	a.accept(got)
	c.waitState(j.ID, protocol.JobRunning)

	// B claims A's job: acknowledged (B has nothing to keep) but not recorded.
	b.succeed(j.ID, 1, "hmac-sha256:bbbbbbbbbbbbbbbbbbbbbbbb")
	b.expectAck(j.ID)
	b.send(&protocol.Message{Type: protocol.TypeAccepted, Accepted: &protocol.Accepted{JobID: j.ID, Attempt: 1}})
	b.reject(got, protocol.CodeKindNotAllowed)
	b.expectNothing(quiet)
	if v := c.job(j.ID); v.State != protocol.JobRunning || v.Result != nil {
		t.Fatalf("A's job after B's messages: %s %+v, want still running without a result", v.State, v.Result)
	}
	a.succeed(j.ID, 1, "hmac-sha256:aaaaaaaaaaaaaaaaaaaaaaaa")
	a.expectAck(j.ID)
	if v := c.job(j.ID); v.State != protocol.JobSucceeded || v.Result.Credentials.Fingerprint != "hmac-sha256:aaaaaaaaaaaaaaaaaaaaaaaa" {
		t.Errorf("A's job: %s %+v, want A's result", v.State, v.Result)
	}
	// A result for a job that does not exist is acknowledged too.
	a.succeed("job_unknown", 1, "hmac-sha256:cccccccccccccccccccccccc")
	a.expectAck("job_unknown")
}

func TestDispatchAccepted(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("acc-1")
	a := c.connect(k, nil)
	j := c.submit(k.id, time.Minute)
	got := a.expectJob()
	a.accept(got)
	v := c.waitState(j.ID, protocol.JobRunning)
	if v.AcceptedAt == nil || v.DispatchedAt == nil || v.AcceptedAt.Before(*v.DispatchedAt) || v.FinishedAt != nil {
		t.Errorf("running job: dispatched %v accepted %v finished %v", v.DispatchedAt, v.AcceptedAt, v.FinishedAt)
	}
	// A second accepted (a duplicate delivery) changes nothing.
	a.accept(got)
	a.succeed(j.ID, 1, "hmac-sha256:555555555555555555555555")
	a.expectAck(j.ID)
	a.accept(got) // after the end: ignored
	a.expectNothing(quiet)
	if v := c.job(j.ID); v.State != protocol.JobSucceeded {
		t.Errorf("after a late accepted: %s, want succeeded", v.State)
	}
}

func TestDispatchDeadline(t *testing.T) {
	t.Parallel()
	c := newCP(t)

	t.Run("dispatched", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("dl-dispatched")
		a := c.connect(k, func(h *protocol.Hello) { h.Concurrency = 1 })
		j := c.submit(k.id, 400*time.Millisecond)
		next := c.submit(k.id, time.Minute)
		got := a.expectJob()
		a.accept(got)
		m := a.expect(protocol.TypeCancel) // the deadline cancels it on the agent
		if m.Cancel.JobID != j.ID {
			t.Errorf("cancel for %s, want %s", m.Cancel.JobID, j.ID)
		}
		v := c.job(j.ID)
		if v.State != protocol.JobExpired || v.Error == nil || v.Error.Code != protocol.CodeTimeout || !strings.Contains(v.Error.Message, "400ms") {
			t.Errorf("job %s %v, want expired timeout naming 400ms", v.State, v.Error)
		}
		// The agent's timeout result frees the slot and is not recorded over
		// the expiry.
		a.send(errResult(j.ID, 1, protocol.CodeTimeout))
		if got := a.expectAckAndJob(j.ID); got.JobID != next.ID {
			t.Errorf("next job %s, want %s", got.JobID, next.ID)
		}
		if v := c.job(j.ID); v.State != protocol.JobExpired {
			t.Errorf("after the late result: %s, want expired", v.State)
		}
	})
	t.Run("never online", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("dl-offline")
		j := c.submit(k.id, 300*time.Millisecond)
		v := c.waitState(j.ID, protocol.JobExpired)
		if v.Error == nil || v.Error.Code != protocol.CodeAgentOffline || !strings.Contains(v.Error.Message, k.id) || v.Attempts != 0 {
			t.Errorf("job %v attempts %d, want expired agent_offline naming the agent, never dispatched", v.Error, v.Attempts)
		}
		// The agent comes online later: the expired job is not sent.
		a := c.connect(k, nil)
		a.expectNothing(quiet)
	})
	t.Run("queued behind a busy agent", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("dl-queued")
		a := c.connect(k, func(h *protocol.Hello) { h.Concurrency = 1 })
		c.submit(k.id, time.Minute)
		a.expectJob()
		j := c.submit(k.id, 300*time.Millisecond)
		v := c.waitState(j.ID, protocol.JobExpired)
		if v.Error == nil || v.Error.Code != protocol.CodeTimeout {
			t.Errorf("job %v, want expired timeout (the agent was online)", v.Error)
		}
		a.expectNothing(quiet) // no cancel for a job the agent never got
	})
	t.Run("dispatched, agent gone", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("dl-gone")
		a := c.connect(k, nil)
		j := c.submit(k.id, 500*time.Millisecond)
		a.expectJob()
		a.drop()
		v := c.waitState(j.ID, protocol.JobExpired)
		if v.Error == nil || v.Error.Code != protocol.CodeTimeout {
			t.Errorf("job %v, want expired timeout (it reached the agent)", v.Error)
		}
		// The agent comes back still running it: it is told to stop.
		b := c.connect(k, func(h *protocol.Hello) { h.Running = []string{j.ID} })
		if m := b.expect(protocol.TypeCancel); m.Cancel.JobID != j.ID {
			t.Errorf("cancel for %s, want %s", m.Cancel.JobID, j.ID)
		}
		b.send(errResult(j.ID, 1, protocol.CodeCanceled))
		b.expectAck(j.ID)
		if v := c.job(j.ID); v.State != protocol.JobExpired {
			t.Errorf("after the result: %s, want expired", v.State)
		}
	})
}

func TestDispatchReconnect(t *testing.T) {
	t.Parallel()
	c := newCP(t)

	t.Run("running job continues", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("rc-running")
		a := c.connect(k, nil)
		j := c.submit(k.id, time.Minute)
		got := a.expectJob()
		a.accept(got)
		c.waitState(j.ID, protocol.JobRunning)
		a.drop()
		c.waitOffline(k.id)
		if v := c.job(j.ID); v.State != protocol.JobRunning {
			t.Errorf("while the agent is away: %s, want running (kept)", v.State)
		}
		b := c.connect(k, func(h *protocol.Hello) { h.Running = []string{j.ID} })
		b.expectNothing(quiet) // not sent again
		if v := c.job(j.ID); v.State != protocol.JobRunning || v.Attempts != 1 {
			t.Errorf("after the reconnect: %s attempts %d, want running attempts 1", v.State, v.Attempts)
		}
		b.succeed(j.ID, 1, "hmac-sha256:666666666666666666666666")
		b.expectAck(j.ID)
		if v := c.job(j.ID); v.State != protocol.JobSucceeded || v.Attempts != 1 {
			t.Errorf("after the result: %s attempts %d, want succeeded attempts 1", v.State, v.Attempts)
		}
	})
	t.Run("held result", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("rc-held")
		a := c.connect(k, nil)
		j := c.submit(k.id, time.Minute)
		a.expectJob()
		a.drop() // finished while disconnected
		c.waitOffline(k.id)
		b := c.connect(k, func(h *protocol.Hello) { h.Held = []string{j.ID} })
		b.succeed(j.ID, 1, "hmac-sha256:777777777777777777777777")
		b.expectAck(j.ID)
		b.expectNothing(quiet)
		if v := c.job(j.ID); v.State != protocol.JobSucceeded || v.Attempts != 1 {
			t.Errorf("job %s attempts %d, want succeeded attempts 1", v.State, v.Attempts)
		}
	})
	t.Run("without the job: requeued", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("rc-lost")
		a := c.connect(k, nil)
		j := c.submit(k.id, time.Minute)
		got := a.expectJob()
		a.accept(got)
		c.waitState(j.ID, protocol.JobRunning)
		a.drop()
		c.waitOffline(k.id)
		b := c.connect(k, nil) // restarted: running nothing, holding nothing
		again := b.expectJob()
		if again.JobID != j.ID || again.Attempt != 2 {
			t.Errorf("re-sent %s attempt %d, want %s attempt 2", again.JobID, again.Attempt, j.ID)
		}
		if v := c.job(j.ID); v.State != protocol.JobDispatched || v.Attempts != 2 || v.AcceptedAt != nil {
			t.Errorf("after the re-dispatch: %s attempts %d accepted_at %v, want dispatched, 2, none", v.State, v.Attempts, v.AcceptedAt)
		}
		b.succeed(j.ID, 2, "hmac-sha256:888888888888888888888888")
		b.expectAck(j.ID)
		c.waitState(j.ID, protocol.JobSucceeded)
	})
	t.Run("queued while offline", func(t *testing.T) {
		t.Parallel()
		c := c.with(t)
		k := c.newAgent("rc-queued")
		j1 := c.submit(k.id, time.Minute)
		j2 := c.submit(k.id, time.Minute)
		time.Sleep(50 * time.Millisecond)
		if v := c.job(j1.ID); v.State != protocol.JobQueued {
			t.Errorf("job for an offline agent: %s, want queued", v.State)
		}
		a := c.connect(k, nil)
		for _, want := range []string{j1.ID, j2.ID} {
			if got := a.expectJob(); got.JobID != want || got.Attempt != 1 {
				t.Errorf("dispatched %s attempt %d, want %s attempt 1 (in order)", got.JobID, got.Attempt, want)
			}
		}
	})
}

func TestDispatchMaxAttempts(t *testing.T) {
	t.Parallel()
	c := newCP(t, withOptions(func(o *Options) { o.MaxAttempts = 2 }))
	k := c.newAgent("max-1")
	a := c.connect(k, nil)
	j := c.submit(k.id, time.Minute)
	if got := a.expectJob(); got.Attempt != 1 {
		t.Fatalf("attempt %d, want 1", got.Attempt)
	}
	a.drop()
	c.waitOffline(k.id)
	b := c.connect(k, nil)
	if got := b.expectJob(); got.JobID != j.ID || got.Attempt != 2 {
		t.Fatalf("got %s attempt %d, want %s attempt 2", got.JobID, got.Attempt, j.ID)
	}
	b.drop()
	c.waitOffline(k.id)
	d := c.connect(k, nil)
	d.expectNothing(quiet)
	v := c.job(j.ID)
	if v.State != protocol.JobFailed || v.Error == nil || v.Error.Code != protocol.CodeAgentOffline || v.Attempts != 2 || !strings.Contains(v.Error.Message, "2 times") {
		t.Errorf("job %s %v attempts %d, want failed agent_offline after 2 attempts", v.State, v.Error, v.Attempts)
	}
}

func TestDispatchDraining(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("drain-1")
	a := c.connect(k, nil)
	running := c.submit(k.id, time.Minute)
	got := a.expectJob()
	a.accept(got)
	a.send(&protocol.Message{Type: protocol.TypeDraining, Draining: &protocol.Draining{Grace: protocol.Duration(10 * time.Second), Reason: "SIGTERM"}})
	c.waitStatus(k.id, protocol.AgentDraining)
	queued := c.submit(k.id, time.Minute)
	a.expectNothing(quiet)
	// The running job still finishes and is recorded.
	a.succeed(running.ID, 1, "hmac-sha256:999999999999999999999999")
	a.expectAck(running.ID)
	a.expectNothing(quiet) // a free slot, but draining
	if v := c.job(queued.ID); v.State != protocol.JobQueued {
		t.Errorf("job submitted while draining: %s, want queued", v.State)
	}
	a.conn.Close() // the agent restarts
	<-a.done
	c.waitOffline(k.id)
	b := c.connect(k, nil)
	if got := b.expectJob(); got.JobID != queued.ID || got.Attempt != 1 {
		t.Errorf("after the restart: %s attempt %d, want %s attempt 1", got.JobID, got.Attempt, queued.ID)
	}
}

func TestDispatchRestart(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	kq := c.newAgent("rs-queued")
	kr := c.newAgent("rs-running")
	kl := c.newAgent("rs-lost")
	kd := c.newAgent("rs-deadline")

	queued := c.submit(kq.id, time.Minute)
	ar := c.connect(kr, nil)
	running := c.submit(kr.id, time.Minute)
	ar.accept(ar.expectJob())
	c.waitState(running.ID, protocol.JobRunning)
	al := c.connect(kl, nil)
	lost := c.submit(kl.id, time.Minute)
	al.expectJob()
	expiring := c.submit(kd.id, 1500*time.Millisecond)

	c.restart()
	for _, a := range []*fakeAgent{ar, al} {
		if code := a.closeCode(5 * time.Second); code != protocol.CloseShuttingDown {
			t.Errorf("session of %s closed with %d, want CloseShuttingDown", a.key.id, code)
		}
	}
	for id, want := range map[string]protocol.JobState{queued.ID: protocol.JobQueued, running.ID: protocol.JobRunning, lost.ID: protocol.JobDispatched, expiring.ID: protocol.JobQueued} {
		if v := c.job(id); v.State != want {
			t.Errorf("after the restart job %s is %s, want %s", id, v.State, want)
		}
	}

	// A queued job goes out when its agent connects to the new control plane.
	aq := c.connect(kq, nil)
	if got := aq.expectJob(); got.JobID != queued.ID || got.Attempt != 1 {
		t.Errorf("queued job after the restart: %s attempt %d, want %s attempt 1", got.JobID, got.Attempt, queued.ID)
	}
	// A running job the agent still runs carries on; its result is recorded.
	ar2 := c.connect(kr, func(h *protocol.Hello) { h.Running = []string{running.ID} })
	ar2.expectNothing(quiet)
	ar2.succeed(running.ID, 1, "hmac-sha256:abcdefabcdefabcdefabcdef")
	ar2.expectAck(running.ID)
	if v := c.job(running.ID); v.State != protocol.JobSucceeded || v.Attempts != 1 {
		t.Errorf("running job after the restart: %s attempts %d, want succeeded attempts 1", v.State, v.Attempts)
	}
	// A dispatched job the agent does not have is sent again.
	al2 := c.connect(kl, nil)
	if got := al2.expectJob(); got.JobID != lost.ID || got.Attempt != 2 {
		t.Errorf("lost job after the restart: %s attempt %d, want %s attempt 2", got.JobID, got.Attempt, lost.ID)
	}
	// Deadlines are armed again.
	v := c.waitState(expiring.ID, protocol.JobExpired)
	if v.Error == nil || v.Error.Code != protocol.CodeAgentOffline {
		t.Errorf("expiring job %v, want agent_offline", v.Error)
	}

	// A second restart with nothing open reloads nothing and serves on.
	al2.succeed(lost.ID, 2, "hmac-sha256:fedcbafedcbafedcbafedcba")
	al2.expectAck(lost.ID)
	c.restart()
	var list protocol.JobList
	c.api("GET", "/api/v1/jobs?state=dispatched", nil, http.StatusOK, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != queued.ID {
		t.Errorf("open dispatched jobs after the second restart: %+v, want only %s", list.Jobs, queued.ID)
	}
}
