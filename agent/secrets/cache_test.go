package secrets_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

// The cache tests put a Cache in front of the real AWS backend and its
// fake, and count the calls the fake gets.

// gatedAWS is a fake AWS whose GetSecretValue answers wait until release.
type gatedAWS struct {
	*secretstest.AWS
	gate    chan struct{}
	once    sync.Once
	arrived chan struct{} // one send per call that reached the gate
}

func newGatedAWS(t *testing.T) *gatedAWS {
	g := &gatedAWS{AWS: secretstest.NewAWS(t), gate: make(chan struct{}), arrived: make(chan struct{}, 100)}
	g.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue})
	g.Fail(func(int, secretstest.AWSRequest) *secretstest.AWSError {
		g.arrived <- struct{}{}
		<-g.gate
		return nil
	})
	t.Cleanup(g.release) // before the fake closes: no handler stays blocked
	return g
}

func (g *gatedAWS) release() { g.once.Do(func() { close(g.gate) }) }

// waitArrived waits for a call to reach the fake.
func (g *gatedAWS) waitArrived(t *testing.T) {
	t.Helper()
	select {
	case <-g.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no call reached the fake")
	}
}

func TestCacheBurstMakesOneCall(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{0, time.Minute} {
		t.Run("ttl "+ttl.String(), func(t *testing.T) {
			t.Parallel()
			fake := newGatedAWS(t)
			log, _ := debugLogger(t)
			c := secrets.NewCache(newAWSBackend(t, fake.AWS, log, nil), secrets.CacheOptions{TTL: ttl, Logger: log})
			ref := awsRef("ci/github", "username", "token")
			const n = 20
			var started, done sync.WaitGroup
			var ok atomic.Int32
			started.Add(n)
			done.Add(n)
			for range n {
				go func() {
					defer done.Done()
					started.Done()
					cr, err := c.Resolve(testContext(t), ref)
					if err == nil && cr.Password.Reveal() == canary {
						ok.Add(1)
					}
				}()
			}
			started.Wait()
			fake.waitArrived(t)
			time.Sleep(100 * time.Millisecond) // the others join the fetch in flight
			fake.release()
			done.Wait()
			if ok.Load() != n {
				t.Errorf("%d of %d callers got the value", ok.Load(), n)
			}
			if got := fake.Calls(); got != 1 {
				t.Errorf("the fake got %d calls for a burst of %d, want 1", got, n)
			}
		})
	}
}

func TestCacheTTL(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue, VersionID: "v1"})
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	log, logs := debugLogger(t)
	c := secrets.NewCache(newAWSBackend(t, fake, log, nil), secrets.CacheOptions{TTL: 30 * time.Second, Now: clock, Logger: log})
	ref := awsRef("ci/github", "username", "token")
	resolve := func() secrets.Credentials {
		t.Helper()
		cr, err := c.Resolve(testContext(t), ref)
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		return cr
	}
	first := resolve()
	first.KeysFound[0] = "changed by a caller"
	advance(29 * time.Second)
	second := resolve()
	if fake.Calls() != 1 {
		t.Errorf("the fake got %d calls within the TTL, want 1", fake.Calls())
	}
	if second.Password.Reveal() != canary || second.VersionID != "v1" || second.KeysFound[0] != "username" {
		t.Errorf("the kept value differs: %+v (a caller's change must not reach the others)", second)
	}
	if len(logs.lines(t, "secret served from the cache")) != 1 {
		t.Errorf("want one debug line for the value served from the cache:\n%s", logs.String())
	}

	// Rotated and expired: the next Resolve fetches again.
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: `{"username": "bot", "token": "rotated"}`, VersionID: "v2"})
	advance(2 * time.Second)
	third := resolve()
	if fake.Calls() != 2 || third.VersionID != "v2" {
		t.Errorf("after the TTL: %d calls and version %s, want 2 calls and v2", fake.Calls(), third.VersionID)
	}
	// A different reference is another key.
	other := ref
	other.VersionStage = "AWSPREVIOUS"
	if cr, err := c.Resolve(testContext(t), other); err != nil || cr.VersionID != "v1" {
		t.Errorf("AWSPREVIOUS = %v, %v; want v1", cr.VersionID, err)
	}
	if fake.Calls() != 3 {
		t.Errorf("the fake got %d calls, want 3", fake.Calls())
	}
	if got := c.Info().Settings["cache_ttl"]; got != "30s" {
		t.Errorf("Info cache_ttl = %q, want 30s", got)
	}
	if c.Name() != "aws" {
		t.Errorf("Name() = %q", c.Name())
	}
}

func TestCacheErrorsAreNotKept(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue})
	fake.Fail(func(call int, _ secretstest.AWSRequest) *secretstest.AWSError {
		if call == 1 {
			return &secretstest.AWSError{Status: 400, Type: "AccessDeniedException", Message: "denied"}
		}
		return nil
	})
	c := secrets.NewCache(newAWSBackend(t, fake, nil, nil), secrets.CacheOptions{TTL: time.Minute})
	ref := awsRef("ci/github", "", "token")
	_, err := c.Resolve(testContext(t), ref)
	checkError(t, err, protocol.CodeSecretAccessDenied)
	cr, err := c.Resolve(testContext(t), ref)
	if err != nil || cr.Password.Reveal() != canary {
		t.Fatalf("Resolve after an error = %v; want the value (errors are not kept)", err)
	}
	if fake.Calls() != 2 {
		t.Errorf("the fake got %d calls, want 2", fake.Calls())
	}
}

