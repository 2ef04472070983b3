package controlplane

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

const (
	handshakeTimeout = 10 * time.Second
	writeWait        = 10 * time.Second
	// sendQueue bounds the frames waiting for one agent's writer; an agent
	// that falls this far behind is disconnected rather than buffered.
	sendQueue = 1024
)

// session is one agent's live websocket. The reader runs in a goroutine
// started by the handler after the handshake. Frames are written by a
// writer goroutine that runs only while frames are queued, so that an idle
// session has one goroutine, not two; pings come from a timer. Control
// frames (ping, close) may be written from any goroutine (gorilla allows
// it).
type session struct {
	id      string
	agentID string
	conn    *websocket.Conn
	log     *zap.Logger

	done      chan struct{}
	closeOnce sync.Once
	writers   sync.WaitGroup // the writer goroutine, while it runs

	mu      sync.Mutex  // guards the fields below
	queue   [][]byte    // frames for the writer, at most sendQueue
	spare   [][]byte    // the writer's last batch, emptied, for reuse
	writing bool        // a writer goroutine runs
	pinger  *time.Timer // the next ping
}

// send queues m for the writer, and starts the writer if none runs. It
// never blocks: a full queue ends the session. The queue is a slice that
// grows as needed, so that an idle session holds no buffer.
func (s *session) send(m *protocol.Message) {
	b, err := protocol.Encode(m)
	if err != nil {
		s.log.Error("encode message", zap.String("type", string(m.Type)), zap.Error(err))
		return
	}
	s.mu.Lock()
	select {
	case <-s.done:
		// Closed (close closes done under mu): no writer starts after
		// the handler waited for the last one.
		s.mu.Unlock()
		return
	default:
	}
	full := len(s.queue) >= sendQueue
	start := false
	if !full {
		s.queue = append(s.queue, b)
		if !s.writing {
			s.writing, start = true, true
			s.writers.Add(1)
		}
	}
	s.mu.Unlock()
	if full {
		s.close(websocket.CloseTryAgainLater, "the agent is not reading fast enough")
		return
	}
	if start {
		go s.writer()
	}
}

// writer writes the queued frames until the queue is empty, then ends. It
// takes every frame queued at the moment, writes them corked and flushes
// once (or every maxBatch bytes): a burst of frames costs one system call,
// not one each.
func (s *session) writer() {
	defer s.writers.Done()
	bc, _ := s.conn.NetConn().(*batchConn)
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue, s.spare = s.spare, nil
		if len(batch) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if err := s.writeBatch(bc, batch); err != nil {
			s.close(websocket.CloseAbnormalClosure, "")
			return // writing stays set: the session is over
		}
		if cap(batch) <= 64 { // keep a small slice for the next batch
			clear(batch)
			s.mu.Lock()
			s.spare = batch[:0]
			s.mu.Unlock()
		}
	}
}

// writeBatch writes frames, corked when bc is not nil.
func (s *session) writeBatch(bc *batchConn, batch [][]byte) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(writeWait))
	for _, b := range batch {
		if bc != nil && bc.buffered() == 0 {
			bc.cork()
		}
		if err := s.conn.WriteMessage(websocket.TextMessage, b); err != nil {
			return err
		}
		if bc != nil && bc.buffered() >= maxBatch {
			if err := bc.flush(); err != nil {
				return err
			}
		}
	}
	if bc != nil {
		return bc.flush()
	}
	return nil
}

// startPings pings the agent every interval until the session ends.
func (s *session) startPings(interval time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pinger = time.AfterFunc(interval, func() {
		if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
			s.close(websocket.CloseAbnormalClosure, "")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-s.done:
		default:
			s.pinger.Reset(interval)
		}
	})
}

// close sends a close frame with code and reason and ends the session.
func (s *session) close(code int, reason string) {
	s.closeOnce.Do(func() {
		_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		s.mu.Lock()
		close(s.done)
		if s.pinger != nil {
			s.pinger.Stop()
		}
		s.mu.Unlock()
		_ = s.conn.Close()
	})
}

