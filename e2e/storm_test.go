package e2e

// Scenario 10, the reconnect storm: many real agents (agent.New, each
// with its own websocket and its own reconnect loop) lose the control plane
// at the same instant because it restarts, and come back. The test measures
// how they come back: reconnects per second (peak and mean), dial attempts
// per second, and the time until all are back.
//
// The agents use the real reconnect defaults (agent/backoff: Base 1s, Max
// 60s, and the Rejoin spread agent.New turns on), except StableAfter: a
// fleet in production has been connected for hours when the control plane
// restarts, so its sessions count as stable; here they have lasted seconds,
// so StableAfter is shortened to let them count. Set E2E_STORM_AGENTS (default
// 300), E2E_STORM_DOWNTIME (how long the control plane stays down, default
// 1s) and E2E_STORM_REJOIN (a duration; "off" turns the spread off) to
// measure other fleets; BENCHMARKS.md ("Reconnect storm") has the figures.

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/protocol"
)

// stormObserver records when each agent connected and dialed.
type stormObserver struct {
	agent.NopObserver
	i int
	r *stormRecord
}

// stormRecord collects every agent's events.
type stormRecord struct {
	mu       sync.Mutex // guards the fields below
	connects [][]time.Time
	dials    []time.Time // when each reconnect dial was due
	up       atomic.Int64
}

func (o stormObserver) Connected(string) {
	o.r.mu.Lock()
	o.r.connects[o.i] = append(o.r.connects[o.i], time.Now())
	o.r.mu.Unlock()
	o.r.up.Add(1)
}

func (o stormObserver) Disconnected(error) { o.r.up.Add(-1) }

func (o stormObserver) Reconnecting(delay time.Duration, _ error) {
	o.r.mu.Lock()
	o.r.dials = append(o.r.dials, time.Now().Add(delay))
	o.r.mu.Unlock()
}

// stormFigures are the measurements of one storm.
type stormFigures struct {
	agents             int
	downtime           time.Duration
	rejoin             time.Duration
	peak               int     // reconnects in the busiest second after the control plane came back
	mean               float64 // reconnects per second over the seconds until all were back
	allBack            time.Duration
	allBackSinceUp     time.Duration
	median, p90        time.Duration // of the reconnect times, since the control plane came back
	dialPeak           int           // dial attempts in the busiest second (from the drop)
	dials              int
	perSecond          []int
	reconnectsPerAgent int // the most sessions one agent opened after the drop
}