// TestCacheCanceledWaiter cancels the caller that started the fetch: it
// returns at once with its context's error, and the other caller still
// gets the value from the same single call.
func TestCacheCanceledWaiter(t *testing.T) {
	t.Parallel()
	fake := newGatedAWS(t)
	c := secrets.NewCache(newAWSBackend(t, fake.AWS, nil, nil), secrets.CacheOptions{})
	ref := awsRef("ci/github", "", "token")

	ctxA, cancelA := context.WithCancel(testContext(t))
	errA := make(chan error, 1)
	go func() { _, err := c.Resolve(ctxA, ref); errA <- err }()
	fake.waitArrived(t)

	type result struct {
		c   secrets.Credentials
		err error
	}
	resB := make(chan result, 1)
	go func() { cr, err := c.Resolve(testContext(t), ref); resB <- result{cr, err} }()
	time.Sleep(50 * time.Millisecond) // B joins the fetch in flight

	cancelA()
	select {
	case err := <-errA:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the canceled caller got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the canceled caller did not return")
	}
	select {
	case r := <-resB:
		t.Fatalf("the other caller returned before the fetch ended: %v", r.err)
	case <-time.After(50 * time.Millisecond):
	}
	fake.release()
	r := <-resB
	if r.err != nil || r.c.Password.Reveal() != canary {
		t.Errorf("the other caller got %v, want the value", r.err)
	}
	if fake.Calls() != 1 {
		t.Errorf("the fake got %d calls, want 1", fake.Calls())
	}
}

// TestCacheAllWaitersGone cancels the only caller: the fetch is canceled
// (its request ends at the fake), and the next caller starts a new one.
func TestCacheAllWaitersGone(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue})
	ended := make(chan struct{}, 1)
	fake.Delay(time.Minute) // the first call hangs until its client gives up
	b := newAWSBackend(t, fake, nil, nil)
	c := secrets.NewCache(endNotifier{b, ended}, secrets.CacheOptions{TTL: time.Minute})
	ref := awsRef("ci/github", "", "token")

	ctx, cancel := context.WithTimeout(testContext(t), 200*time.Millisecond)
	defer cancel()
	_, err := c.Resolve(ctx, ref)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resolve = %v, want context.DeadlineExceeded", err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the fetch was not canceled after its only caller left")
	}
	fake.Delay(0)
	cr, err := c.Resolve(testContext(t), ref)
	if err != nil || cr.Password.Reveal() != canary {
		t.Fatalf("the next Resolve = %v, want the value from a new fetch", err)
	}
	if fake.Calls() != 2 {
		t.Errorf("the fake got %d calls, want 2", fake.Calls())
	}
}

// endNotifier says when its backend's Resolve returned.
type endNotifier struct {
	secrets.Backend
	ended chan struct{}
}

func (e endNotifier) Resolve(ctx context.Context, ref protocol.SecretRef) (secrets.Credentials, error) {
	c, err := e.Backend.Resolve(ctx, ref)
	select {
	case e.ended <- struct{}{}:
	default:
	}
	return c, err
}

// TestCacheSharedError: the callers waiting for one fetch share its error,
// from one call.
func TestCacheSharedError(t *testing.T) {
	t.Parallel()
	fake := newGatedAWS(t)
	fake.Fail(func(int, secretstest.AWSRequest) *secretstest.AWSError {
		fake.arrived <- struct{}{}
		<-fake.gate
		return &secretstest.AWSError{Status: 400, Type: "ResourceNotFoundException", Message: "no"}
	})
	c := secrets.NewCache(newAWSBackend(t, fake.AWS, nil, nil), secrets.CacheOptions{TTL: time.Minute})
	ref := awsRef("ci/github", "", "token")
	errs := make(chan error, 5)
	for range 5 {
		go func() { _, err := c.Resolve(testContext(t), ref); errs <- err }()
	}
	fake.waitArrived(t)
	time.Sleep(100 * time.Millisecond)
	fake.release()
	for range 5 {
		checkError(t, <-errs, protocol.CodeSecretNotFound)
	}
	if fake.Calls() != 1 {
		t.Errorf("the fake got %d calls, want 1", fake.Calls())
	}
}

// panicky panics on Resolve.
type panicky struct{ fakeBackend }

func (p *panicky) Resolve(context.Context, protocol.SecretRef) (secrets.Credentials, error) {
	panic("boom")
}

func TestCacheBackendPanic(t *testing.T) {
	t.Parallel()
	c := secrets.NewCache(&panicky{fakeBackend{name: "aws"}}, secrets.CacheOptions{})
	_, err := c.Resolve(testContext(t), awsRef("ci/github", "", "token"))
	checkError(t, err, protocol.CodeInternal, "the aws secret backend failed inside the agent")
}

func TestCacheBounded(t *testing.T) {
	t.Parallel()
	fb := &fakeBackend{name: "aws"}
	c := secrets.NewCache(fb, secrets.CacheOptions{TTL: time.Hour, MaxEntries: 3})
	for _, name := range []string{"a", "b", "c", "d", "a", "b", "c", "d"} {
		if _, err := c.Resolve(testContext(t), awsRef(name, "", "token")); err != nil {
			t.Fatal(err)
		}
	}
	// At most 3 kept: of the 8 Resolves of 4 names, at least 5 reach the
	// backend.
	if n := fb.calls(); n < 5 {
		t.Errorf("the backend got %d calls, want at least 5 with room for 3 values", n)
	}
	if _, ok := c.Info().Settings["region"]; !ok {
		t.Errorf("Info() = %+v, want the backend's settings", c.Info())
	}
}
