// Package control is the running agent's local control socket: a unix
// socket in the agent's state directory (mode 0600, in a 0700 directory,
// so only the agent's user and root reach it) that serves a small HTTP API
// to the `agent status` and `agent log-level` commands on the same
// machine:
//
//	GET  /v1/status     what the agent says about itself (Report)
//	POST /v1/log-level  {"level":"debug","for":"15m"}: log at level for a
//	                    while, then return to the configured level
//
// It never opens a network port, and nothing it serves holds a secret.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// SocketName is the control socket's file name in the state directory.
const SocketName = "agent.sock"

// Bounds of a temporary log level.
const (
	DefaultLevelFor = 15 * time.Minute
	MaxLevelFor     = 24 * time.Hour
)

// SocketPath is the control socket of the agent whose state directory is
// stateDir.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// Report is what the running agent says about itself.
type Report struct {
	// Version is the agent's build version; PID its process id.
	Version string `json:"version"`
	PID     int    `json:"pid"`
	// StartedAt is when the process started.
	StartedAt time.Time `json:"started_at"`
	// AgentID is the enrolled agent's id.
	AgentID string `json:"agent_id"`
	// ControlPlane is the control plane's URL.
	ControlPlane string `json:"control_plane"`
	// Connected is whether a session is established now, SessionID and
	// ConnectedSince which and since when.
	Connected      bool       `json:"connected"`
	SessionID      string     `json:"session_id,omitempty"`
	ConnectedSince *time.Time `json:"connected_since,omitempty"`
	// LastError is why the last session or dial ended, if one did.
	LastError string `json:"last_error,omitempty"`
	// JobsRunning is how many jobs run now.
	JobsRunning int `json:"jobs_running"`
	// LogLevel is the level logged at now; LogLevelUntil, when set, is
	// when it returns to ConfiguredLogLevel.
	LogLevel           string     `json:"log_level"`
	ConfiguredLogLevel string     `json:"configured_log_level"`
	LogLevelUntil      *time.Time `json:"log_level_until,omitempty"`
	// MetricsListen is the local metrics listener's address, if any.
	MetricsListen string `json:"metrics_listen,omitempty"`
}

// LevelRequest asks for a log level for a while.
type LevelRequest struct {
	// Level is debug, info, warn or error.
	Level string `json:"level"`
	// For is how long, such as "15m"; default 15m, at most 24h. Asking
	// for the configured level ends a temporary one at once.
	For string `json:"for,omitempty"`
}

// LevelReport is the log level after a LevelRequest.
type LevelReport struct {
	Level      string     `json:"level"`
	Configured string     `json:"configured_level"`
	Until      *time.Time `json:"until,omitempty"`
}

// errorBody is an error answer.
type errorBody struct {
	Error string `json:"error"`
}

// Options configure a Server.
type Options struct {
	// StateDir holds the socket. Required.
	StateDir string
	// Status builds the report (LogLevel fields are filled in by the
	// server). Required.
	Status func() Report
	// Level is the logger's level, changed by /v1/log-level. Required.
	Level zap.AtomicLevel
	// Logger logs level changes.
	Logger *zap.Logger
}

// Server serves the control socket. Build it with Listen.
type Server struct {
	o    Options
	ln   net.Listener
	hs   *http.Server
	path string

	mu         sync.Mutex // guards the fields below
	configured zapcore.Level
	until      time.Time
	revert     *time.Timer
	gen        int // counts temporary levels; a timer reverts only its own
}