// handleConnect serves GET /api/v1/agent/connect: challenge, signed hello,
// welcome, then the session until either side ends it.
func (srv *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	if !srv.enter() {
		writeError(w, http.StatusServiceUnavailable, protocol.Errorf(protocol.CodeUnavailable, "the control plane is shutting down"))
		return
	}
	defer srv.conns.Done()
	conn, err := srv.upgrader.Upgrade(batchWriter(w), r, nil)
	if err != nil {
		return // the upgrader answered with an HTTP error
	}
	log := srv.log.With(zap.String("remote", r.RemoteAddr))
	closeWith := func(code int, reason string) {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		_ = conn.Close()
	}
	if conn.Subprotocol() != protocol.Subprotocol {
		log.Warn("agent refused: incompatible protocol", zap.String("offered", r.Header.Get("Sec-Websocket-Protocol")))
		srv.metrics.refused.WithLabelValues(refusedLabel(protocol.CloseIncompatible)).Inc()
		closeWith(protocol.CloseIncompatible, "this control plane speaks "+protocol.Subprotocol)
		return
	}
	conn.SetReadLimit(protocol.MaxFrameSize)

	hello, agent, code, reason := srv.handshake(conn)
	if code != 0 {
		log.Warn("agent refused", zap.String("agent_id", agentIDOf(hello)), zap.Int("close_code", code), zap.String("reason", reason))
		srv.metrics.refused.WithLabelValues(refusedLabel(code)).Inc()
		closeWith(code, reason)
		return
	}

	now := srv.now()
	sess := &session{
		id:      newID("ses_", now),
		agentID: agent.ID,
		conn:    conn,
		done:    make(chan struct{}),
	}
	sess.log = log.With(zap.String("agent_id", agent.ID), zap.String("session_id", sess.id))
	welcome, err := protocol.Encode(&protocol.Message{Type: protocol.TypeWelcome, Welcome: &protocol.Welcome{
		SessionID: sess.id, HeartbeatInterval: protocol.Duration(srv.heartbeat), ServerTime: now,
	}})
	if err == nil {
		_ = conn.SetWriteDeadline(time.Now().Add(writeWait))
		err = conn.WriteMessage(websocket.TextMessage, welcome)
	}
	if err != nil {
		_ = conn.Close()
		return
	}
	if hello.Probe {
		// agent doctor: the key is accepted; the live session, if any,
		// stays, and nothing is dispatched here.
		sess.log.Info("agent probe authenticated", zap.String("agent", agent.Name), zap.String("hostname", hello.Hostname))
		closeWith(websocket.CloseNormalClosure, "probe done")
		return
	}
	ctx, cancel := srv.storeCtx()
	if err := srv.store.UpdateAgentInfo(ctx, agent.ID, store.AgentInfo{
		AgentVersion: hello.AgentVersion, Hostname: hello.Hostname, OS: hello.OS, Backends: hello.Backends, LastSeen: now,
	}); err != nil {
		sess.log.Error("store agent info", zap.Error(err))
	}
	cancel()

	sess.startPings(srv.heartbeat)
	if !srv.disp.attach(sess, hello) {
		// Close began during the handshake and will not end this session.
		sess.close(protocol.CloseShuttingDown, "the control plane is shutting down")
		return
	}
	sess.log.Info("agent connected", zap.String("agent", agent.Name), zap.String("agent_version", hello.AgentVersion),
		zap.String("hostname", hello.Hostname), zap.Int("concurrency", hello.Concurrency),
		zap.Int("running", len(hello.Running)), zap.Int("held", len(hello.Held)))

	srv.metrics.sessionsOpened.Inc()
	// The session reads in a goroutine of its own and this handler
	// returns, so that the HTTP server's goroutine (whose stack grew in the
	// handshake's store calls) and its buffers are not held for the
	// session's life: a few KiB per idle agent.
	srv.conns.Add(1) // this handler's count keeps the group above zero
	go func() {
		defer srv.conns.Done()
		reason := srv.readLoop(sess)
		srv.metrics.sessionClosed(reason)
		srv.disp.detach(sess)
		sess.close(websocket.CloseNormalClosure, "")
		sess.writers.Wait() // the connection is closed: a write in progress fails within a second
		ctx, cancel := srv.storeCtx()
		if err := srv.store.UpdateAgentInfo(ctx, agent.ID, store.AgentInfo{
			AgentVersion: hello.AgentVersion, Hostname: hello.Hostname, OS: hello.OS, Backends: hello.Backends, LastSeen: srv.now(),
		}); err != nil {
			sess.log.Error("store agent info", zap.Error(err))
		}
		cancel()
		sess.log.Info("agent disconnected", zap.String("reason", reason))
	}()
}

func agentIDOf(h *protocol.Hello) string {
	if h == nil {
		return ""
	}
	return h.AgentID
}

