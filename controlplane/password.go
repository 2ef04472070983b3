package controlplane

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

// Connection passwords: a protected connection keeps only the bcrypt hash
// of its password, and every call that reads, changes, tests or deletes it
// must carry the password in protocol.PasswordHeader. Failed attempts are
// limited per connection. The password is never logged or returned.

// Password bounds: bcrypt reads at most 72 bytes.
const (
	minPassword = 8
	maxPassword = 72
)

// Failed attempts allowed per connection in a window; then every attempt
// is refused (too_many_attempts) until the oldest failure leaves the window.
const (
	maxPasswordFailures = 5
	passwordWindow      = time.Minute
)

// checkPassword says what is wrong with a new password, in words that
// never repeat it.
func checkPassword(p string) error {
	switch {
	case len(p) < minPassword:
		return fmt.Errorf("password is too short: at least %d characters", minPassword)
	case len(p) > maxPassword:
		return fmt.Errorf("password is too long: at most %d bytes (bcrypt reads no more)", maxPassword)
	case !utf8.ValidString(p):
		return fmt.Errorf("password is not valid UTF-8")
	case strings.ContainsFunc(p, unicode.IsControl):
		return fmt.Errorf("password holds a control character, which an HTTP header cannot carry")
	case strings.TrimSpace(p) != p:
		return fmt.Errorf("password starts or ends with a space, which an HTTP header cannot carry")
	}
	return nil
}

// hashPassword hashes a checked password.
func (s *Server) hashPassword(p string) ([]byte, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(p), s.passwordCost)
	if err != nil {
		return nil, fmt.Errorf("hash the password: %w", err)
	}
	return h, nil
}

// unlock checks the password of a protected connection and answers the
// request when it is missing or wrong. It reports whether the caller may go
// on. An unprotected connection is always unlocked.
func (s *Server) unlock(w http.ResponseWriter, r *http.Request, c store.Connection) bool {
	if c.PasswordHash == nil {
		return true
	}
	now := s.now()
	if wait := s.attempts.blocked(c.ID, now); wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, protocol.Errorf(protocol.CodeTooManyAttempts,
			"too many wrong passwords for connection %q; try again in %d seconds", c.Name, secs))
		return false
	}
	given := r.Header.Get(protocol.PasswordHeader)
	if given == "" {
		writeError(w, http.StatusForbidden, protocol.Errorf(protocol.CodePasswordRequired,
			"connection %q is protected by a password: give it in the %s header", c.Name, protocol.PasswordHeader))
		return false
	}
	if err := bcrypt.CompareHashAndPassword(c.PasswordHash, []byte(given)); err != nil {
		left := s.attempts.fail(c.ID, now)
		s.log.Warn("connection password refused", zap.String("connection_id", c.ID), zap.String("connection", c.Name),
			zap.String("remote", r.RemoteAddr), zap.Int("attempts_left", left))
		writeError(w, http.StatusForbidden, protocol.Errorf(protocol.CodePasswordInvalid,
			"the password of connection %q is wrong (%s header); %d more attempts before a pause", c.Name, protocol.PasswordHeader, left))
		return false
	}
	s.attempts.reset(c.ID)
	return true
}

// attemptLimiter counts failed password attempts per connection.
type attemptLimiter struct {
	max    int
	window time.Duration

	mu    sync.Mutex // guards fails
	fails map[string][]time.Time
}

func newAttemptLimiter(max int, window time.Duration) *attemptLimiter {
	return &attemptLimiter{max: max, window: window, fails: make(map[string][]time.Time)}
}

// recentLocked drops the failures of id older than the window and returns
// the rest.
func (l *attemptLimiter) recentLocked(id string, now time.Time) []time.Time {
	f := l.fails[id]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= l.window {
		i++
	}
	f = f[i:]
	if len(f) == 0 {
		delete(l.fails, id)
	} else {
		l.fails[id] = f
	}
	return f
}

// blocked returns how long id stays blocked, 0 if it is not.
func (l *attemptLimiter) blocked(id string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.recentLocked(id, now)
	if len(f) < l.max {
		return 0
	}
	return max(f[len(f)-l.max].Add(l.window).Sub(now), time.Second)
}

// fail records a failed attempt and returns how many remain before the
// pause.
func (l *attemptLimiter) fail(id string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fails) > 4096 {
		// Forget the connections whose failures are all old.
		for other := range l.fails {
			l.recentLocked(other, now)
		}
	}
	f := append(l.recentLocked(id, now), now)
	l.fails[id] = f
	return max(l.max-len(f), 0)
}

// reset forgets the failures of id (after a right password, or when the
// connection is deleted).
func (l *attemptLimiter) reset(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, id)
}
