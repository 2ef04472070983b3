package web

import (
	"sync"
	"testing"
	"time"
)

// clock is a clock that a test moves.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestSessions(t *testing.T) {
	t.Parallel()
	k := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s := NewSessions(SessionOptions{TTL: time.Hour, Now: k.Now})

	id, sess := s.Create()
	if len(id) != 43 || len(sess.CSRF) != 43 || id == sess.CSRF {
		t.Fatalf("id %q, csrf %q: want two different 32-byte random tokens", id, sess.CSRF)
	}
	if !sess.ExpiresAt.Equal(k.Now().Add(time.Hour)) {
		t.Errorf("expires %s, want in an hour", sess.ExpiresAt)
	}
	if got, ok := s.Get(id); !ok || got.CSRF != sess.CSRF {
		t.Fatalf("Get: %+v %v", got, ok)
	}
	for _, bad := range []string{"", id + "x", sess.CSRF} {
		if _, ok := s.Get(bad); ok {
			t.Errorf("Get(%q) found a session", bad)
		}
	}
	if !sess.CheckCSRF(sess.CSRF) || sess.CheckCSRF("") || sess.CheckCSRF(sess.CSRF[1:]) || sess.CheckCSRF(id) {
		t.Error("CheckCSRF accepts only the session's token")
	}

	// Sign out ends it; expiry ends the others.
	other, _ := s.Create()
	s.Delete(id)
	if _, ok := s.Get(id); ok {
		t.Error("a deleted session is still there")
	}
	k.advance(time.Hour - time.Second)
	if _, ok := s.Get(other); !ok {
		t.Error("a session ended before its expiry")
	}
	k.advance(time.Second)
	if _, ok := s.Get(other); ok {
		t.Error("a session outlived its expiry")
	}
	if s.Len() != 0 {
		t.Errorf("%d sessions kept after they ended", s.Len())
	}
}

func TestSessionsBounded(t *testing.T) {
	t.Parallel()
	k := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s := NewSessions(SessionOptions{TTL: time.Hour, Max: 3, Now: k.Now})
	first, _ := s.Create()
	var ids []string
	for range 3 {
		k.advance(time.Minute)
		id, _ := s.Create()
		ids = append(ids, id)
	}
	if s.Len() != 3 {
		t.Errorf("%d sessions kept, want at most 3", s.Len())
	}
	if _, ok := s.Get(first); ok {
		t.Error("the oldest session was not the one dropped")
	}
	for _, id := range ids {
		if _, ok := s.Get(id); !ok {
			t.Error("a newer session was dropped")
		}
	}
}
