package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// Session is a signed-in console session.
type Session struct {
	// CSRF is the token the page sends with every state-changing request.
	CSRF      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// CheckCSRF compares a request's CSRF token with the session's, in
// constant time.
func (s Session) CheckCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

// SessionOptions configure Sessions. Zero values mean the defaults.
type SessionOptions struct {
	// TTL is how long a session lasts from sign-in. Default 12h.
	TTL time.Duration
	// Max bounds the sessions kept; the one closest to its end goes first.
	// Default 1000.
	Max int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Sessions keeps the console's sessions in memory: a restart of the control
// plane signs everyone out. Session ids are 32 random bytes; they are kept
// only as SHA-256 hashes, so that the map's keys are not the cookies.
type Sessions struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex // guards m
	m  map[[sha256.Size]byte]Session
}

// NewSessions returns an empty session store.
func NewSessions(o SessionOptions) *Sessions {
	s := &Sessions{ttl: o.TTL, max: o.Max, now: o.Now, m: map[[sha256.Size]byte]Session{}}
	if s.ttl <= 0 {
		s.ttl = 12 * time.Hour
	}
	if s.max <= 0 {
		s.max = 1000
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// TTL is how long a new session lasts.
func (s *Sessions) TTL() time.Duration { return s.ttl }

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Create starts a session and returns its id (the cookie's value) and the
// session.
func (s *Sessions) Create() (string, Session) {
	id := randomToken()
	now := s.now()
	sess := Session{CSRF: randomToken(), CreatedAt: now, ExpiresAt: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		s.pruneLocked(now)
	}
	for len(s.m) >= s.max {
		var oldest [sha256.Size]byte
		first := true
		for k, v := range s.m {
			if first || v.ExpiresAt.Before(s.m[oldest].ExpiresAt) {
				oldest, first = k, false
			}
		}
		delete(s.m, oldest)
	}
	s.m[sha256.Sum256([]byte(id))] = sess
	return id, sess
}

// pruneLocked forgets the sessions that have ended.
func (s *Sessions) pruneLocked(now time.Time) {
	for k, v := range s.m {
		if !now.Before(v.ExpiresAt) {
			delete(s.m, k)
		}
	}
}

// Get returns the live session of id.
func (s *Sessions) Get(id string) (Session, bool) {
	if id == "" {
		return Session{}, false
	}
	key := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[key]
	if !ok {
		return Session{}, false
	}
	if !s.now().Before(sess.ExpiresAt) {
		delete(s.m, key)
		return Session{}, false
	}
	return sess, true
}

// Delete ends the session of id (sign out).
func (s *Sessions) Delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(id)))
}

// Len counts the sessions kept, ended or not.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
