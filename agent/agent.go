// Package agent is the on-premises agent: it keeps one outbound websocket
// to the control plane, proves who it is with the key it made at
// enrollment, runs the jobs it receives under its own local policy, reads
// secrets locally, and sends back only outcomes.
//
// The connection loop reconnects with capped, jittered backoff; inside a
// session one reader and one writer goroutine own the websocket. The runner
// bounds concurrency and gives every job its deadline; the outbox keeps each
// result until the control plane acknowledges it.
package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/backoff"
	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/protocol"
)

// maxSkew is the clock difference from the control plane above which the
// agent warns.
const maxSkew = 30 * time.Second

// Options configure an Agent. Zero values mean the defaults.
type Options struct {
	// Config is the validated configuration.
	Config Config
	// Identity is the enrolled identity (LoadIdentity).
	Identity Identity
	// Secrets are the secret backends; default: those in Config.
	Secrets *secrets.Set
	// Logger receives structured logs; default: none.
	Logger *zap.Logger
	// Version is the agent's build version, sent in hello.
	Version string
	// Dialer dials the control plane; default: one built from Config (TLS
	// with CAFile, the environment's HTTPS proxy).
	Dialer *websocket.Dialer
	// Backoff tunes reconnection. Its zero fields are backoff's defaults,
	// except Rejoin, which defaults to Max (backoff.DefaultMax unless set):
	// after a session that lasted (a control-plane restart drops the whole
	// fleet at once), the next dial comes within [0, Max), so that a
	// thousand agents come back spread over the cap instead of in the same
	// second (DESIGN §8). A negative Rejoin turns the spread off.
	Backoff backoff.Options
	// Observe, when set, sees every frame sent ("out") and received ("in").
	// For tests and debugging.
	Observe func(direction string, frame []byte)
	// Observer sees sessions, jobs, secret reads and GitHub calls (metrics,
	// readiness); default: none.
	Observer Observer
}

// Agent is the daemon. Create it with New and call Run once.
type Agent struct {
	cfg      Config
	id       Identity
	signer   ed25519.PrivateKey
	policy   *policy.Policy
	secrets  *secrets.Set
	github   *github.Service
	log      *zap.Logger
	version  string
	dialer   *websocket.Dialer
	backoff  *backoff.Backoff
	observe  func(string, []byte)
	obs      Observer
	url      string
	hostname string
	probe    bool // hellos are marked probe (Probe)

	hard     context.Context // canceled by Abort: everything stops now
	abort    context.CancelFunc
	runner   *runner
	outbox   *outbox
	handlers map[protocol.JobKind]handler

	mu       sync.Mutex // guards the fields below
	link     *link      // the current session, nil while disconnected
	draining bool
	stopping bool // no reconnect after the current session
	status   Status
}

// Status is what the agent reports about itself (agent status, logs).
type Status struct {
	Connected      bool
	SessionID      string
	ConnectedSince time.Time
	LastError      string
	// JobsRunning is how many jobs run now.
	JobsRunning int
}

// FatalError ends Run: retrying cannot help (revoked, key not accepted,
// incompatible protocol). Code is the websocket close code.
type FatalError struct {
	Code   int
	Reason string
}

func (e *FatalError) Error() string {
	switch e.Code {
	case protocol.CloseRevoked:
		return "the control plane revoked this agent: " + e.Reason + "; register and enroll it again"
	case protocol.CloseAuthFailed:
		return "the control plane does not accept this agent's key: " + e.Reason
	case protocol.CloseIncompatible:
		return fmt.Sprintf("the control plane does not speak this agent's protocol (%s): %s; upgrade the agent or the control plane", protocol.Subprotocol, e.Reason)
	}
	return fmt.Sprintf("the control plane closed the session for good (%d): %s", e.Code, e.Reason)
}

