package secrets

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/protocol"
)

// DefaultCacheEntries bounds the values a [Cache] keeps by default.
const DefaultCacheEntries = 1024

// CacheOptions configure a [Cache]. The zero value keeps no values and only
// shares fetches.
type CacheOptions struct {
	// TTL is how long a resolved value is reused; 0 keeps none.
	TTL time.Duration
	// MaxEntries bounds the values kept; default DefaultCacheEntries.
	MaxEntries int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives a debug line for each value served from the cache;
	// default: none.
	Logger *zap.Logger
}

// Cache wraps a Backend so that concurrent Resolves of one reference make
// one call to the secret manager (a burst of jobs for one connection), and,
// with a TTL, so that a resolved value is reused for a short while. Values
// live in memory only, never on disk; errors are never kept (the callers
// that waited for the failed fetch get the error, the next caller fetches
// again). The key is the whole reference.
//
// A fetch runs on its own context, which keeps the values but not the
// deadline or cancellation of the caller that started it: a caller whose
// context ends stops waiting and gets its context's error, while the
// others keep waiting for the same fetch. When the last waiting caller has
// left, the fetch is canceled. Each caller's deadline thus bounds its own
// wait, and no fetch outlives every caller.
//
// Cache is safe for concurrent use.
type Cache struct {
	b   Backend
	ttl time.Duration
	max int
	now func() time.Time
	log *zap.Logger

	mu     sync.Mutex // guards the fields below
	values map[protocol.SecretRef]cached
	calls  map[protocol.SecretRef]*call
}

// cached is a resolved value and when it expires.
type cached struct {
	c       Credentials
	expires time.Time
}

// call is one fetch in flight and the callers waiting for it.
type call struct {
	done    chan struct{} // closed when c and err are set
	c       Credentials
	err     error
	waiters int                // guarded by Cache.mu
	cancel  context.CancelFunc // cancels the fetch
}

var _ Backend = (*Cache)(nil)

// NewCache wraps b.
func NewCache(b Backend, o CacheOptions) *Cache {
	c := &Cache{
		b: b, ttl: max(o.TTL, 0), max: o.MaxEntries, now: o.Now, log: o.Logger,
		values: map[protocol.SecretRef]cached{}, calls: map[protocol.SecretRef]*call{},
	}
	if c.max <= 0 {
		c.max = DefaultCacheEntries
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	return c
}

// Backend returns the wrapped backend.
func (c *Cache) Backend() Backend { return c.b }

// Name returns the wrapped backend's name.
func (c *Cache) Name() string { return c.b.Name() }

// Info returns the wrapped backend's settings, with cache_ttl when values
// are kept.
func (c *Cache) Info() protocol.BackendInfo {
	info := c.b.Info()
	if c.ttl > 0 {
		info.Settings = maps.Clone(info.Settings)
		if info.Settings == nil {
			info.Settings = map[string]string{}
		}
		info.Settings["cache_ttl"] = c.ttl.String()
	}
	return info
}

// Resolve returns a kept value of ref, or joins the fetch of ref in
// flight, or starts one.
func (c *Cache) Resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, error) {
	if err := ctx.Err(); err != nil {
		return Credentials{}, err
	}
	c.mu.Lock()
	if v, ok := c.values[ref]; ok {
		if c.now().Before(v.expires) {
			c.mu.Unlock()
			if ce := c.log.Check(zapcore.DebugLevel, "secret served from the cache"); ce != nil {
				ce.Write(zap.String("backend", ref.Backend), zap.Stringer("secret_ref", ref))
			}
			return v.c.clone(), nil
		}
		delete(c.values, ref)
	}
	cl := c.calls[ref]
	if cl == nil {
		fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cl = &call{done: make(chan struct{}), cancel: cancel}
		c.calls[ref] = cl
		go c.fetch(fetchCtx, ref, cl)
	}
	cl.waiters++
	c.mu.Unlock()

	select {
	case <-cl.done:
		if cl.err != nil {
			return Credentials{}, cl.err
		}
		return cl.c.clone(), nil
	case <-ctx.Done():
		c.mu.Lock()
		cl.waiters--
		if cl.waiters == 0 && c.calls[ref] == cl {
			// Nobody waits any more: stop the fetch, and let the next
			// caller start a new one rather than join this one.
			delete(c.calls, ref)
			cl.cancel()
		}
		c.mu.Unlock()
		return Credentials{}, ctx.Err()
	}
}

// fetch resolves ref for the callers waiting on cl, and keeps the value.
func (c *Cache) fetch(ctx context.Context, ref protocol.SecretRef, cl *call) {
	defer cl.cancel()
	func() {
		defer func() {
			if r := recover(); r != nil {
				c.log.Error("secret backend panicked", zap.String("backend", ref.Backend), zap.Stringer("secret_ref", ref),
					zap.String("panic", fmt.Sprintf("%T", r)))
				cl.c, cl.err = Credentials{}, protocol.Errorf(protocol.CodeInternal,
					"the %s secret backend failed inside the agent; see the agent's log", ref.Backend)
			}
		}()
		cl.c, cl.err = c.b.Resolve(ctx, ref)
	}()
	c.mu.Lock()
	if c.calls[ref] == cl {
		delete(c.calls, ref)
	}
	if cl.err == nil && c.ttl > 0 {
		c.keepLocked(ref, cl.c)
	}
	c.mu.Unlock()
	close(cl.done)
}

// keepLocked keeps a resolved value until the TTL, making room if needed.
func (c *Cache) keepLocked(ref protocol.SecretRef, v Credentials) {
	now := c.now()
	if len(c.values) >= c.max {
		for k, e := range c.values {
			if !now.Before(e.expires) {
				delete(c.values, k)
			}
		}
	}
	for k := range c.values {
		if len(c.values) < c.max {
			break
		}
		delete(c.values, k)
	}
	c.values[ref] = cached{c: v.clone(), expires: now.Add(c.ttl)}
}

// clone copies the Credentials' slice and pointer, so that no two callers
// share them. The values are immutable and need no copy.
func (c Credentials) clone() Credentials {
	c.KeysFound = slices.Clone(c.KeysFound)
	if c.VersionCreated != nil {
		t := *c.VersionCreated
		c.VersionCreated = &t
	}
	return c
}
