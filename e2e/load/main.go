//go:build linux

// Command load measures the product under load and prints each figure next
// to the floor of DESIGN §8 measured in the same run: a bare HTTP
// keep-alive round trip, a bare websocket round trip with frames of the
// sizes the product sends, and one fsync in the store's directory.
//
//	go run ./e2e/load -mode roundtrip  -jobs 5000                          # latency, sequential submit?wait
//	go run ./e2e/load -mode throughput -agents 100 -jobs 20000 -concurrency 200
//	go run ./e2e/load -mode idle       -steps 1000,5000,10000              # control plane memory per idle agent
//	go run ./e2e/load -mode agent-idle -idle 60s                           # one agent process: RSS and CPU
//
// The control plane is controlplane.Serve (what `controlplane serve` runs)
// in this process, or the built binary in its own process where its memory
// is measured, or one given with -url and -token. Agents are the real agent
// code (agent.New and Run, with a secret backend that answers at once) over
// real websockets, or lean simulated agents (-sim, and always for idle)
// that speak protocol v1 with a reader goroutine each. Jobs go through the
// HTTP API: POST /api/v1/jobs?wait=30s from many keep-alive clients.
//
// Everything runs on 127.0.0.1; every phase is bounded in count and time,
// and the tool stops by itself (-timeout).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	mode        string
	agents      int
	jobs        int
	warmup      int
	concurrency int
	agentConc   int
	sim         bool
	url, token  string
	repeat      int
	floorIters  int
	cpuprofile  string
	blockprof   string
	dir         string
	timeout     time.Duration
	steps       []int
	cpProc      string
	bin         string
	idle        time.Duration
	settle      time.Duration
	heartbeat   time.Duration
	cpLog       bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serveMain(os.Args[2:]))
	}
	var c config
	var steps string
	flag.StringVar(&c.mode, "mode", "roundtrip", "roundtrip, throughput, idle or agent-idle")
	flag.IntVar(&c.agents, "agents", 0, "agents (default: 1 for roundtrip, 100 for throughput)")
	flag.IntVar(&c.jobs, "jobs", 0, "timed jobs per repetition (default: 5000 for roundtrip, 20000 for throughput)")
	flag.IntVar(&c.warmup, "warmup", -1, "untimed jobs before each repetition (default: 10% of -jobs)")
	flag.IntVar(&c.concurrency, "concurrency", 200, "concurrent API clients submitting with ?wait= (throughput)")
	flag.IntVar(&c.agentConc, "agent-concurrency", 16, "each agent's concurrency (jobs it runs at once)")
	flag.BoolVar(&c.sim, "sim", false, "use lean simulated agents instead of the real agent code (roundtrip, throughput)")
	flag.StringVar(&c.url, "url", "", "use the control plane at this URL (http://127.0.0.1:PORT) instead of starting one")
	flag.StringVar(&c.token, "token", "", "the admin token of -url (default $CONTROLPLANE_ADMIN_TOKEN)")
	flag.IntVar(&c.repeat, "repeat", 3, "repetitions of each measurement; the median is reported")
	flag.IntVar(&c.floorIters, "floor-iters", 3000, "round trips per floor measurement")
	flag.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of each timed throughput phase to this file (.N per repetition)")
	flag.StringVar(&c.blockprof, "blockprofile", "", "write a profile of where goroutines waited (channels, locks, select) during the whole run to this file")
	flag.StringVar(&c.dir, "dir", "", "work directory (default: a new temporary one, removed at the end)")
	flag.DurationVar(&c.timeout, "timeout", 20*time.Minute, "stop everything after this long")
	flag.StringVar(&steps, "steps", "1000,5000,10000", "idle: connected agents at each measurement")
	flag.StringVar(&c.cpProc, "cp-proc", "binary", "idle: the control plane process: binary (the built cmd/controlplane) or self (this tool's serve command, which also reports the Go heap after a GC)")
	flag.StringVar(&c.bin, "bin", "", "directory holding built controlplane and agent binaries (default: go build them into the work directory)")
	flag.DurationVar(&c.idle, "idle", 60*time.Second, "agent-idle: how long to watch the idle agent")
	flag.DurationVar(&c.settle, "settle", 12*time.Second, "idle, agent-idle: wait before measuring memory")
	flag.DurationVar(&c.heartbeat, "heartbeat", 0, "the control plane's heartbeat interval (default: its own, 10s)")
	flag.BoolVar(&c.cpLog, "cp-log", true, "the in-process control plane logs JSON at info to a file in the work directory, as in production (false: no logs)")
	flag.Parse()
	for _, s := range strings.Split(steps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "load: -steps: %q is not a positive number\n", s)
			os.Exit(2)
		}
		c.steps = append(c.steps, n)
	}
	if c.token == "" {
		c.token = os.Getenv("CONTROLPLANE_ADMIN_TOKEN")
	}
	if c.url != "" && c.token == "" {
		fmt.Fprintln(os.Stderr, "load: -url needs -token or $CONTROLPLANE_ADMIN_TOKEN")
		os.Exit(2)
	}
	c.repeat = max(c.repeat, 1)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	err := run(ctx, c)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	if c.dir == "" {
		d, err := os.MkdirTemp("", "orchestrator-load-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		c.dir = d
	} else if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	machine()
	if c.blockprof != "" {
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		runtime.SetMutexProfileFraction(10)
		defer func() {
			for name, path := range map[string]string{"block": c.blockprof, "mutex": c.blockprof + ".mutex"} {
				if f, err := os.Create(path); err == nil {
					_ = pprof.Lookup(name).WriteTo(f, 0)
					f.Close()
				}
			}
		}()
	}
	switch c.mode {
	case "roundtrip":
		return runJobs(ctx, c, false)
	case "throughput":
		return runJobs(ctx, c, true)
	case "idle":
		return runIdle(ctx, c)
	case "agent-idle":
		return runAgentIdle(ctx, c)
	}
	return fmt.Errorf("-mode %q is not roundtrip, throughput, idle or agent-idle", c.mode)
}

// machine prints what the figures were measured on.
func machine() {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	mem := "?"
	if st, err := procMeminfo(); err == nil {
		mem = fmt.Sprintf("%.1f GiB", float64(st)/1024/1024)
	}
	fmt.Printf("# %s  %s  cpus=%d (GOMAXPROCS %d)  cpu=%q  mem=%s  loadavg=%s\n",
		time.Now().UTC().Format(time.RFC3339), runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0), model, mem, load)
}

func procMeminfo() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no MemTotal")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
