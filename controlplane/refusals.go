package controlplane

import (
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// refusalLogEvery is how often, at most, the refused admin tokens of one
// remote address are logged.
const refusalLogEvery = time.Minute

// maxRefusalAddrs bounds the addresses tracked; past it the quiet ones are
// forgotten, and if none is, the rest share one entry.
const maxRefusalAddrs = 4096

// refusals counts the requests refused for a wrong admin token (the API's
// Bearer token, the console's sign-in), per remote address, and decides
// when to log them: the first refusal from an address at once, then at most
// one line a minute with the count since the last line. A flood of wrong
// tokens leaves a trace an operator can see without filling the log (or
// its disk). It refuses nothing itself: a right token is always accepted,
// so that one client behind a shared address (a load balancer, a NAT)
// cannot lock the administrators out.
type refusals struct {
	mu     sync.Mutex // guards byAddr
	byAddr map[string]*refusalCount
}

type refusalCount struct {
	unlogged int       // refusals since the last line
	logged   time.Time // when the last line was written
}

func newRefusals() *refusals { return &refusals{byAddr: make(map[string]*refusalCount)} }

// note counts a refusal from addr at now. It returns the number of refusals
// to log now (including this one), or 0 to stay quiet.
func (r *refusals) note(addr string, now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.byAddr[addr]
	if c == nil {
		if len(r.byAddr) >= maxRefusalAddrs {
			for a, other := range r.byAddr {
				if now.Sub(other.logged) >= refusalLogEvery && other.unlogged == 0 {
					delete(r.byAddr, a)
				}
			}
		}
		if len(r.byAddr) >= maxRefusalAddrs {
			addr = "other addresses"
			c = r.byAddr[addr]
		}
		if c == nil {
			c = &refusalCount{}
			r.byAddr[addr] = c
		}
	}
	c.unlogged++
	if !c.logged.IsZero() && now.Sub(c.logged) < refusalLogEvery {
		return 0
	}
	n := c.unlogged
	c.unlogged, c.logged = 0, now
	return n
}

// refusedToken records that r carried a wrong admin token, and logs it as
// note says.
func (s *Server) refusedToken(r *http.Request, where string) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if n := s.refused.note(host, s.now()); n > 0 {
		s.log.Warn("admin token refused", zap.String("remote", host), zap.String("where", where),
			zap.Int("refusals", n), zap.Duration("quiet_for", refusalLogEvery))
	}
}
