//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/protocol"
)

// --- the control plane with many idle agents ---------------------------------

// memSample is the control plane process's memory at one moment.
type memSample struct {
	RSS, Anon int64 // VmRSS and RssAnon, KiB
	// Go, from the serve command after a GC (cp-proc self only), bytes.
	HeapInuse, StackInuse uint64
	Goroutines            int
}

func (m memSample) goBytes() int64 { return int64(m.HeapInuse + m.StackInuse) }

// runIdle connects simulated agents to a control plane in its own process,
// step by step, and reports its memory per connected agent.
func runIdle(ctx context.Context, c config) error {
	maxN := 0
	for _, n := range c.steps {
		maxN = max(maxN, n)
	}
	bin, args, err := cpCommand(ctx, c)
	if err != nil {
		return err
	}
	token := newAdminToken()
	h, err := startProcess(ctx, c.dir, token, bin, args...)
	if err != nil {
		return err
	}
	api := newAPIClient(h, 64)
	prefix := "idle-" + strconv.FormatInt(time.Now().UnixMilli(), 36)
	start := time.Now()
	sims, err := enrollSims(ctx, api, prefix, maxN, 32)
	api.close()
	if err != nil {
		_ = h.stop()
		return fmt.Errorf("enroll: %w", err)
	}
	fmt.Printf("# registered and enrolled %d agents in %s\n", maxN, time.Since(start).Round(time.Millisecond))
	// A fresh process on the same store: the baseline holds none of the
	// enrollments' garbage.
	if err := h.stop(); err != nil {
		return fmt.Errorf("stop the control plane: %w", err)
	}
	if h, err = startProcess(ctx, c.dir, token, bin, args...); err != nil {
		return err
	}
	defer func() {
		if err := h.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "load: stop the control plane:", err)
		}
	}()
	fmt.Printf("# mode=idle control plane: %s (pid %d), simulated agents: one websocket, one reader goroutine, heartbeats\n", describeProc(c, bin), h.pid)

	var (
		mu        sync.Mutex
		connected []*simAgent
	)
	defer func() {
		closeAll(connected)
	}()
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	hbStarted := false

	if err := sleepCtx(ctx, c.settle); err != nil {
		return err
	}
	base, err := sampleMem(ctx, c, h, statsFile(c))
	if err != nil {
		return err
	}
	fmt.Printf("baseline (0 agents, loadavg %s): RSS %s  anon %s%s\n", loadavg(), kib(base.RSS), kib(base.Anon), goMem(c, base, base, 1))
	type row struct {
		n      int
		m      memSample
		per    float64 // RSS KiB per agent
		perGo  float64 // Go heap+stack KiB per agent
		connIn time.Duration
	}
	var rows []row
	for _, n := range c.steps {
		from := len(connected)
		if n <= from {
			continue
		}
		t0 := time.Now()
		if err := connectSims(ctx, sims[from:n], h.wsURL(), 64); err != nil {
			return fmt.Errorf("connect agents %d..%d: %w", from, n, err)
		}
		mu.Lock()
		connected = sims[:n]
		mu.Unlock()
		took := time.Since(t0)
		if !hbStarted {
			hbStarted = true
			go heartbeats(hbCtx, func() []*simAgent { mu.Lock(); defer mu.Unlock(); return connected }, heartbeatOf(c))
		}
		if err := sleepCtx(ctx, c.settle); err != nil {
			return err
		}
		m, err := sampleMem(ctx, c, h, statsFile(c))
		if err != nil {
			return err
		}
		alive := 0
		for _, s := range connected {
			select {
			case <-s.done:
			default:
				alive++
			}
		}
		r := row{n: n, m: m, per: float64(m.RSS-base.RSS) / float64(n), connIn: took}
		if m.HeapInuse > 0 {
			r.perGo = float64(m.goBytes()-base.goBytes()) / 1024 / float64(n)
		}
		rows = append(rows, r)
		fmt.Printf("%6d agents (%d still connected; connected in %s, loadavg %s): RSS %s  anon %s  => %.1f KiB/agent (RSS)%s\n",
			n, alive, took.Round(time.Millisecond), loadavg(), kib(m.RSS), kib(m.Anon), r.per, goMem(c, base, m, n))
	}
	return nil
}

