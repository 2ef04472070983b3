//go:build linux

package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/protocol"
)

// loadSecret is the secret every job of the tool resolves.
const loadSecret = "load/github"

func loadRef() *protocol.SecretRef {
	return &protocol.SecretRef{Backend: protocol.BackendFile, SecretName: loadSecret, UsernameKey: "username", PasswordKey: "token"}
}

// fastBackend is a secret backend that answers at once with fixed
// credentials, so that a job costs what the product costs and nothing of a
// secret manager. It is named "file" to satisfy the policy and the
// reference's validation.
type fastBackend struct{}

var _ secrets.Backend = fastBackend{}

func (fastBackend) Name() string { return protocol.BackendFile }

func (fastBackend) Info() protocol.BackendInfo {
	return protocol.BackendInfo{Name: protocol.BackendFile, Settings: map[string]string{"path": "(load tool: fixed credentials)"}}
}

func (fastBackend) Resolve(ctx context.Context, ref protocol.SecretRef) (secrets.Credentials, error) {
	if err := ctx.Err(); err != nil {
		return secrets.Credentials{}, err
	}
	return secrets.Credentials{
		Username:  redact.New("load-bot"),
		Password:  redact.New("ghp_loadLOADloadLOADloadLOADload0000"),
		KeysFound: []string{secrets.KeyUsername, secrets.KeyPassword},
	}, nil
}

// realAgent is the real agent (agent.New and Run) in this process, with
// the fast backend, over a real websocket.
type realAgent struct {
	id   string
	a    *agent.Agent
	done chan struct{}
}

// frameTap keeps the first job and result frames an agent saw, to size the
// floor's messages.
type frameTap struct {
	mu     sync.Mutex // guards the fields below
	job    []byte
	result []byte
}

func (f *frameTap) observe(dir string, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.job != nil && f.result != nil {
		return
	}
	m, err := protocol.Decode(b)
	if err != nil {
		return
	}
	switch {
	case dir == "in" && m.Type == protocol.TypeJob && f.job == nil:
		f.job = append([]byte(nil), b...)
	case dir == "out" && m.Type == protocol.TypeResult && f.result == nil:
		f.result = append([]byte(nil), b...)
	}
}

func (f *frameTap) get() (job, result []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.job, f.result
}

// startRealAgents registers, enrolls and runs n agents, each with
// concurrency slots, until ctx ends. tap, when set, sees the first agent's
// frames. Their goroutines carry the profiler label side=agent.
func startRealAgents(ctx context.Context, api *apiClient, h *cpHandle, dir, prefix string, n, concurrency int, tap *frameTap) ([]*realAgent, error) {
	agents := make([]*realAgent, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var obs func(string, []byte)
			if i == 0 && tap != nil {
				obs = tap.observe
			}
			agents[i], errs[i] = startRealAgent(ctx, api, h, dir, fmt.Sprintf("%s-%d", prefix, i), concurrency, obs)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return agents, err
	}
	return agents, nil
}

func startRealAgent(ctx context.Context, api *apiClient, h *cpHandle, dir, name string, concurrency int, observe func(string, []byte)) (*realAgent, error) {
	id, token, err := api.register(ctx, name)
	if err != nil {
		return nil, err
	}
	stateDir := filepath.Join(dir, "agents", name)
	identity, err := agent.Enroll(ctx, agent.EnrollOptions{
		ControlPlane: h.base, InsecureAllowWS: true, HTTPClient: api.c,
		Token: token, StateDir: stateDir, Hostname: "load", Version: "load",
	})
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", name, err)
	}
	cfg := agent.Config{
		ControlPlane: h.base, StateDir: stateDir, InsecureAllowWS: true,
		Concurrency: concurrency, DrainGrace: 5 * time.Second,
		Log: agent.LogConfig{Format: "json", Level: "info"},
		Policy: policy.Config{
			JobKinds: []string{string(protocol.KindResolveCredentials)},
			Secrets:  []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: loadSecret}},
		},
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	a, err := agent.New(agent.Options{
		Config: cfg, Identity: identity, Secrets: secrets.NewSet(fastBackend{}), Logger: zap.NewNop(),
		Version: "load", Observe: observe,
		Backoff: backoff.Options{Base: 50 * time.Millisecond, Max: time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("agent.New: %w", err)
	}
	r := &realAgent{id: id, a: a, done: make(chan struct{})}
	go pprof.Do(ctx, pprof.Labels("side", "agent"), func(ctx context.Context) {
		defer close(r.done)
		_ = a.Run(ctx)
	})
	return r, nil
}

// stopAgents waits for the agents to return from Run after their context
// ended, bounded; it aborts the ones that take too long.
func stopAgents(agents []*realAgent) {
	deadline := time.After(15 * time.Second)
	for _, r := range agents {
		if r == nil {
			continue
		}
		select {
		case <-r.done:
		case <-deadline:
			r.a.Abort()
			<-r.done
		}
	}
}

// --- lean simulated agents --------------------------------------------------

// simAgent is a lean agent for tests with thousands of connections: it
// speaks protocol v1 over a gorilla websocket (challenge, signed hello,
// heartbeats, pongs), with one reader goroutine and no runner. With answer
// set it answers each job with accepted and a result at once.
type simAgent struct {
	id  string
	key ed25519.PrivateKey

	conn *websocket.Conn
	wmu  sync.Mutex // guards writes on conn
	done chan struct{}
}

// enrollSim registers an agent and enrolls a key made here.
func enrollSim(ctx context.Context, api *apiClient, name string) (*simAgent, error) {
	id, token, err := api.register(ctx, name)
	if err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var r protocol.EnrollResponse
	if err := api.do(ctx, http.MethodPost, protocol.EnrollPath, protocol.EnrollRequest{
		Token: token, PublicKey: protocol.EncodePublicKey(pub), Hostname: "load-sim", AgentVersion: "load-sim",
	}, http.StatusOK, &r); err != nil {
		return nil, err
	}
	return &simAgent{id: id, key: priv}, nil
}

// enrollSims enrolls n simulated agents, par at a time.
func enrollSims(ctx context.Context, api *apiClient, prefix string, n, par int) ([]*simAgent, error) {
	out := make([]*simAgent, n)
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
				if i >= n || ctx.Err() != nil {
					return
				}
				s, err := enrollSim(ctx, api, fmt.Sprintf("%s-%d", prefix, i))
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				out[i] = s
			}
		}()
	}
	wg.Wait()
	return out, first
}

