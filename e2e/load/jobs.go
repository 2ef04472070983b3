//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// submitPath submits a job and holds the answer until it ends.
const submitPath = "/api/v1/jobs?wait=30s"

// jobRun is one repetition of roundtrip or throughput.
type jobRun struct {
	floor   floor
	ceiling float64 // throughput: bare JSON-over-websocket round trips/s
	lat     dist
	rate    float64 // jobs/s
	errors  int64
	elapsed time.Duration
	load    string
}

// runJobs drives resolve_credentials jobs through the API: sequentially
// (roundtrip) or from c.concurrency clients to c.agents agents
// (throughput), c.repeat times, each next to the floor.
func runJobs(ctx context.Context, c config, throughput bool) error {
	if c.agents == 0 {
		c.agents = 1
		if throughput {
			c.agents = 100
		}
	}
	if c.jobs == 0 {
		c.jobs = 5000
		if throughput {
			c.jobs = 20000
		}
	}
	if c.warmup < 0 {
		c.warmup = c.jobs / 10
	}
	clients := 1
	if throughput {
		clients = c.concurrency
	}

	h, err := controlPlane(ctx, c)
	if err != nil {
		return err
	}
	defer func() {
		if err := h.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "load: stop the control plane:", err)
		}
	}()
	api := newAPIClient(h, clients+16)
	defer api.close()

	agentCtx, stopAgentsCtx := context.WithCancel(ctx)
	defer stopAgentsCtx()
	prefix := "load-" + strconv.FormatInt(time.Now().UnixMilli(), 36)
	tap := &frameTap{}
	var ids []string
	kind := "real agents (agent.New/Run, fast fake secret backend)"
	if c.sim {
		kind = "simulated agents"
		sims, err := enrollSims(ctx, api, prefix, c.agents, 16)
		if err != nil {
			return err
		}
		for _, s := range sims {
			if err := s.connect(ctx, h.wsURL(), c.agentConc, true); err != nil {
				return err
			}
			defer s.close()
			ids = append(ids, s.id)
		}
	} else {
		agents, err := startRealAgents(agentCtx, api, h, c.dir, prefix, c.agents, c.agentConc, tap)
		defer func() { stopAgentsCtx(); stopAgents(agents) }()
		if err != nil {
			return err
		}
		for _, a := range agents {
			ids = append(ids, a.id)
		}
	}
	if err := api.waitOnline(ctx, ids, time.Minute); err != nil {
		return err
	}
	bodies := make([][]byte, len(ids))
	for i, id := range ids {
		if bodies[i], err = json.Marshal(protocol.SubmitJobRequest{
			AgentID: id, Kind: protocol.KindResolveCredentials, Params: protocol.Params{Secret: loadRef()}, Timeout: protocol.Duration(time.Minute),
		}); err != nil {
			return err
		}
	}

	// One job first: its bodies and frames size the floor's messages.
	status, view, err := api.raw(ctx, http.MethodPost, submitPath, bodies[0])
	if err != nil || status != http.StatusCreated || !bytes.Contains(view, []byte(`"succeeded"`)) {
		return fmt.Errorf("first job: status %d, %v: %s", status, err, truncate(view, 500))
	}
	fr := frames{submit: bodies[0], view: view}
	fr.job, fr.result = tap.get()
	if fr.job == nil || fr.result == nil {
		fr.job, fr.result = sampleFrames()
	}
	fmt.Printf("# mode=%s agents=%d (%s, concurrency %d each) clients=%d jobs=%d warmup=%d repeat=%d control plane=%s\n",
		c.mode, c.agents, kind, c.agentConc, clients, c.jobs, c.warmup, c.repeat, describeCP(c, h))
	fmt.Printf("# sizes: submit body %d B, answer %d B, job frame %d B, result frame %d B\n", len(fr.submit), len(fr.view), len(fr.job), len(fr.result))

	var runs []jobRun
	for rep := range c.repeat {
		var r jobRun
		r.load = loadavg()
		if r.floor, err = measureFloor(ctx, fr, h.dataDir, c.floorIters); err != nil {
			return err
		}
		if throughput {
			window := max(1, clients/c.agents)
			if r.ceiling, err = wsCeiling(ctx, fr.job, fr.result, c.agents, window, 3*time.Second); err != nil {
				return fmt.Errorf("websocket ceiling: %w", err)
			}
		}
		profile := ""
		if c.cpuprofile != "" {
			profile = c.cpuprofile
			if c.repeat > 1 {
				profile += "." + strconv.Itoa(rep+1)
			}
		}
		if err := drive(ctx, api, bodies, clients, c.warmup, c.jobs, profile, &r); err != nil {
			return err
		}
		runs = append(runs, r)
		printJobRun(rep+1, throughput, r)
	}
	printJobSummary(throughput, runs)
	return nil
}