// Listen opens the control socket. A socket left by an agent that is gone
// is replaced; one that still answers means another agent runs with this
// state directory, which is an error.
func Listen(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	path := SocketPath(o.StateDir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent is running with the state directory %s (its control socket %s answers)", o.StateDir, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// On Windows the state directory's ACL guards the socket; chmod means
	// nothing there.
	if err := os.Chmod(path, 0o600); err != nil && runtime.GOOS != "windows" {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{o: o, ln: ln, path: path, configured: o.Level.Level()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("POST /v1/log-level", s.setLevel)
	s.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: zap.NewStdLog(o.Logger)}
	return s, nil
}

// Close closes the socket without serving (for a start that failed after
// Listen).
func (s *Server) Close() error {
	err := s.ln.Close()
	_ = os.Remove(s.path)
	return err
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve serves until ctx ends, then closes the socket and removes it.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.hs.Serve(s.ln) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.hs.Shutdown(shut)
		cancel()
		<-errc
	}
	s.mu.Lock()
	if s.revert != nil {
		s.revert.Stop()
	}
	s.mu.Unlock()
	_ = os.Remove(s.path)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	r := s.o.Status()
	s.mu.Lock()
	r.LogLevel = s.o.Level.Level().String()
	r.ConfiguredLogLevel = s.configured.String()
	if !s.until.IsZero() {
		u := s.until
		r.LogLevelUntil = &u
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, r)
}

func (s *Server) setLevel(w http.ResponseWriter, r *http.Request) {
	var req LevelRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "the request is not {\"level\":…,\"for\":…}: " + err.Error()})
		return
	}
	lvl, err := zapcore.ParseLevel(req.Level)
	if err != nil || lvl < zapcore.DebugLevel || lvl > zapcore.ErrorLevel {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("level %q is not debug, info, warn or error", req.Level)})
		return
	}
	d := DefaultLevelFor
	if req.For != "" {
		if d, err = time.ParseDuration(req.For); err != nil || d <= 0 || d > MaxLevelFor {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: fmt.Sprintf("for %q is not a duration in 1s..%s such as 15m", req.For, MaxLevelFor)})
			return
		}
	}
	s.mu.Lock()
	if s.revert != nil {
		s.revert.Stop()
		s.revert = nil
	}
	s.until = time.Time{}
	old := s.o.Level.Level()
	s.o.Level.SetLevel(lvl)
	if lvl != s.configured {
		s.until = time.Now().Add(d).Round(time.Second)
		s.gen++
		gen := s.gen
		s.revert = time.AfterFunc(d, func() { s.expire(gen) })
	}
	rep := LevelReport{Level: lvl.String(), Configured: s.configured.String()}
	if !s.until.IsZero() {
		u := s.until
		rep.Until = &u
	}
	s.mu.Unlock()
	// Logged at warn so that it shows whatever the level: an operator
	// reading the logs sees why their volume changed.
	s.o.Logger.Warn("log level changed", zap.String("from", old.String()), zap.String("to", lvl.String()),
		zap.Duration("for", d), zap.String("reverts_to", s.configured.String()))
	writeJSON(w, http.StatusOK, rep)
}

// expire returns to the configured level when the timer of the current
// temporary level (generation gen) fires.
func (s *Server) expire(gen int) {
	s.mu.Lock()
	if s.gen != gen || s.revert == nil {
		s.mu.Unlock()
		return
	}
	s.revert = nil
	s.until = time.Time{}
	old := s.o.Level.Level()
	s.o.Level.SetLevel(s.configured)
	s.mu.Unlock()
	s.o.Logger.Warn("log level reverted", zap.String("from", old.String()), zap.String("to", s.configured.String()))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Client talks to a running agent's control socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client of the agent whose state directory is
// stateDir.
func NewClient(stateDir string) *Client {
	path := SocketPath(stateDir)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{path: path, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// ErrNotRunning: nothing answers on the control socket.
var ErrNotRunning = errors.New("the agent is not running (nothing answers on its control socket)")

// Status asks the running agent for its report.
func (c *Client) Status(ctx context.Context) (Report, error) {
	var r Report
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &r)
	return r, err
}

// SetLevel asks the running agent to log at level for d (0: the default).
func (c *Client) SetLevel(ctx context.Context, level string, d time.Duration) (LevelReport, error) {
	req := LevelRequest{Level: level}
	if d > 0 {
		req.For = d.String()
	}
	var r LevelReport
	err := c.do(ctx, http.MethodPost, "/v1/log-level", req, &r)
	return r, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("cannot open the control socket %s: permission denied; run as root or as the agent's user", c.path)
			}
			return fmt.Errorf("%w: %s", ErrNotRunning, c.path)
		}
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control socket: HTTP %d", resp.StatusCode)
	}
	return json.Unmarshal(b, out)
}