func goMem(c config, base, m memSample, n int) string {
	if c.cpProc != "self" {
		return ""
	}
	return fmt.Sprintf("  | Go after GC: heap %s + stacks %s (%d goroutines) => %.1f KiB/agent (heap %.1f, stacks %.1f)",
		kib(int64(m.HeapInuse/1024)), kib(int64(m.StackInuse/1024)), m.Goroutines, float64(m.goBytes()-base.goBytes())/1024/float64(max(n, 1)),
		(float64(m.HeapInuse)-float64(base.HeapInuse))/1024/float64(max(n, 1)), (float64(m.StackInuse)-float64(base.StackInuse))/1024/float64(max(n, 1)))
}

func describeProc(c config, bin string) string {
	if c.cpProc == "self" {
		return bin + " serve (this tool: controlplane.Serve, with a GC and memory report on SIGUSR1)"
	}
	return bin + " serve (the built cmd/controlplane)"
}

func heartbeatOf(c config) time.Duration {
	if c.heartbeat > 0 {
		return c.heartbeat
	}
	return 10 * time.Second
}

func statsFile(c config) string { return filepath.Join(c.dir, "cp-stats.json") }

// cpCommand is the control plane process to run: the built binary, or this
// tool's serve command.
func cpCommand(ctx context.Context, c config) (string, []string, error) {
	extra := []string{}
	if c.heartbeat > 0 {
		cfgPath := filepath.Join(c.dir, "controlplane.yaml")
		if err := os.WriteFile(cfgPath, []byte("heartbeat_interval: "+c.heartbeat.String()+"\n"), 0o600); err != nil {
			return "", nil, err
		}
		extra = append(extra, "--config", cfgPath)
	}
	if c.cpProc == "self" {
		self, err := os.Executable()
		if err != nil {
			return "", nil, err
		}
		return self, append([]string{"serve", "--stats-file", statsFile(c)}, extra...), nil
	}
	if c.cpProc != "binary" {
		return "", nil, fmt.Errorf("-cp-proc %q is not binary or self", c.cpProc)
	}
	bin, err := binary(ctx, c, "controlplane")
	if err != nil {
		return "", nil, err
	}
	return bin, append([]string{"serve"}, extra...), nil
}

func binary(ctx context.Context, c config, name string) (string, error) {
	if c.bin != "" {
		return filepath.Join(c.bin, name), nil
	}
	return buildBinary(ctx, filepath.Join(c.dir, "bin"), name)
}

// sampleMem reads the control plane's memory five times a second apart and
// keeps the median RSS sample. With cp-proc self it first asks the process
// for its Go memory after a GC.
func sampleMem(ctx context.Context, c config, h *cpHandle, stats string) (memSample, error) {
	var m memSample
	if c.cpProc == "self" {
		os.Remove(stats)
		if err := syscall.Kill(h.pid, syscall.SIGUSR1); err != nil {
			return m, err
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			b, err := os.ReadFile(stats)
			if err == nil && json.Unmarshal(b, &m) == nil {
				break
			}
			if time.Now().After(deadline) {
				return m, errors.New("the control plane wrote no memory report within 30s")
			}
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return m, err
			}
		}
	}
	var rss, anon []int64
	for i := range 5 {
		if i > 0 {
			if err := sleepCtx(ctx, time.Second); err != nil {
				return m, err
			}
		}
		st, err := procStatus(h.pid)
		if err != nil {
			return m, err
		}
		rss, anon = append(rss, st["VmRSS"]), append(anon, st["RssAnon"])
	}
	m.RSS, m.Anon = median(rss), median(anon)
	return m, nil
}

// connectSims connects agents, par at a time.
func connectSims(ctx context.Context, sims []*simAgent, url string, par int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(sims) || ctx.Err() != nil {
					return
				}
				if err := sims[i].connect(ctx, url, 1, false); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func closeAll(sims []*simAgent) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, s := range sims {
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); defer func() { <-sem }(); s.close() }()
	}
	wg.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serveMain is `load serve`: controlplane.Serve with the flags of
// `controlplane serve` that the tool uses, which on SIGUSR1 runs a GC and
// writes its memory to --stats-file (and a heap profile next to it).
func serveMain(args []string) int {
	fs := flag.NewFlagSet("load serve", flag.ExitOnError)
	configFile := fs.String("config", "", "YAML config file")
	data := fs.String("data", "", "data directory")
	listen := fs.String("listen", "127.0.0.1:0", "address")
	addrFile := fs.String("addr-file", "", "write the address here")
	logFormat := fs.String("log-format", "json", "log format")
	logLevel := fs.String("log-level", "info", "log level")
	stats := fs.String("stats-file", "", "write the memory report here on SIGUSR1")
	_ = fs.Parse(args)
	c, err := controlplane.LoadServeConfig(*configFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load serve:", err)
		return 2
	}
	c.DataDir, c.Listen, c.AddrFile = *data, *listen, *addrFile
	log, err := controlplane.NewLogger(*logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load serve:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			runtime.GC()
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			m := memSample{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Goroutines: runtime.NumGoroutine()}
			if f, err := os.Create(*stats + ".heap"); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
			b, _ := json.Marshal(m)
			tmp := *stats + ".tmp"
			if os.WriteFile(tmp, b, 0o600) == nil {
				_ = os.Rename(tmp, *stats)
			}
		}
	}()
	if err := controlplane.Serve(ctx, c, log, "load", os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "load serve:", err)
		return 1
	}
	return 0
}