// New builds an Agent from validated options.
func New(o Options) (*Agent, error) {
	c := o.Config
	pol, err := policy.New(c.Policy)
	if err != nil {
		return nil, err
	}
	url, err := ConnectURL(c.ControlPlane, c.InsecureAllowWS)
	if err != nil {
		return nil, err
	}
	if len(o.Identity.PrivateKey) != ed25519.SeedSize || o.Identity.AgentID == "" {
		return nil, errors.New("agent: no enrolled identity; run agent enroll first")
	}
	a := &Agent{
		cfg: c, id: o.Identity, signer: o.Identity.Signer(), policy: pol, secrets: o.Secrets, log: o.Logger,
		version: o.Version, dialer: o.Dialer, backoff: backoff.New(reconnectOptions(o.Backoff)), observe: o.Observe, url: url,
		outbox: newOutbox(),
	}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	if a.obs = o.Observer; a.obs == nil {
		a.obs = NopObserver{}
	}
	a.log = a.log.With(zap.String("agent_id", o.Identity.AgentID))
	if a.secrets == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		a.secrets, err = SecretsFromConfig(ctx, c, a.log.Named("secrets"))
		cancel()
		if err != nil {
			return nil, err
		}
	}
	a.secrets = a.secrets.Observed(a.obs.SecretCall)
	if a.dialer == nil {
		if a.dialer, err = NewDialer(c); err != nil {
			return nil, err
		}
	}
	ua := "orchestrator-agent"
	if o.Version != "" {
		ua += "/" + o.Version
	}
	if a.github, err = github.New(github.Options{Config: c.GitHub, UserAgent: ua, Observe: a.obs.GitHubCall}); err != nil {
		return nil, err
	}
	a.hostname, _ = os.Hostname()
	a.hard, a.abort = context.WithCancel(context.Background())
	a.handlers = map[protocol.JobKind]handler{
		protocol.KindResolveCredentials: a.resolveCredentials,
		protocol.KindTestConnection:     a.testConnection,
		protocol.KindListOrganizations:  a.listOrganizations,
	}
	a.runner = newRunner(a.hard, c.Concurrency, a.handlers, pol.CheckKind, a.deliver, a.log.Named("runner"))
	a.runner.onDone = a.obs.JobDone
	return a, nil
}

// reconnectOptions fills in the agent's default Rejoin spread: Max.
func reconnectOptions(o backoff.Options) backoff.Options {
	if o.Rejoin == 0 {
		o.Rejoin = o.Max
		if o.Rejoin <= 0 {
			o.Rejoin = backoff.DefaultMax
		}
	}
	return o
}

// SecretsFromConfig builds the secret backends the config names. The AWS
// and Azure backends sit behind a [secrets.Cache] (secrets.cache_ttl), so
// that concurrent jobs for one secret make one call. Building them reads
// their configuration but calls no cloud service; log, if not nil, gets a
// debug line per call.
func SecretsFromConfig(ctx context.Context, c Config, log *zap.Logger) (*secrets.Set, error) {
	if log == nil {
		log = zap.NewNop()
	}
	var bs []secrets.Backend
	if c.Secrets.File != nil {
		f, err := secrets.NewFile(c.Secrets.File.Path)
		if err != nil {
			return nil, fmt.Errorf("secrets.file: %w", err)
		}
		bs = append(bs, f)
	}
	cache := secrets.CacheOptions{TTL: c.Secrets.CacheTTL, Logger: log}
	if c.Secrets.AWS != nil {
		b, err := secrets.NewAWS(ctx, *c.Secrets.AWS, secrets.AWSOptions{Logger: log.Named("aws")})
		if err != nil {
			return nil, err
		}
		bs = append(bs, secrets.NewCache(b, cache))
	}
	if c.Secrets.Azure != nil {
		b, err := secrets.NewAzure(*c.Secrets.Azure, secrets.AzureOptions{Logger: log.Named("azure")})
		if err != nil {
			return nil, err
		}
		bs = append(bs, secrets.NewCache(b, cache))
	}
	return secrets.NewSet(bs...), nil
}

