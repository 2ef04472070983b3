// Package backoff paces the agent's reconnect attempts: capped exponential
// backoff with full jitter, reset only after a connection has stayed up for
// a while.
//
// Full jitter (a delay drawn uniformly from [0, ceiling)) rather than a
// jittered fixed delay is what spreads a fleet out: when the control plane
// restarts, a thousand agents lose their sessions in the same second, and
// their next attempts must not land in the same second again. Resetting only
// after a stable period keeps an agent that connects and is dropped at once
// (a control plane that accepts and then fails, a proxy that cuts idle
// connections) from retrying at the base delay forever.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults for the zero fields of [Options].
const (
	DefaultBase        = 1 * time.Second
	DefaultMax         = 60 * time.Second
	DefaultStableAfter = 30 * time.Second
)

// Options configure a [Backoff]. A zero or negative field means its default.
type Options struct {
	// Base is the ceiling of the first delay; each attempt doubles it.
	// Default [DefaultBase].
	Base time.Duration
	// Max caps the ceiling. Default [DefaultMax]. When Base is above Max,
	// every delay is drawn from [0, Max).
	Max time.Duration
	// StableAfter is how long a connection must have lasted for
	// [Backoff.Connected] to reset the attempt count. Default
	// [DefaultStableAfter].
	StableAfter time.Duration
	// Rand returns a number in [0, 1). Default: math/rand/v2's Float64,
	// seeded randomly per process, so that agents do not share a sequence.
	Rand func() float64
	// Sleep waits for d or until ctx ends, returning ctx.Err() then.
	// Default [Sleep].
	Sleep func(ctx context.Context, d time.Duration) error
	// Rejoin, when set, spreads the fleet after a stable session ends
	// (a control-plane restart drops every agent at once): until the next
	// stable session, every delay is drawn from at least [0, min(Rejoin,
	// Max)). Zero (the default) keeps plain exponential backoff from Base,
	// so the first reconnect after a stable session comes within Base. Set
	// it to Max to meet the design's "peak second under 3x the mean" after a
	// restart, at the price of a mean Max/2 before a lone agent whose network
	// blipped is back.
	Rejoin time.Duration
}

// Backoff computes reconnect delays. Build it with [New].
//
// A Backoff is meant for the one goroutine that runs a reconnect loop; it is
// not safe for concurrent use.
type Backoff struct {
	base, max, stableAfter, rejoin time.Duration
	rand                           func() float64
	sleep                          func(context.Context, time.Duration) error

	// attempt counts the delays handed out since the last reset. It stops
	// growing once the ceiling has reached max.
	attempt int
	// rejoining is set when a stable session ended and cleared by Reset:
	// the delays in between are drawn from at least [0, rejoin).
	rejoining bool
}

// New returns a Backoff with o's settings, defaults filled in.
func New(o Options) *Backoff {
	b := &Backoff{
		base:        o.Base,
		max:         o.Max,
		stableAfter: o.StableAfter,
		rand:        o.Rand,
		sleep:       o.Sleep,
		rejoin:      max(o.Rejoin, 0),
	}
	if b.base <= 0 {
		b.base = DefaultBase
	}
	if b.max <= 0 {
		b.max = DefaultMax
	}
	if b.stableAfter <= 0 {
		b.stableAfter = DefaultStableAfter
	}
	if b.rand == nil {
		b.rand = rand.Float64
	}
	if b.sleep == nil {
		b.sleep = Sleep
	}
	b.rejoin = min(b.rejoin, b.max)
	return b
}

// Ceiling returns the upper bound of the delay for the given attempt (0 for
// the first): min(Max, Base * 2^attempt), without overflow for any attempt.
func (b *Backoff) Ceiling(attempt int) time.Duration {
	if b.base >= b.max {
		return b.max
	}
	d := b.base
	for range max(attempt, 0) {
		if d > b.max/2 {
			return b.max
		}
		d *= 2
	}
	return d
}

// Next returns the delay before the next attempt, drawn uniformly from
// [0, Ceiling(attempt)) (or from [0, Rejoin) if that is wider and a stable
// session ended), and counts the attempt.
func (b *Backoff) Next() time.Duration {
	ceiling := b.Ceiling(b.attempt)
	if ceiling < b.max {
		// Once at the cap the count stops, so it cannot overflow however
		// long the control plane stays away.
		b.attempt++
	}
	if b.rejoining {
		ceiling = max(ceiling, b.rejoin)
	}
	r := b.rand()
	if r <= 0 || r != r { // negative or NaN from a bad Rand
		return 0
	}
	// Compare as floats first: converting a float at or above 2^63 to a
	// Duration would overflow.
	f := r * float64(ceiling)
	if f >= float64(ceiling) { // a bad Rand returned 1 or more
		return ceiling - 1
	}
	return min(time.Duration(f), ceiling-1)
}

// Wait sleeps for [Backoff.Next] through Options.Sleep. It returns
// ctx.Err() as soon as ctx ends.
func (b *Backoff) Wait(ctx context.Context) error {
	return b.sleep(ctx, b.Next())
}

// Connected records that a session ended after lasting connectedFor. If that
// was at least StableAfter, the attempt count starts again from zero (and,
// with Options.Rejoin, the delays until the next stable session are spread
// over Rejoin); otherwise the next delay keeps growing, so a connection that
// drops as soon as it is up does not bring the agent back at the base delay.
func (b *Backoff) Connected(connectedFor time.Duration) {
	if connectedFor >= b.stableAfter {
		b.attempt = 0
		b.rejoining = b.rejoin > 0
	}
}

// Reset starts again as if new: the attempt count from zero and no Rejoin
// spread.
func (b *Backoff) Reset() {
	b.attempt = 0
	b.rejoining = false
}

// Attempt returns how many delays were handed out since the last reset,
// stopping at the first attempt whose ceiling is Max. For logs.
func (b *Backoff) Attempt() int { return b.attempt }

// Sleep waits for d or until ctx ends, whichever comes first, and returns
// ctx.Err() if ctx ended (or had already ended) before d passed. It stops its
// timer on return.
func Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