// --- one idle agent process ----------------------------------------------------

// runAgentIdle runs the built agent binary against a control plane,
// lets it run one job, and then watches it idle: its RSS and CPU time.
func runAgentIdle(ctx context.Context, c config) error {
	h, err := controlPlane(ctx, c)
	if err != nil {
		return err
	}
	defer func() {
		if err := h.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "load: stop the control plane:", err)
		}
	}()
	bin, err := binary(ctx, c, "agent")
	if err != nil {
		return err
	}
	api := newAPIClient(h, 4)
	defer api.close()
	id, token, err := api.register(ctx, "idle-agent-"+strconv.FormatInt(time.Now().UnixMilli(), 36))
	if err != nil {
		return err
	}
	dir := filepath.Join(c.dir, "agent")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	secretsFile := filepath.Join(dir, "secrets.json")
	if err := os.WriteFile(secretsFile, []byte(`{"`+loadSecret+`":{"username":"load-bot","token":"ghp_loadLOADloadLOADloadLOADload0000"}}`), 0o600); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf(`control_plane: %s
insecure_allow_ws: true
state_dir: %s
concurrency: 4
log:
  format: json
  level: info
secrets:
  file:
    path: %s
policy:
  job_kinds: [resolve_credentials]
  secrets:
    - backend: file
      secret_name: %s
`, h.base, filepath.Join(dir, "state"), secretsFile, loadSecret)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	enroll := exec.CommandContext(ctx, bin, "enroll", "--config", cfgPath, "--token", token)
	enroll.Stdout, enroll.Stderr = logf, logf
	if err := enroll.Run(); err != nil {
		return fmt.Errorf("agent enroll: %w (log: %s)", err, logPath)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	pid := cmd.Process.Pid
	if err := api.waitOnline(ctx, []string{id}, 30*time.Second); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logPath)
	}
	body, _ := json.Marshal(protocol.SubmitJobRequest{AgentID: id, Kind: protocol.KindResolveCredentials, Params: protocol.Params{Secret: loadRef()}})
	if status, view, err := api.raw(ctx, http.MethodPost, submitPath, body); err != nil || status != http.StatusCreated {
		return fmt.Errorf("job: %d %v %s", status, err, truncate(view, 300))
	}
	fmt.Printf("# mode=agent-idle agent %s (pid %d) connected to %s, heartbeat %s; one job done; settling %s, then watching %s\n",
		bin, pid, describeCP(c, h), heartbeatOf(c), c.settle, c.idle)
	if err := sleepCtx(ctx, c.settle); err != nil {
		return err
	}
	c0, err := readCPU(pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	var rss []int64
	for time.Since(t0) < c.idle {
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the agent exited: %v (log: %s)", err, logPath)
		default:
		}
		v, err := rssKiB(pid)
		if err != nil {
			return err
		}
		rss = append(rss, v)
	}
	c1, err := readCPU(pid)
	if err != nil {
		return err
	}
	el := time.Since(t0)
	st, err := procStatus(pid)
	if err != nil {
		return err
	}
	used := c1.sub(c0)
	beats := float64(el) / float64(heartbeatOf(c))
	fmt.Printf("agent idle %s (loadavg %s): RSS median %s, max %s, peak (VmHWM) %s, threads %d\n",
		el.Round(time.Millisecond), loadavg(), kib(median(rss)), kib(maxOf(rss)), kib(st["VmHWM"]), st["Threads"])
	fmt.Printf("  CPU: user %s + system %s (10ms ticks); scheduler run time %s = %.4f%% of one core; %.0f heartbeats => %s per heartbeat interval\n",
		used.User, used.System, used.Sched.Round(time.Microsecond), 100*used.Sched.Seconds()/el.Seconds(), beats,
		(time.Duration(float64(used.Sched) / max(beats, 1))).Round(time.Microsecond))
	return nil
}

func maxOf(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