// TLSConfig is the TLS configuration for the control plane: verified
// against the system's roots plus CAFile.
func TLSConfig(c Config) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	pins, err := ParsePins(c.ControlPlaneCAPin)
	if err != nil {
		return nil, err
	}
	if len(pins) > 0 {
		t.VerifyConnection = pinVerifier(pins)
	}
	if c.CAFile == "" {
		return t, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file: %s holds no PEM certificate", c.CAFile)
	}
	t.RootCAs = pool
	return t, nil
}

// NewDialer builds the websocket dialer: TLS verified (and pinned), the
// proxy setting or else the environment's HTTPS_PROXY honored, the
// protocol's subprotocol offered.
func NewDialer(c Config) (*websocket.Dialer, error) {
	t, err := TLSConfig(c)
	if err != nil {
		return nil, err
	}
	proxy, err := ProxyFunc(c)
	if err != nil {
		return nil, err
	}
	return &websocket.Dialer{
		Proxy:            proxy,
		TLSClientConfig:  t,
		HandshakeTimeout: 15 * time.Second,
		Subprotocols:     []string{protocol.Subprotocol},
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
	}, nil
}

// HTTPClient is the client for the control plane's HTTP endpoints
// (enrollment), with the same TLS and proxy settings as the dialer.
func HTTPClient(c Config) (*http.Client, error) {
	t, err := TLSConfig(c)
	if err != nil {
		return nil, err
	}
	proxy, err := ProxyFunc(c)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = t
	tr.Proxy = proxy
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// Kinds lists the job kinds this agent runs: allowed by its policy and
// implemented by this build.
func (a *Agent) Kinds() []protocol.JobKind {
	var out []protocol.JobKind
	for _, k := range a.policy.Kinds() {
		if a.handlers[k] != nil {
			out = append(out, k)
		}
	}
	return out
}

// Status reports the connection state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	s := a.status
	a.mu.Unlock()
	s.JobsRunning = a.runner.count()
	return s
}

// Abort stops everything at once: running jobs are canceled and the
// connection dropped. Run then returns. For a second signal.
func (a *Agent) Abort() { a.abort() }

// Run connects and serves jobs until ctx ends, then drains: it tells the
// control plane, lets running jobs finish within the drain grace period
// (canceling the rest), sends their results, and closes the connection
// normally. It returns nil after a drain, or a *FatalError when the control
// plane refuses the agent for good.
func (a *Agent) Run(ctx context.Context) error {
	defer a.github.Close()
	loop := make(chan error, 1)
	go func() { loop <- a.connectLoop() }()
	select {
	case err := <-loop:
		a.runner.stop()
		a.abort()
		return err
	case <-ctx.Done():
	}

	grace := a.cfg.DrainGrace
	a.log.Info("draining", zap.Duration("grace", grace), zap.Int("running", a.runner.count()))
	a.mu.Lock()
	a.draining = true
	l := a.link
	a.mu.Unlock()
	if l != nil {
		l.send(a.drainingMessage())
	}
	a.runner.drain(grace)
	flush, cancel := context.WithTimeout(a.hard, 5*time.Second)
	if !a.outbox.waitEmpty(flush) {
		a.log.Warn("results not acknowledged before exit", zap.Strings("job_ids", a.outbox.ids()))
	}
	cancel()
	a.mu.Lock()
	a.stopping = true
	l = a.link
	a.mu.Unlock()
	if l != nil {
		l.close(websocket.CloseNormalClosure, "agent stopped")
	}
	a.abort()
	err := <-loop
	a.log.Info("stopped")
	var fe *FatalError
	if errors.As(err, &fe) {
		return err
	}
	return nil
}

func (a *Agent) drainingMessage() *protocol.Message {
	return &protocol.Message{Type: protocol.TypeDraining, Draining: &protocol.Draining{Grace: protocol.Duration(a.cfg.DrainGrace), Reason: "shutting down"}}
}

