package secrets

import (
	"context"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// Observed returns a Set of the same backends, each of which reports every
// Resolve to fn: the backend's name, how it ended ("ok" or the error
// code: the same words as the debug line of each call) and how long it
// took. For metrics. A nil Set stays nil.
func (s *Set) Observed(fn func(backend, code string, d time.Duration)) *Set {
	if s == nil || fn == nil {
		return s
	}
	bs := make([]Backend, 0, len(s.names))
	for _, n := range s.names {
		bs = append(bs, &observed{Backend: s.byName[n], fn: fn})
	}
	return NewSet(bs...)
}

// observed is a Backend that reports each Resolve.
type observed struct {
	Backend
	fn func(backend, code string, d time.Duration)
}

var _ Backend = (*observed)(nil)

func (o *observed) Resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, error) {
	start := time.Now()
	c, err := o.Backend.Resolve(ctx, ref)
	o.fn(o.Backend.Name(), outcome(err), time.Since(start))
	return c, err
}