func (f stormFigures) String() string {
	rejoin := f.rejoin.String()
	if f.rejoin < 0 {
		rejoin = "off"
	}
	return fmt.Sprintf("%d agents, control plane down %s, rejoin %s: all back %s after the drop (%s after it was up); "+
		"reconnects/s peak %d, mean %.1f (peak/mean %.2f); median %s, p90 %s; dial attempts %d, peak %d/s; per second %v",
		f.agents, f.downtime, rejoin, f.allBack.Round(time.Millisecond), f.allBackSinceUp.Round(time.Millisecond),
		f.peak, f.mean, float64(f.peak)/f.mean, f.median.Round(time.Millisecond), f.p90.Round(time.Millisecond),
		f.dials, f.dialPeak, f.perSecond)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestFaultReconnectStorm (scenario 10): N agents connected long enough to
// count as stable lose the control plane at once (it restarts on its data
// directory and stays down for a while) and come back. All must be back
// within the backoff cap, each with one new session, and the reconnects
// must be spread: the busiest second under 3× the mean (DESIGN §8), for a
// fleet large enough for that to be a measure rather than noise (the
// default 300 agents are checked against 15% of the fleet in one second, a
// spike being most of it).
func TestFaultReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute long; skipped with -short")
	}
	t.Parallel()
	n := envInt("E2E_STORM_AGENTS", 300)
	downtime := 1 * time.Second
	if d, err := time.ParseDuration(os.Getenv("E2E_STORM_DOWNTIME")); err == nil {
		downtime = d
	}
	var rejoin time.Duration // zero: agent.New's default
	switch v := os.Getenv("E2E_STORM_REJOIN"); v {
	case "":
	case "off":
		rejoin = -1
	default:
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("E2E_STORM_REJOIN=%q: %v", v, err)
		}
		rejoin = d
	}
	const stable = 2 * time.Second

	// The production heartbeat: a thousand agents at the tests' 500ms would
	// measure the heartbeats, not the storm.
	cp := newControlPlane(t, func(o *controlplane.Options) { o.HeartbeatInterval = 10 * time.Second })
	ctx := testCtx(t, 4*time.Minute)
	cp.ctx = ctx // the API calls outlive the harness's minute
	secretsPath := writeSecretsFile(t)
	logs := &lockedBuffer{}
	log := newLogger(logs)
	frames := &frameLog{}
	cp.leaks.add(func() ([]evidence, error) {
		return []evidence{{name: "log of the storm's agents", data: logs.Bytes()}, frames.evidence("frames of the storm's agents")}, nil
	})

	// Register and enroll the fleet over the API, a few at a time.
	ids := make([]agent.Identity, n)
	dirs := t.TempDir()
	var enrollErr atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	enrolled := time.Now()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || enrollErr.Load() != nil {
					return
				}
				_, token := cp.register(fmt.Sprintf("storm-%04d", i))
				id, err := cp.enroll(token, filepath.Join(dirs, strconv.Itoa(i)))
				if err != nil {
					enrollErr.Store(err)
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	if err := enrollErr.Load(); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	t.Logf("%d agents enrolled in %s", n, time.Since(enrolled).Round(time.Millisecond))

	rec := &stormRecord{connects: make([][]time.Time, n)}
	cfg := agent.Config{
		ControlPlane: cp.URL(), InsecureAllowWS: true, Concurrency: 1, DrainGrace: time.Second,
		Log:     agent.LogConfig{Format: "json", Level: "info"},
		Secrets: agent.SecretsConfig{File: &agent.FileSecretsConfig{Path: secretsPath}},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindResolveCredentials)},
			Secrets:  []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: allowedSecret}},
		},
	}
	file, err := secrets.NewFile(secretsPath)
	if err != nil {
		t.Fatal(err)
	}
	agents := make([]*agent.Agent, n)
	for i := range n {
		c := cfg
		c.StateDir = filepath.Join(dirs, strconv.Itoa(i))
		agents[i], err = agent.New(agent.Options{
			Config: c, Identity: ids[i], Secrets: secrets.NewSet(file), Logger: log, Version: "e2e",
			Observer: stormObserver{i: i, r: rec}, Observe: frames.observe,
			Backoff: backoff.Options{StableAfter: stable, Rejoin: rejoin},
		})
		if err != nil {
			t.Fatalf("agent.New: %v", err)
		}
	}
	runCtx, stop := context.WithCancel(context.Background())
	var running sync.WaitGroup
	for _, a := range agents {
		running.Add(1)
		go func() { defer running.Done(); _ = a.Run(runCtx) }()
	}
	t.Cleanup(func() {
		stop()
		for _, a := range agents {
			a.Abort()
		}
		done := make(chan struct{})
		go func() { running.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("the storm's agents did not stop within 30s")
		}
	})
	started := time.Now()
	eventually(t, 60*time.Second, "every agent to connect", func() bool { return rec.up.Load() == int64(n) })
	t.Logf("%d agents connected in %s", n, time.Since(started).Round(time.Millisecond))
	time.Sleep(stable + 500*time.Millisecond) // every session counts as stable

	rec.mu.Lock()
	before := make([]int, n)
	for i := range n {
		before[i] = len(rec.connects[i])
	}
	rec.dials = nil
	rec.mu.Unlock()
	drop := time.Now()
	var up time.Time
	cp.Restart(func() {
		eventually(t, 30*time.Second, "every agent to see the control plane gone", func() bool { return rec.up.Load() == 0 })
		time.Sleep(time.Until(drop.Add(downtime)))
	})
	up = time.Now()
	limit := backoff.DefaultMax + 30*time.Second
	eventually(t, limit, "every agent to come back", func() bool {
		select {
		case <-ctx.Done():
			return true
		default:
		}
		return rec.up.Load() == int64(n)
	})

	f := measureStorm(rec, before, drop, up)
	f.agents, f.downtime, f.rejoin = n, downtime, rejoin
	if rejoin == 0 {
		f.rejoin = backoff.DefaultMax // agent.New's default
	}
	t.Logf("reconnect storm: %s", f)
	if f.allBackSinceUp > backoff.DefaultMax+5*time.Second {
		t.Errorf("the last agent came back %s after the control plane, beyond the backoff cap %s", f.allBackSinceUp, backoff.DefaultMax)
	}
	if f.reconnectsPerAgent != 1 {
		t.Errorf("an agent opened %d sessions after the restart, want exactly one each", f.reconnectsPerAgent)
	}
	if rejoin >= 0 { // the default, or a spread asked for
		if n >= 1000 && float64(f.peak) >= 3*f.mean {
			t.Errorf("the busiest second had %d reconnects, not under 3× the mean %.1f", f.peak, f.mean)
		}
		if n < 1000 && float64(f.peak) > 0.15*float64(n) {
			t.Errorf("the busiest second had %d of %d reconnects: a spike, not a spread", f.peak, n)
		}
	}

	// The fleet works: a few agents run a job each.
	for _, i := range []int{0, n / 2, n - 1} {
		j := cp.submit(ids[i].AgentID, allowedSecret, jobTimeout, 10*time.Second)
		checkExactlyOnce(t, cp, map[string]wantJob{j.ID: {protocol.JobSucceeded, "", 1}})
	}
}

// measureStorm turns the recorded events into figures: reconnects after
// drop, bucketed per second from up (when the control plane listened
// again).
func measureStorm(rec *stormRecord, before []int, drop, up time.Time) stormFigures {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var f stormFigures
	var since []time.Duration
	var last time.Time
	for i, cs := range rec.connects {
		after := cs[before[i]:]
		f.reconnectsPerAgent = max(f.reconnectsPerAgent, len(after))
		if len(after) == 0 {
			continue
		}
		at := after[0]
		since = append(since, at.Sub(up))
		if at.After(last) {
			last = at
		}
	}
	slices.Sort(since)
	if len(since) == 0 {
		return f
	}
	f.allBack, f.allBackSinceUp = last.Sub(drop), last.Sub(up)
	f.median, f.p90 = since[len(since)/2], since[len(since)*9/10]
	seconds := max(int(math.Ceil(f.allBackSinceUp.Seconds())), 1)
	f.perSecond = make([]int, seconds)
	for _, d := range since {
		b := min(max(int(d/time.Second), 0), seconds-1)
		f.perSecond[b]++
	}
	f.peak = slices.Max(f.perSecond)
	f.mean = float64(len(since)) / float64(seconds)
	dialBuckets := map[int]int{}
	for _, d := range rec.dials {
		dialBuckets[int(d.Sub(drop)/time.Second)]++
		f.dials++
	}
	for _, c := range dialBuckets {
		f.dialPeak = max(f.dialPeak, c)
	}
	return f
}