var simDialer = &websocket.Dialer{
	Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 30 * time.Second,
	ReadBufferSize: 1024, WriteBufferSize: 1024,
}

// connect runs the handshake and starts the reader.
func (s *simAgent) connect(ctx context.Context, url string, concurrency int, answer bool) error {
	conn, resp, err := simDialer.DialContext(ctx, url, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	conn.SetReadLimit(protocol.MaxFrameSize)
	fail := func(err error) error { conn.Close(); return err }
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := readMsg(conn)
	if err != nil {
		return fail(err)
	}
	if m.Type != protocol.TypeChallenge {
		return fail(fmt.Errorf("first message %s, want challenge", m.Type))
	}
	sig := ed25519.Sign(s.key, protocol.SigningPayload(s.id, m.Challenge.Nonce, protocol.Version))
	hello := &protocol.Message{Type: protocol.TypeHello, Hello: &protocol.Hello{
		AgentID: s.id, Signature: base64.RawURLEncoding.EncodeToString(sig), ProtocolVersion: protocol.Version,
		AgentVersion: "load-sim", Hostname: "load-sim", OS: "linux/amd64",
		Backends:    []protocol.BackendInfo{fastBackend{}.Info()},
		Kinds:       []protocol.JobKind{protocol.KindResolveCredentials},
		Concurrency: concurrency,
	}}
	if err := writeMsg(conn, hello); err != nil {
		return fail(err)
	}
	if m, err = readMsg(conn); err != nil {
		return fail(err)
	}
	if m.Type != protocol.TypeWelcome {
		return fail(fmt.Errorf("answer to hello %s, want welcome", m.Type))
	}
	s.conn, s.done = conn, make(chan struct{})
	timeout := 3 * m.Welcome.HeartbeatInterval.D()
	conn.SetPingHandler(func(data string) error {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	go s.read(answer, timeout)
	return nil
}

func readMsg(conn *websocket.Conn) (*protocol.Message, error) {
	_, b, err := conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	return protocol.Decode(b)
}

func writeMsg(conn *websocket.Conn, m *protocol.Message) error {
	b, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return conn.WriteMessage(websocket.TextMessage, b)
}

func (s *simAgent) send(m *protocol.Message) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return writeMsg(s.conn, m)
}

func (s *simAgent) read(answer bool, timeout time.Duration) {
	defer close(s.done)
	for {
		m, err := readMsg(s.conn)
		if err != nil {
			var de *protocol.DecodeError
			if errors.As(err, &de) {
				continue
			}
			return
		}
		_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
		if !answer || m.Type != protocol.TypeJob {
			continue
		}
		j := m.Job
		if s.send(&protocol.Message{Type: protocol.TypeAccepted, Accepted: &protocol.Accepted{JobID: j.JobID, Attempt: j.Attempt}}) != nil {
			return
		}
		now := time.Now().UTC()
		if s.send(&protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{
			JobID: j.JobID, Attempt: j.Attempt, OK: true, StartedAt: now, FinishedAt: now,
			Output: &protocol.Output{Credentials: &protocol.CredentialsOutput{
				Backend: protocol.BackendFile, Reference: *j.Params.Secret, KeysFound: []string{secrets.KeyUsername, secrets.KeyPassword},
				Fingerprint: "hmac-sha256:0123456789abcdef01234567", Timings: map[string]int64{"secret": 0},
			}},
		}}) != nil {
			return
		}
	}
}

func (s *simAgent) heartbeat() error {
	return s.send(&protocol.Message{Type: protocol.TypeHeartbeat, Heartbeat: &protocol.Heartbeat{}})
}

func (s *simAgent) close() {
	if s.conn == nil {
		return
	}
	s.wmu.Lock()
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	s.wmu.Unlock()
	s.conn.Close()
	<-s.done
}

// heartbeats sends every connected agent's heartbeat once per interval,
// spread over the interval, until ctx ends.
func heartbeats(ctx context.Context, agents func() []*simAgent, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		list := agents()
		if len(list) == 0 {
			continue
		}
		// Spread over half the interval, a hundred at a time.
		gap := interval / 2 / time.Duration(len(list)) * 100
		for i, s := range list {
			if ctx.Err() != nil {
				return
			}
			_ = s.heartbeat()
			if i%100 == 99 {
				time.Sleep(gap)
			}
		}
	}
}