// handshake sends the challenge and checks the hello. A non-zero code means
// the connection is refused with that close code and reason.
func (srv *Server) handshake(conn *websocket.Conn) (*protocol.Hello, store.Agent, int, string) {
	nonce := newNonce()
	b, err := protocol.Encode(&protocol.Message{Type: protocol.TypeChallenge, Challenge: &protocol.Challenge{Nonce: nonce, ServerTime: srv.now()}})
	if err != nil {
		return nil, store.Agent{}, websocket.CloseInternalServerErr, "encode challenge"
	}
	_ = conn.SetWriteDeadline(time.Now().Add(writeWait))
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return nil, store.Agent{}, websocket.CloseAbnormalClosure, "write challenge"
	}
	_ = conn.SetReadDeadline(time.Now().Add(srv.handshakeWait))
	_, frame, err := conn.ReadMessage()
	if err != nil {
		return nil, store.Agent{}, protocol.CloseProtocolError, "no hello within " + srv.handshakeWait.String()
	}
	m, err := protocol.Decode(frame)
	if err != nil {
		return nil, store.Agent{}, protocol.CloseProtocolError, "the hello could not be read: " + truncate(err.Error(), 100)
	}
	if m.Type != protocol.TypeHello {
		return nil, store.Agent{}, protocol.CloseProtocolError, "the first message must be hello, not " + truncate(string(m.Type), 32)
	}
	h := m.Hello
	if h.ProtocolVersion != protocol.Version {
		return h, store.Agent{}, protocol.CloseIncompatible, "this control plane speaks protocol version 1"
	}
	ctx, cancel := srv.storeCtx()
	agent, err := srv.store.GetAgent(ctx, h.AgentID)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		return h, agent, protocol.CloseAuthFailed, "unknown agent id; enroll the agent again"
	case err != nil:
		return h, agent, websocket.CloseTryAgainLater, "the store did not answer"
	case agent.RevokedAt != nil:
		return h, agent, protocol.CloseRevoked, "this agent was revoked"
	case len(agent.PublicKey) != ed25519.PublicKeySize:
		return h, agent, protocol.CloseAuthFailed, "this agent has not enrolled"
	}
	sig, _ := base64.RawURLEncoding.DecodeString(h.Signature) // Decode checked its form
	if !ed25519.Verify(agent.PublicKey, protocol.SigningPayload(h.AgentID, nonce, h.ProtocolVersion), sig) {
		return h, agent, protocol.CloseAuthFailed, "the signature does not match the enrolled key; enroll the agent again"
	}
	return h, agent, 0, ""
}

// readLoop reads the agent's messages until the session ends, and says why.
func (srv *Server) readLoop(sess *session) string {
	timeout := 3 * srv.heartbeat
	conn := sess.conn
	extend := func() { _ = conn.SetReadDeadline(time.Now().Add(timeout)) }
	extend()
	conn.SetPongHandler(func(string) error { extend(); return nil })
	for {
		_, frame, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			var ne interface{ Timeout() bool }
			switch {
			case errors.As(err, &ce):
				return "agent closed: " + closeText(ce)
			case errors.Is(err, websocket.ErrReadLimit):
				return "frame over the size limit"
			case errors.As(err, &ne) && ne.Timeout():
				return "no heartbeat for " + timeout.String()
			default:
				select {
				case <-sess.done:
					return "closed by the control plane"
				default:
					return "connection lost: " + err.Error()
				}
			}
		}
		extend()
		m, err := protocol.Decode(frame)
		if err != nil {
			var de *protocol.DecodeError
			if errors.As(err, &de) {
				sess.log.Warn("bad message from agent", zap.String("error_code", string(de.Code)), zap.Error(err))
				sess.send(de.Reply())
			}
			continue
		}
		srv.disp.touch(sess)
		switch m.Type {
		case protocol.TypeHeartbeat:
		case protocol.TypeAccepted:
			srv.disp.accepted(sess, m.Accepted)
		case protocol.TypeRejected:
			srv.disp.rejected(sess, m.Rejected)
		case protocol.TypeResult:
			if srv.disp.result(sess, m.Result) {
				sess.send(&protocol.Message{Type: protocol.TypeResultAck, ResultAck: &protocol.ResultAck{JobID: m.Result.JobID}})
			}
		case protocol.TypeDraining:
			sess.log.Info("agent draining", zap.Duration("grace", m.Draining.Grace.D()), zap.String("reason", m.Draining.Reason))
			srv.disp.setDraining(sess)
		case protocol.TypeError:
			sess.log.Warn("agent reported an error", zap.String("error_code", string(m.Error.Code)),
				zap.String("message", m.Error.Message), zap.String("ref_type", string(m.Error.RefType)))
		default:
			sess.send(&protocol.Message{Type: protocol.TypeError, Error: &protocol.ErrorBody{
				Error:   *protocol.Errorf(protocol.CodeUnknownType, "an agent does not send %s messages", m.Type),
				RefID:   m.ID,
				RefType: m.Type,
			}})
		}
	}
}

func closeText(ce *websocket.CloseError) string {
	if ce.Text != "" {
		return ce.Text
	}
	switch ce.Code {
	case websocket.CloseNormalClosure:
		return "normal closure"
	case websocket.CloseGoingAway:
		return "going away"
	}
	return "code " + strconv.Itoa(ce.Code)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