// connectLoop keeps a session open until the hard context ends or a fatal
// refusal.
func (a *Agent) connectLoop() error {
	for {
		connected, err := a.session()
		a.mu.Lock()
		stopping := a.stopping
		a.status.Connected = false
		if err != nil {
			a.status.LastError = err.Error()
		}
		a.mu.Unlock()
		if a.hard.Err() != nil || stopping {
			return nil
		}
		var fe *FatalError
		if errors.As(err, &fe) {
			a.log.Error("control plane refused this agent; not retrying", zap.Int("close_code", fe.Code), zap.Error(err))
			return err
		}
		a.backoff.Connected(connected)
		delay := a.backoff.Next()
		a.log.Warn("reconnecting", zap.Duration("delay", delay), zap.Duration("connected_for", connected), zap.Error(err))
		a.obs.Reconnecting(delay, err)
		t := time.NewTimer(delay)
		select {
		case <-a.hard.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// deliver takes a job's result: held in the outbox, sent if connected.
func (a *Agent) deliver(r protocol.Result) {
	if dropped := a.outbox.put(r); dropped != "" {
		a.log.Error("outbox full; dropped the oldest unacknowledged result", zap.String("job_id", dropped))
	}
	a.mu.Lock()
	l := a.link
	a.mu.Unlock()
	if l != nil {
		l.send(&protocol.Message{Type: protocol.TypeResult, Result: &r})
	}
}

// session runs one connection: dial, handshake, then serve until it ends.
// It reports how long the session was established.
func (a *Agent) session() (time.Duration, error) {
	ctx := a.hard
	conn, resp, err := a.dialer.DialContext(ctx, a.url, nil)
	if err != nil {
		if resp != nil {
			return 0, fmt.Errorf("connect to %s: HTTP %d: %w", a.url, resp.StatusCode, err)
		}
		return 0, fmt.Errorf("connect to %s: %w", a.url, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	conn.SetReadLimit(protocol.MaxFrameSize)

	welcome, err := a.handshake(conn)
	if err != nil {
		return 0, err
	}
	interval := welcome.HeartbeatInterval.D()
	// Job deadlines come on the control plane's clock: note how far ours is
	// off (within the handshake's round trip) and say so when it is far.
	skew := time.Until(welcome.ServerTime)
	a.runner.skew.Store(int64(skew))
	if skew > maxSkew || skew < -maxSkew {
		a.log.Warn("clock differs from the control plane's; job deadlines are corrected, but check NTP on this machine", zap.Duration("skew", skew))
	}
	l := &link{conn: conn, out: make(chan []byte, 1024), done: make(chan struct{}), observe: a.observe, log: a.log}
	established := time.Now()
	log := a.log.With(zap.String("session_id", welcome.SessionID))
	a.mu.Lock()
	a.link = l
	a.status = Status{Connected: true, SessionID: welcome.SessionID, ConnectedSince: established}
	draining := a.draining
	a.mu.Unlock()
	a.runner.sessionID.Store(welcome.SessionID)
	log.Info("connected", zap.String("control_plane", a.cfg.ControlPlane), zap.Duration("heartbeat", interval))
	a.obs.Connected(welcome.SessionID)

	var wg sync.WaitGroup
	wg.Add(1)
	// The writer first sends the results held now (taken before the reader
	// starts, so that none of this session's comes before its accepted),
	// then what is queued.
	held := a.outbox.due(time.Now(), 0, 0)
	go func() { defer wg.Done(); l.writer(interval, a.runner.count, held, a.unacknowledged(interval)) }()
	if draining {
		l.send(a.drainingMessage())
	}
	err = a.readLoop(l, interval, log)
	a.mu.Lock()
	a.link = nil
	a.mu.Unlock()
	l.close(websocket.CloseNormalClosure, "")
	wg.Wait()
	log.Info("disconnected", zap.Error(err))
	a.obs.Disconnected(err)
	return time.Since(established), err
}

// handshake answers the challenge with a signed hello and reads welcome.
func (a *Agent) handshake(conn *websocket.Conn) (*protocol.Welcome, error) {
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	m, err := a.readMessage(conn)
	if err != nil {
		return nil, err
	}
	if conn.Subprotocol() != protocol.Subprotocol {
		return nil, &FatalError{Code: protocol.CloseIncompatible, Reason: "the control plane chose subprotocol " + conn.Subprotocol()}
	}
	if m.Type != protocol.TypeChallenge {
		return nil, fmt.Errorf("handshake: expected challenge, got %s", m.Type)
	}
	sig := ed25519.Sign(a.signer, protocol.SigningPayload(a.id.AgentID, m.Challenge.Nonce, protocol.Version))
	hello := &protocol.Message{Type: protocol.TypeHello, Hello: &protocol.Hello{
		AgentID: a.id.AgentID, Signature: base64.RawURLEncoding.EncodeToString(sig), ProtocolVersion: protocol.Version,
		AgentVersion: a.version, Hostname: a.hostname, OS: runtime.GOOS + "/" + runtime.GOARCH,
		Backends: a.secrets.Infos(), Kinds: a.Kinds(), Concurrency: a.cfg.Concurrency,
		Running: a.runner.ids(), Held: a.outbox.ids(), Probe: a.probe,
	}}
	b, err := protocol.Encode(hello)
	if err != nil {
		return nil, err
	}
	a.see("out", b)
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return nil, fmt.Errorf("handshake: send hello: %w", err)
	}
	m, err = a.readMessage(conn)
	if err != nil {
		return nil, err
	}
	if m.Type != protocol.TypeWelcome {
		return nil, fmt.Errorf("handshake: expected welcome, got %s", m.Type)
	}
	return m.Welcome, nil
}

// readMessage reads and decodes one frame, turning close frames into errors
// that say whether to retry.
func (a *Agent) readMessage(conn *websocket.Conn) (*protocol.Message, error) {
	_, frame, err := conn.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			switch ce.Code {
			case protocol.CloseRevoked, protocol.CloseAuthFailed, protocol.CloseIncompatible:
				return nil, &FatalError{Code: ce.Code, Reason: ce.Text}
			}
			return nil, fmt.Errorf("control plane closed the session (%d %s)", ce.Code, ce.Text)
		}
		return nil, err
	}
	a.see("in", frame)
	return protocol.Decode(frame)
}

func (a *Agent) see(dir string, frame []byte) {
	if a.observe != nil {
		a.observe(dir, frame)
	}
}

// readLoop serves the control plane's messages until the session ends.
func (a *Agent) readLoop(l *link, interval time.Duration, log *zap.Logger) error {
	conn := l.conn
	timeout := 3 * interval
	extend := func() { _ = conn.SetReadDeadline(time.Now().Add(timeout)) }
	extend()
	conn.SetPingHandler(func(data string) error {
		extend()
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		m, err := a.readMessage(conn)
		if err != nil {
			var de *protocol.DecodeError
			if errors.As(err, &de) {
				log.Warn("bad message from the control plane", zap.String("error_code", string(de.Code)), zap.Error(err))
				l.send(de.Reply())
				extend()
				continue
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("no ping from the control plane for %s", timeout)
			}
			return err
		}
		extend()
		switch m.Type {
		case protocol.TypeJob:
			if r, ok := a.outbox.get(m.Job.JobID); ok {
				// Delivered again after it finished: send the result, do not run it twice.
				l.send(&protocol.Message{Type: protocol.TypeResult, Result: &r})
				break
			}
			reply, start := a.runner.submit(m.Job)
			if reply != nil {
				l.send(reply)
			}
			if start != nil {
				start() // after accepted is queued: the result comes after it
			}
		case protocol.TypeCancel:
			if a.runner.cancel(m.Cancel.JobID, errCanceled) {
				log.Info("job cancel requested", zap.String("job_id", m.Cancel.JobID), zap.String("reason", m.Cancel.Reason))
			}
		case protocol.TypeResultAck:
			a.outbox.ack(m.ResultAck.JobID)
		case protocol.TypeError:
			log.Warn("control plane reported an error", zap.String("error_code", string(m.Error.Code)),
				zap.String("message", m.Error.Message), zap.String("ref_type", string(m.Error.RefType)))
		default:
			l.send(&protocol.Message{Type: protocol.TypeError, Error: &protocol.ErrorBody{
				Error: *protocol.Errorf(protocol.CodeUnknownType, "a control plane does not send %s messages in a session", m.Type),
				RefID: m.ID, RefType: m.Type,
			}})
		}
	}
}

// resendAfter is how many heartbeat intervals a result may go
// unacknowledged within a session before it is sent again (30 s at the
// production interval): the control plane may have failed to store it (it
// acknowledges only what it stored) or the acknowledgement may have been
// lost. The control plane records a job's first result only, so a result
// sent twice is recorded once.
const resendAfter = 3

// maxResendPerBeat bounds the results sent again at one heartbeat; the
// others wait for the next.
const maxResendPerBeat = 100

// unacknowledged returns the writer's source of results to send again at
// each heartbeat of interval: those unacknowledged for resendAfter
// intervals.
func (a *Agent) unacknowledged(interval time.Duration) func() []protocol.Result {
	return func() []protocol.Result {
		rs := a.outbox.due(time.Now(), resendAfter*interval, maxResendPerBeat)
		if len(rs) > 0 {
			var ids []string // the first ten: enough to find them
			for _, r := range rs[:min(len(rs), 10)] {
				ids = append(ids, r.JobID)
			}
			a.log.Warn("results not acknowledged by the control plane; sending them again",
				zap.Int("results", len(rs)), zap.Strings("job_ids", ids), zap.Duration("unacknowledged_for", resendAfter*interval))
		}
		return rs
	}
}

// link is one established session's writing side.
type link struct {
	conn      *websocket.Conn
	out       chan []byte
	done      chan struct{}
	closeOnce sync.Once
	observe   func(string, []byte)
	log       *zap.Logger
}

// send queues m for the writer; it never blocks. A full queue ends the
// session (the results stay in the outbox for the next one).
func (l *link) send(m *protocol.Message) {
	b, err := protocol.Encode(m)
	if err != nil {
		l.log.Error("encode message", zap.String("type", string(m.Type)), zap.Error(err))
		return
	}
	select {
	case l.out <- b:
	case <-l.done:
	default:
		l.close(websocket.CloseTryAgainLater, "send queue full")
	}
}

func (l *link) close(code int, reason string) {
	l.closeOnce.Do(func() {
		_ = l.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		close(l.done)
		_ = l.conn.Close()
	})
}

// writer owns writes: queued frames and a heartbeat every interval.
func (l *link) writer(interval time.Duration, running func() int, held []protocol.Result, unacked func() []protocol.Result) {
	t := time.NewTicker(interval)
	defer t.Stop()
	write := func(b []byte) bool {
		if l.observe != nil {
			l.observe("out", b)
		}
		_ = l.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := l.conn.WriteMessage(websocket.TextMessage, b); err != nil {
			l.close(websocket.CloseAbnormalClosure, "")
			return false
		}
		return true
	}
	sendHeld := func(rs []protocol.Result) bool {
		for _, r := range rs {
			if b, err := protocol.Encode(&protocol.Message{Type: protocol.TypeResult, Result: &r}); err == nil && !write(b) {
				return false
			}
		}
		return true
	}
	// Held results are written here, not queued: however many there are,
	// they cannot overflow the queue, which only this goroutine empties.
	if !sendHeld(held) {
		return
	}
	for {
		select {
		case <-l.done:
			return
		case b := <-l.out:
			if !write(b) {
				return
			}
		case <-t.C:
			b, err := protocol.Encode(&protocol.Message{Type: protocol.TypeHeartbeat, Heartbeat: &protocol.Heartbeat{Running: running()}})
			if err == nil && !write(b) {
				return
			}
			if !sendHeld(unacked()) {
				return
			}
		}
	}
}
