package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ks "github.com/kardianos/service"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/control"
	"github.com/orchestrator/orchestrator/agent/metrics"
)

// Exit codes of `agent run`. The unit's RestartPreventExitStatus lists
// ExitConfig and ExitRefused: restarting cannot fix them.
const (
	ExitOK      = 0
	ExitFailed  = 1 // the agent failed; the service manager restarts it
	ExitConfig  = 2 // the config, identity or a local resource is wrong
	ExitRefused = 3 // the control plane refused the agent for good (revoked, ...)
)

// RunOptions configure Run.
type RunOptions struct {
	// ConfigPath is the agent's config file.
	ConfigPath string
	// Version is the build version.
	Version string
	// Getenv reads the environment; default os.Getenv.
	Getenv func(string) string
	// Stderr receives what goes wrong before the logger exists; default
	// os.Stderr.
	Stderr io.Writer
}

// Run runs the agent until the service manager stops it, or in the
// foreground until SIGINT or SIGTERM (a second one aborts the drain), and
// returns the process's exit code.
func Run(o RunOptions) int {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	c, err := agent.LoadConfig(o.ConfigPath, o.Getenv)
	if err != nil {
		fmt.Fprintln(o.Stderr, "agent:", err)
		return ExitConfig
	}
	lg, err := agent.OpenLogging(c.Log)
	if err != nil {
		fmt.Fprintln(o.Stderr, "agent:", err)
		return ExitConfig
	}
	defer lg.Close()
	p, err := newProgram(c, lg, o.Version, o.Getenv)
	if err != nil {
		lg.Logger.Error("cannot start", zap.Error(err))
		return ExitConfig
	}
	return p.serve()
}

// program is the kardianos/service Interface around one agent.
type program struct {
	cfg     agent.Config
	id      agent.Identity
	a       *agent.Agent
	log     *zap.Logger
	level   zap.AtomicLevel
	metrics *metrics.Metrics
	notify  *notifier
	version string
	started time.Time
	// metricsAddr is where the metrics listener listens, once bound.
	metricsAddr string

	sigs     chan os.Signal
	cancel   context.CancelFunc // the graceful lifetime: stop taking work
	done     chan struct{}      // closed when the agent and its listeners ended
	err      error              // the agent's, read after done
	startErr error
	stopping atomic.Bool
}

var _ ks.Interface = (*program)(nil)

func newProgram(c agent.Config, lg *agent.Logging, version string, getenv func(string) string) (*program, error) {
	id, err := agent.LoadIdentity(c.StateDir)
	if err != nil {
		return nil, err
	}
	p := &program{
		cfg: c, id: id, log: lg.Logger, level: lg.Level, version: version, started: time.Now(),
		metrics: metrics.New(version), notify: newNotifier(getenv),
		sigs: make(chan os.Signal, 2), done: make(chan struct{}),
	}
	p.a, err = agent.New(agent.Options{
		Config: c, Identity: id, Logger: lg.Logger, Version: version,
		Observer: agent.MultiObserver(p.metrics, p.notify),
	})
	if err != nil {
		return nil, err
	}
	p.metrics.SetRunning(func() int { return p.a.Status().JobsRunning })
	return p, nil
}

