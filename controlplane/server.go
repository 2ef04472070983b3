// Package controlplane is the control plane's server: the HTTP API v1, the
// agents' websocket endpoint, and the dispatcher that carries each job from
// the API to an online agent and back. Persistence is a store.Store.
package controlplane

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/controlplane/web"
	"github.com/orchestrator/orchestrator/protocol"
)

// Options configure a Server. Zero values mean the defaults.
type Options struct {
	// Store keeps agents and jobs. Required.
	Store store.Store
	// AdminToken authorizes the HTTP API (Bearer). Required, 16+ bytes.
	AdminToken string
	// Logger receives structured logs; default: none.
	Logger *zap.Logger
	// HeartbeatInterval is how often agents send heartbeats and the control
	// plane pings them; an agent silent for three intervals is offline.
	// Default 10s.
	HeartbeatInterval time.Duration
	// EnrollmentTokenTTL is how long an enrollment token stays valid.
	// Default 24h.
	EnrollmentTokenTTL time.Duration
	// DefaultJobTimeout and MaxJobTimeout bound a job's life. Defaults 60s
	// and 1h.
	DefaultJobTimeout time.Duration
	MaxJobTimeout     time.Duration
	// MaxWait bounds the ?wait= of the API. Default 60s.
	MaxWait time.Duration
	// MaxAttempts is how many times a job is dispatched to an agent that
	// comes back without it. Default 3.
	MaxAttempts int
	// PasswordCost is the bcrypt cost of connection passwords. Default
	// bcrypt.DefaultCost (10); tests lower it.
	PasswordCost int
	// Version is the control plane's build version, for logs.
	Version string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Server is the control plane. Create it with New, serve Handler, call Start
// once before serving and Close at the end.
type Server struct {
	store     store.Store
	log       *zap.Logger
	now       func() time.Time
	heartbeat time.Duration
	tokenTTL  time.Duration
	defTO     time.Duration
	maxTO     time.Duration
	maxWait   time.Duration
	adminHash [sha256.Size]byte
	// handshakeWait is how long a new connection has to send its hello:
	// handshakeTimeout, shortened by tests.
	handshakeWait time.Duration

	disp     *dispatcher
	metrics  *metrics // served at /metrics (metrics.go)
	upgrader websocket.Upgrader
	mux      *http.ServeMux
	// patterns lists the mux patterns that routes registered, for the
	// OpenAPI document's test.
	patterns []string
	// pages are the patterns of the web console's pages and files: not
	// API, so not in the OpenAPI document.
	pages map[string]bool

	sessions    *web.Sessions               // the web console's sessions
	crossOrigin *http.CrossOriginProtection // refuses cross-origin console requests

	passwordCost int
	attempts     *attemptLimiter // failed connection passwords
	refused      *refusals       // wrong admin tokens, for the log (refusals.go)

	connMu  sync.Mutex     // guards closing and conns.Add
	closing bool           // no new agent sessions once Close began
	conns   sync.WaitGroup // live agent connections
}

// New checks o and builds a Server.
func New(o Options) (*Server, error) {
	if o.Store == nil {
		return nil, errors.New("controlplane: Options.Store is required")
	}
	if len(o.AdminToken) < 16 {
		return nil, errors.New("controlplane: the admin token must be at least 16 characters")
	}
	s := &Server{
		store:     o.Store,
		log:       o.Logger,
		now:       o.Now,
		heartbeat: or(o.HeartbeatInterval, 10*time.Second),
		tokenTTL:  or(o.EnrollmentTokenTTL, 24*time.Hour),
		defTO:     or(o.DefaultJobTimeout, 60*time.Second),
		maxTO:     or(o.MaxJobTimeout, time.Hour),
		maxWait:   or(o.MaxWait, 60*time.Second),
		adminHash: sha256.Sum256([]byte(o.AdminToken)),

		handshakeWait: handshakeTimeout,

		passwordCost: or(o.PasswordCost, bcrypt.DefaultCost),
		attempts:     newAttemptLimiter(maxPasswordFailures, passwordWindow),
		refused:      newRefusals(),
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.heartbeat < 100*time.Millisecond || s.heartbeat > 10*time.Minute {
		return nil, fmt.Errorf("controlplane: heartbeat interval %s is outside 100ms..10m", s.heartbeat)
	}
	if s.passwordCost < bcrypt.MinCost || s.passwordCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("controlplane: password cost %d is outside %d..%d", s.passwordCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if s.defTO > s.maxTO {
		return nil, fmt.Errorf("controlplane: the default job timeout %s exceeds the maximum %s", s.defTO, s.maxTO)
	}
	attempts := o.MaxAttempts
	if attempts <= 0 {
		attempts = 3
	}
	s.metrics = newMetrics(o.Version)
	s.store = measuredStore{Store: s.store, m: s.metrics}
	s.disp = newDispatcher(s.store, s.log.Named("dispatcher"), s.now, attempts)
	s.disp.onFinish = s.metrics.jobFinished
	s.metrics.watch(s.disp)
	s.upgrader = websocket.Upgrader{
		Subprotocols:     []string{protocol.Subprotocol},
		HandshakeTimeout: handshakeTimeout,
		// An idle agent costs memory for every buffer it holds: 1 KiB to
		// read (job results and heartbeats fit; a larger frame takes more
		// reads), and a write buffer from the pool only while writing.
		ReadBufferSize:  1024,
		WriteBufferPool: &sync.Pool{},
		// Agents are programs, not browsers: there is no Origin to check.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.routes()
	return s, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Start reloads the open jobs from the store and arms their deadlines.
func (s *Server) Start(ctx context.Context) error {
	return s.disp.load(ctx)
}

// Handler serves the HTTP API and the agents' endpoint.
func (s *Server) Handler() http.Handler { return s.mux }

// Close ends every agent session (agents reconnect to the next control
// plane) and waits for their handlers, bounded by ctx.
func (s *Server) Close(ctx context.Context) error {
	s.connMu.Lock()
	s.closing = true
	s.connMu.Unlock()
	s.disp.stop()
	for _, sess := range s.disp.sessions() {
		sess.close(protocol.CloseShuttingDown, "the control plane is shutting down")
	}
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("controlplane: agent sessions still open: %w", ctx.Err())
	}
}

// enter registers a new agent connection unless the server is closing.
func (s *Server) enter() bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.closing {
		return false
	}
	s.conns.Add(1)
	return true
}

func (s *Server) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// authorized compares the Bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	const prefix = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(h[len(prefix):]))
	return subtle.ConstantTimeCompare(got[:], s.adminHash[:]) == 1
}
