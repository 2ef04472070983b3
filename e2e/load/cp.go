//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/protocol"
)

// cpHandle is a control plane the tool talks to: started here, in this
// process or as a child process, or given with -url.
type cpHandle struct {
	base    string // http://127.0.0.1:PORT
	token   string
	dataDir string // the store's directory, for the fsync floor
	pid     int    // the child process, 0 in-process or with -url
	logPath string
	stop    func() error
}

func (c *cpHandle) wsURL() string {
	return "ws" + strings.TrimPrefix(c.base, "http") + protocol.ConnectPath
}

func newAdminToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// cpLogger is the control plane's production logger (controlplane.NewLogger:
// JSON, info) writing to a file instead of stderr, unbuffered like stderr,
// so that the cost of its log lines is in the figures. path "" logs nothing.
func cpLogger(path string) (*zap.Logger, func(), error) {
	if path == "" {
		return zap.NewNop(), func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey, ec.MessageKey, ec.LevelKey, ec.NameKey = "ts", "msg", "level", "logger"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.Lock(f), zapcore.InfoLevel))
	return log, func() { _ = log.Sync(); f.Close() }, nil
}

// startInProcess runs controlplane.Serve, the code behind `controlplane
// serve`, in this process on a new data directory under dir. Its
// goroutines carry the profiler label side=controlplane.
func startInProcess(ctx context.Context, dir string, logToFile bool, heartbeat time.Duration) (*cpHandle, error) {
	h := &cpHandle{token: newAdminToken(), dataDir: filepath.Join(dir, "data")}
	if logToFile {
		h.logPath = filepath.Join(dir, "controlplane.log")
	}
	log, closeLog, err := cpLogger(h.logPath)
	if err != nil {
		return nil, err
	}
	addrFile := filepath.Join(dir, "controlplane.addr")
	os.Remove(addrFile)
	cfg := controlplane.ServeConfig{Listen: "127.0.0.1:0", DataDir: h.dataDir, AddrFile: addrFile, HeartbeatInterval: heartbeat}
	getenv := func(k string) string {
		if k == "CONTROLPLANE_ADMIN_TOKEN" {
			return h.token
		}
		return ""
	}
	sctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go pprof.Do(sctx, pprof.Labels("side", "controlplane"), func(ctx context.Context) {
		errc <- controlplane.Serve(ctx, cfg, log, "load", getenv)
	})
	addr, err := waitAddr(ctx, addrFile, errc)
	if err != nil {
		cancel()
		closeLog()
		return nil, err
	}
	h.base = "http://" + addr
	h.stop = func() error {
		cancel()
		defer closeLog()
		select {
		case err := <-errc:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("the control plane did not stop within 30s")
		}
	}
	return h, nil
}

// startProcess runs a control plane as its own process: bin with args
// (the built controlplane binary, or this tool in -mode serve), on the data
// directory dir/data, its log in dir/controlplane.log. A restart on the
// same dir keeps the store.
func startProcess(ctx context.Context, dir, token string, bin string, args ...string) (*cpHandle, error) {
	h := &cpHandle{token: token, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "controlplane.log")}
	addrFile := filepath.Join(dir, "controlplane.addr")
	os.Remove(addrFile)
	logf, err := os.OpenFile(h.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	args = append(args, "--data", h.dataDir, "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--log-format", "json", "--log-level", "info")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "CONTROLPLANE_ADMIN_TOKEN="+token)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	addr, err := waitAddr(ctx, addrFile, exited)
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("%w (log: %s)", err, h.logPath)
	}
	h.base, h.pid = "http://"+addr, cmd.Process.Pid
	h.stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("the control plane did not stop within 30s of SIGTERM; killed")
		}
	}
	return h, nil
}

// waitAddr waits for the control plane to write the address it listens on.
func waitAddr(ctx context.Context, path string, exited <-chan error) (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && bytes.HasSuffix(b, []byte("\n")) {
			return strings.TrimSpace(string(b)), nil
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("the control plane exited before listening: %v", err)
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return "", errors.New("the control plane did not listen within 60s")
}

// buildBinary builds ./cmd/NAME into dir (run from the repository root).
func buildBinary(ctx context.Context, dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/"+name)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s (run the tool from the repository root, or pass -bin): %w", name, err)
	}
	return out, nil
}

// apiClient calls the HTTP API with the admin token over keep-alive
// connections.
type apiClient struct {
	base, token string
	c           *http.Client
}

func newAPIClient(h *cpHandle, conns int) *apiClient {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &apiClient{base: h.base, token: h.token, c: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

func (a *apiClient) close() { a.c.CloseIdleConnections() }

// raw sends body (nil for none) and returns the status and the answer.
func (a *apiClient) raw(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// do sends in as JSON and decodes the answer into out, expecting want.
func (a *apiClient) do(ctx context.Context, method, path string, in any, want int, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	status, b, err := a.raw(ctx, method, path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if status != want {
		return fmt.Errorf("%s %s: status %d: %s", method, path, status, truncate(b, 300))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// register registers an agent and returns its id and enrollment token.
func (a *apiClient) register(ctx context.Context, name string) (string, string, error) {
	var r protocol.RegisterAgentResponse
	if err := a.do(ctx, http.MethodPost, "/api/v1/agents", protocol.RegisterAgentRequest{Name: name}, http.StatusCreated, &r); err != nil {
		return "", "", err
	}
	return r.Agent.ID, r.EnrollmentToken.Token, nil
}

// waitOnline waits until every agent in ids is online, bounded by d.
func (a *apiClient) waitOnline(ctx context.Context, ids []string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, id := range ids {
		for {
			var v protocol.AgentView
			if err := a.do(ctx, http.MethodGet, "/api/v1/agents/"+id, nil, http.StatusOK, &v); err != nil {
				return err
			}
			if v.Status == protocol.AgentOnline {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("agent %s is %s after %s", id, v.Status, d)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}