// serve runs the program under the service manager kardianos/service
// finds, or in the foreground when it finds none.
func (p *program) serve() int {
	signal.Notify(p.sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(p.sigs)
	cfg := serviceConfig(nil, "", "")
	cfg.Option["RunWait"] = p.wait
	s, err := ks.New(p, cfg)
	if err != nil {
		// No service manager known here (a container): run in the foreground.
		if err := p.Start(nil); err != nil {
			p.log.Error("cannot start", zap.Error(err))
			return ExitConfig
		}
		p.wait()
		_ = p.Stop(nil)
	} else if err := s.Run(); err != nil {
		if p.startErr != nil {
			p.log.Error("cannot start", zap.Error(p.startErr))
			return ExitConfig
		}
		p.log.Error("service manager", zap.Error(err))
		return ExitFailed
	}
	return p.exitCode()
}

func (p *program) exitCode() int {
	<-p.done
	var fe *agent.FatalError
	switch {
	case p.err == nil:
		return ExitOK
	case errors.As(p.err, &fe):
		return ExitRefused
	}
	return ExitFailed
}

// Start binds the local listeners and starts the agent; it returns at once.
func (p *program) Start(ks.Service) error {
	if err := p.start(); err != nil {
		p.startErr = err
		close(p.done)
		return err
	}
	return nil
}

func (p *program) start() error {
	ctl, err := control.Listen(control.Options{StateDir: p.cfg.StateDir, Status: p.report, Level: p.level, Logger: p.log.Named("control")})
	if err != nil {
		return err
	}
	var mln net.Listener
	if p.cfg.Metrics.Listen != "" {
		if mln, err = net.Listen("tcp", p.cfg.Metrics.Listen); err != nil {
			_ = ctl.Close()
			return fmt.Errorf("metrics.listen: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	side, stopSide := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ctl.Serve(side); err != nil {
			p.log.Error("control socket", zap.Error(err))
		}
	}()
	fields := []zap.Field{zap.String("version", p.version), zap.String("control_plane", p.cfg.ControlPlane),
		zap.Int("concurrency", p.cfg.Concurrency), zap.Any("kinds", p.a.Kinds()), zap.String("control_socket", ctl.Path())}
	if p.cfg.Proxy != "" {
		fields = append(fields, zap.String("proxy", agent.RedactURL(p.cfg.Proxy)))
	}
	if mln != nil {
		p.metricsAddr = mln.Addr().String()
		fields = append(fields, zap.String("metrics_listen", p.metricsAddr))
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := p.metrics.Handler(func() bool { return p.a.Status().Connected })
			if err := metrics.Serve(side, mln, h, p.log.Named("metrics")); err != nil {
				p.log.Error("metrics listener", zap.Error(err))
			}
		}()
	}
	p.log.Info("agent starting", fields...)
	p.notify.start()
	go func() {
		err := p.a.Run(ctx)
		stopSide()
		wg.Wait()
		p.err = err
		close(p.done)
		if err != nil && !p.stopping.Load() && runtime.GOOS == "windows" {
			// The Service Control Manager learns of a failure only from
			// the process's end; its recovery action then restarts it.
			code := p.exitCode()
			p.log.Error("agent stopped by itself", zap.Int("exit_code", code), zap.Error(err))
			_ = p.log.Sync()
			os.Exit(code)
		}
	}()
	return nil
}

// wait blocks until a stop signal or the agent's own end (RunWait).
func (p *program) wait() {
	select {
	case s := <-p.sigs:
		p.log.Info("signal received; draining (send it again to stop at once)", zap.String("signal", s.String()))
	case <-p.done:
	}
}

// Stop drains the agent: it stops taking jobs, lets running ones finish
// within the drain grace, flushes their results and closes the session.
// It returns within the grace and a margin, aborting the rest; a second
// signal meanwhile aborts at once.
func (p *program) Stop(ks.Service) error {
	p.stopping.Store(true)
	select {
	case <-p.done:
		return nil
	default:
	}
	p.notify.stopping()
	p.cancel()
	bound := time.NewTimer(p.cfg.DrainGrace + 10*time.Second)
	defer bound.Stop()
	for {
		select {
		case <-p.done:
			return nil
		case s := <-p.sigs:
			p.log.Warn("second signal; stopping at once", zap.String("signal", s.String()))
			p.a.Abort()
		case <-bound.C:
			p.log.Warn("the drain did not end in time; stopping at once")
			p.a.Abort()
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				p.log.Error("the agent did not stop after abort")
			}
			return nil
		}
	}
}

// report is what the control socket's /v1/status says.
func (p *program) report() control.Report {
	st := p.a.Status()
	r := control.Report{
		Version: p.version, PID: os.Getpid(), StartedAt: p.started.UTC().Round(time.Second), AgentID: p.id.AgentID,
		ControlPlane: p.cfg.ControlPlane, Connected: st.Connected, SessionID: st.SessionID, LastError: st.LastError,
		JobsRunning: st.JobsRunning, MetricsListen: p.metricsAddr,
	}
	if st.Connected {
		t := st.ConnectedSince.UTC().Round(time.Second)
		r.ConnectedSince = &t
	}
	return r
}