func describeCP(c config, h *cpHandle) string {
	switch {
	case c.url != "":
		return c.url
	case c.cpLog:
		return "in-process controlplane.Serve (logs: JSON at info to " + h.logPath + ")"
	}
	return "in-process controlplane.Serve (no logs)"
}

// controlPlane starts the in-process control plane or points at -url.
func controlPlane(ctx context.Context, c config) (*cpHandle, error) {
	if c.url != "" {
		return &cpHandle{base: c.url, token: c.token, dataDir: c.dir, stop: func() error { return nil }}, nil
	}
	return startInProcess(ctx, c.dir, c.cpLog, c.heartbeat)
}

// drive runs warmup untimed jobs, then jobs timed ones, from clients
// goroutines; client k submits to agent k mod len(bodies). With profile
// set, the timed phase is CPU-profiled into that file.
func drive(ctx context.Context, api *apiClient, bodies [][]byte, clients, warmup, jobs int, profile string, r *jobRun) error {
	var (
		next    atomic.Int64
		errs    atomic.Int64
		lat     latencies
		started = make(chan struct{})
		once    sync.Once
		begin   time.Time
		firstEr atomic.Value
	)
	total := int64(warmup + jobs)
	var pf *os.File
	startTimed := func() {
		once.Do(func() {
			if profile != "" {
				f, err := os.Create(profile)
				if err == nil {
					err = pprof.StartCPUProfile(f)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "load: cpu profile:", err)
				} else {
					pf = f
				}
			}
			begin = time.Now()
			close(started)
		})
	}
	if warmup == 0 {
		startTimed()
	}
	var wg sync.WaitGroup
	var last atomic.Int64 // end of the last timed job, ns since begin
	for k := range clients {
		wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("side", "client"), func(ctx context.Context) {
			defer wg.Done()
			body := bodies[k%len(bodies)]
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > total {
					return
				}
				timed := i > int64(warmup)
				if timed {
					startTimed()
				}
				t0 := time.Now()
				status, view, err := api.raw(ctx, http.MethodPost, submitPath, body)
				d := time.Since(t0)
				if err != nil || status != http.StatusCreated || !bytes.Contains(view, []byte(`"succeeded"`)) {
					errs.Add(1)
					if err == nil {
						err = fmt.Errorf("status %d: %s", status, truncate(view, 300))
					}
					firstEr.CompareAndSwap(nil, err)
					continue
				}
				if timed {
					lat.add(d)
					<-started
					for {
						now, prev := int64(time.Since(begin)), last.Load()
						if now <= prev || last.CompareAndSwap(prev, now) {
							break
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if pf != nil {
		pprof.StopCPUProfile()
		pf.Close()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.elapsed = time.Duration(last.Load())
	r.lat = lat.summary()
	r.errors = errs.Load()
	if r.elapsed > 0 {
		r.rate = float64(r.lat.N) / r.elapsed.Seconds()
	}
	if r.errors > 0 {
		err, _ := firstEr.Load().(error)
		fmt.Fprintf(os.Stderr, "load: %d jobs failed; the first: %v\n", r.errors, err)
	}
	if r.lat.N == 0 {
		return errors.New("no job succeeded")
	}
	return nil
}

func printJobRun(rep int, throughput bool, r jobRun) {
	f := r.floor
	fmt.Printf("run %d (loadavg %s)\n", rep, r.load)
	fmt.Printf("  floor  http %s/%s  ws %s/%s  fsync %s/%s  => p50 %s  p99 %s\n",
		ms(f.HTTP.P50), ms(f.HTTP.P99), ms(f.WS.P50), ms(f.WS.P99), ms(f.Fsync.P50), ms(f.Fsync.P99), ms(f.P50()), ms(f.P99()))
	if throughput {
		fmt.Printf("  bare JSON-over-websocket ceiling: %.0f round trips/s\n", r.ceiling)
	}
	fmt.Printf("  jobs   %s\n", r.lat)
	fmt.Printf("         %.0f jobs/s over %s, %d errors; p50 %.2f× floor, p99 %.2f× floor\n",
		r.rate, r.elapsed.Round(time.Millisecond), r.errors, ratio(r.lat.P50, f.P50()), ratio(r.lat.P99, f.P99()))
}

func printJobSummary(throughput bool, runs []jobRun) {
	pick := func(f func(jobRun) time.Duration) time.Duration {
		var xs []time.Duration
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	pickF := func(f func(jobRun) float64) float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	fmt.Printf("median of %d runs\n", len(runs))
	fmt.Printf("  floor   http p50 %s p99 %s | ws p50 %s p99 %s | fsync p50 %s p99 %s | sum p50 %s p99 %s\n",
		ms(pick(func(r jobRun) time.Duration { return r.floor.HTTP.P50 })), ms(pick(func(r jobRun) time.Duration { return r.floor.HTTP.P99 })),
		ms(pick(func(r jobRun) time.Duration { return r.floor.WS.P50 })), ms(pick(func(r jobRun) time.Duration { return r.floor.WS.P99 })),
		ms(pick(func(r jobRun) time.Duration { return r.floor.Fsync.P50 })), ms(pick(func(r jobRun) time.Duration { return r.floor.Fsync.P99 })),
		ms(pick(func(r jobRun) time.Duration { return r.floor.P50() })), ms(pick(func(r jobRun) time.Duration { return r.floor.P99() })))
	fmt.Printf("  jobs    p50 %s p99 %s p999 %s\n",
		ms(pick(func(r jobRun) time.Duration { return r.lat.P50 })), ms(pick(func(r jobRun) time.Duration { return r.lat.P99 })),
		ms(pick(func(r jobRun) time.Duration { return r.lat.P999 })))
	fmt.Printf("  ratio   p50 %.2f× floor  p99 %.2f× floor  (median of per-run ratios)\n",
		pickF(func(r jobRun) float64 { return ratio(r.lat.P50, r.floor.P50()) }),
		pickF(func(r jobRun) float64 { return ratio(r.lat.P99, r.floor.P99()) }))
	fmt.Printf("          p50 %.2f× and p99 %.2f× the floor with a second fsync (the two durable writes the dispatcher's rules need: job stored before it is sent, result stored before it is acknowledged)\n",
		pickF(func(r jobRun) float64 { return ratio(r.lat.P50, r.floor.P50()+r.floor.Fsync.P50) }),
		pickF(func(r jobRun) float64 { return ratio(r.lat.P99, r.floor.P99()+r.floor.Fsync.P99) }))
	fmt.Printf("  rate    %.0f jobs/s", pickF(func(r jobRun) float64 { return r.rate }))
	if throughput {
		fmt.Printf("  (bare JSON-over-websocket ceiling %.0f round trips/s; ratio %.2f)",
			pickF(func(r jobRun) float64 { return r.ceiling }), pickF(func(r jobRun) float64 { return r.rate / r.ceiling }))
	}
	fmt.Println()
}

// sampleFrames are a job and a result like the real ones, for when no
// frame was captured (simulated agents).
func sampleFrames() (job, result []byte) {
	now := time.Now().UTC()
	j := &protocol.Message{Type: protocol.TypeJob, Job: &protocol.Job{
		JobID: "job_01jz4x9q2w8k3v5t7r6y0m1n2p", Kind: protocol.KindResolveCredentials,
		Params: protocol.Params{Secret: loadRef()}, Deadline: now.Add(time.Minute), Attempt: 1,
	}}
	res := &protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{
		JobID: "job_01jz4x9q2w8k3v5t7r6y0m1n2p", Attempt: 1, OK: true, StartedAt: now, FinishedAt: now,
		Output: &protocol.Output{Credentials: &protocol.CredentialsOutput{
			Backend: protocol.BackendFile, Reference: *loadRef(), KeysFound: []string{"username", "password"},
			Fingerprint: "hmac-sha256:0123456789abcdef01234567", Timings: map[string]int64{"secret": 0},
		}},
	}}
	job, _ = protocol.Encode(j)
	result, _ = protocol.Encode(res)
	return job, result
}
