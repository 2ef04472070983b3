package controlplane

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
	"github.com/orchestrator/orchestrator/protocol"
)

// Benchmarks of the dispatcher: a job submitted, stored, dispatched over a
// real websocket to an agent that answers at once (accepted, then a
// result), the result stored and acknowledged. Every state change is
// durable (SQLite, synchronous=FULL), so these measure the disk as well.
//
//	go test -run '^$' -bench Dispatch -benchmem ./controlplane

// benchCP is a control plane on a real store behind httptest, with agents
// that answer every job at once.
type benchCP struct {
	b   *testing.B
	srv *Server
	st  *sqlite.Store
	ts  *httptest.Server
}

func newBenchCP(b *testing.B) *benchCP {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := sqlite.Open(ctx, b.TempDir(), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(Options{Store: st, AdminToken: testAdminToken, HeartbeatInterval: 5 * time.Second})
	if err != nil {
		st.Close()
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		st.Close()
		b.Fatal(err)
	}
	c := &benchCP{b: b, srv: srv, st: st, ts: httptest.NewServer(srv.Handler())}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			b.Error(err)
		}
		c.ts.Close()
		st.Close()
	})
	return c
}

func (c *benchCP) api(method, path string, in, out any, want int) {
	c.b.Helper()
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			c.b.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.ts.URL+path, body)
	if err != nil {
		c.b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := c.ts.Client().Do(req)
	if err != nil {
		c.b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.b.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.b.Fatal(err)
		}
	}
}

// agent registers, enrolls and connects an agent that answers every job at
// once, and waits until the dispatcher has its session.
func (c *benchCP) agent(name string, concurrency int) string {
	c.b.Helper()
	var reg protocol.RegisterAgentResponse
	c.api("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: name}, &reg, http.StatusCreated)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	c.api("POST", protocol.EnrollPath, protocol.EnrollRequest{
		Token: reg.EnrollmentToken.Token, PublicKey: protocol.EncodePublicKey(pub), Hostname: "bench", AgentVersion: "bench",
	}, nil, http.StatusOK)
	id := reg.Agent.ID
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial("ws"+strings.TrimPrefix(c.ts.URL, "http")+protocol.ConnectPath, nil)
	if err != nil {
		c.b.Fatal(err)
	}
	resp.Body.Close()
	read := func() *protocol.Message {
		_, f, err := conn.ReadMessage()
		if err != nil {
			c.b.Fatal(err)
		}
		m, err := protocol.Decode(f)
		if err != nil {
			c.b.Fatal(err)
		}
		return m
	}
	write := func(m *protocol.Message) error {
		f, err := protocol.Encode(m)
		if err != nil {
			return err
		}
		return conn.WriteMessage(websocket.TextMessage, f)
	}
	nonce := read().Challenge.Nonce
	k := agentKey{id: id, key: key}
	if err := write(helloFor(k, nonce, func(h *protocol.Hello) { h.Concurrency = concurrency })); err != nil {
		c.b.Fatal(err)
	}
	if m := read(); m.Type != protocol.TypeWelcome {
		c.b.Fatalf("got %s, want welcome", m.Type)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, f, err := conn.ReadMessage()
			if err != nil {
				return
			}
			m, err := protocol.Decode(f)
			if err != nil || m.Type != protocol.TypeJob {
				continue
			}
			j := m.Job
			if write(&protocol.Message{Type: protocol.TypeAccepted, Accepted: &protocol.Accepted{JobID: j.JobID, Attempt: j.Attempt}}) != nil {
				return
			}
			if write(okResult(j.JobID, j.Attempt, "hmac-sha256:0123456789abcdef01234567")) != nil {
				return
			}
		}
	}()
	c.b.Cleanup(func() { conn.Close(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for c.srv.disp.live(id).sessionID == "" {
		if time.Now().After(deadline) {
			c.b.Fatal("the agent's session was not attached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	return id
}

// run submits one job to agentID and waits for it to end, through the
// dispatcher's functions (no HTTP).
func (c *benchCP) run(ctx context.Context, agentID string) error {
	now := time.Now()
	j, err := c.srv.disp.submit(ctx, store.Job{
		ID: newID("job_", now), AgentID: agentID, Kind: protocol.KindResolveCredentials, Params: resolveParams(),
		State: protocol.JobQueued, Timeout: time.Minute, Deadline: now.Add(time.Minute), CreatedAt: now,
	})
	if err != nil {
		return err
	}
	c.srv.disp.wait(ctx, j.ID)
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// BenchmarkDispatchRoundTrip is one job at a time: its latency.
func BenchmarkDispatchRoundTrip(b *testing.B) {
	c := newBenchCP(b)
	id := c.agent("bench-1", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for b.Loop() {
		if err := c.run(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDispatchParallel is many submitters to 16 agents: group commits
// and the per-agent lock at work. Its ns/op is the inverse of jobs/s.
func BenchmarkDispatchParallel(b *testing.B) {
	c := newBenchCP(b)
	var ids []string
	for i := range 16 {
		ids = append(ids, c.agent(fmt.Sprintf("bench-%d", i), 16))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var n atomic.Int64
	b.SetParallelism(32) // 64 submitters on 2 cores, 4 per agent
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := ids[int(n.Add(1))%len(ids)]
		for pb.Next() {
			if err := c.run(ctx, id); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAPISubmitWait is BenchmarkDispatchRoundTrip through the HTTP
// API: POST /api/v1/jobs?wait=30s.
func BenchmarkAPISubmitWait(b *testing.B) {
	c := newBenchCP(b)
	id := c.agent("bench-api", 4)
	body, _ := json.Marshal(protocol.SubmitJobRequest{AgentID: id, Kind: protocol.KindResolveCredentials, Params: resolveParams()})
	client := c.ts.Client()
	for b.Loop() {
		req, _ := http.NewRequest("POST", c.ts.URL+"/api/v1/jobs?wait=30s", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || !bytes.Contains(raw, []byte(`"succeeded"`)) {
			b.Fatalf("%d %s", resp.StatusCode, raw)
		}
	}
}
