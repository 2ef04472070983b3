package backoff_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/backoff"
)

// fixed returns a Rand that always returns r.
func fixed(r float64) func() float64 { return func() float64 { return r } }

// justBelowOne is the largest float64 below 1.
var justBelowOne = math.Nextafter(1, 0)

func TestDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    backoff.Options
	}{
		{name: "zero", o: backoff.Options{}},
		{name: "negative", o: backoff.Options{Base: -1, Max: -time.Second, StableAfter: -time.Minute, Rejoin: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := backoff.New(tt.o)
			for attempt, want := range map[int]time.Duration{0: backoff.DefaultBase, 1: 2 * time.Second, 5: 32 * time.Second, 6: backoff.DefaultMax, 100: backoff.DefaultMax} {
				if got := b.Ceiling(attempt); got != want {
					t.Errorf("Ceiling(%d) = %v, want %v", attempt, got, want)
				}
			}
			for range 3 {
				b.Next()
			}
			b.Connected(backoff.DefaultStableAfter - time.Nanosecond)
			if got := b.Attempt(); got != 3 {
				t.Errorf("after a session just short of the default StableAfter, Attempt() = %d, want 3", got)
			}
			b.Connected(backoff.DefaultStableAfter)
			if got := b.Attempt(); got != 0 {
				t.Errorf("after a session of the default StableAfter, Attempt() = %d, want 0", got)
			}
			// The default Rand draws within [0, Base) for the first attempt.
			for range 100 {
				b.Reset()
				if d := b.Next(); d < 0 || d >= backoff.DefaultBase {
					t.Fatalf("first Next() = %v with the default Rand, want within [0, %v)", d, backoff.DefaultBase)
				}
			}
		})
	}
}

func TestNextSequence(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name string
		o    backoff.Options
		want []time.Duration
	}{
		{
			name: "half: growth then cap",
			o:    backoff.Options{Rand: fixed(0.5)},
			want: []time.Duration{s / 2, s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s, 30 * s},
		},
		{
			name: "zero: always at once",
			o:    backoff.Options{Rand: fixed(0)},
			want: []time.Duration{0, 0, 0, 0, 0, 0, 0, 0},
		},
		{
			name: "just below one: just below each ceiling",
			o:    backoff.Options{Rand: fixed(justBelowOne)},
			want: []time.Duration{s - 1, 2*s - 1, 4*s - 1, 8*s - 1, 16*s - 1, 32*s - 1, 60*s - 1, 60*s - 1},
		},
		{
			name: "custom base and max",
			o:    backoff.Options{Base: 100 * time.Millisecond, Max: time.Second, Rand: fixed(0.5)},
			want: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond},
		},
		{
			name: "max not a power of two times base",
			o:    backoff.Options{Base: 3 * s, Max: 10 * s, Rand: fixed(0.5)},
			want: []time.Duration{1500 * time.Millisecond, 3 * s, 5 * s, 5 * s},
		},
		{
			name: "base above max: always within max",
			o:    backoff.Options{Base: time.Minute, Max: 10 * s, Rand: fixed(0.5)},
			want: []time.Duration{5 * s, 5 * s, 5 * s},
		},
		{
			name: "rand returning one is clamped below the ceiling",
			o:    backoff.Options{Rand: fixed(1)},
			want: []time.Duration{s - 1, 2*s - 1},
		},
		{
			name: "rand out of range above",
			o:    backoff.Options{Rand: fixed(7)},
			want: []time.Duration{s - 1, 2*s - 1},
		},
		{
			name: "rand one at the largest max",
			o:    backoff.Options{Base: math.MaxInt64, Max: math.MaxInt64, Rand: fixed(1)},
			want: []time.Duration{math.MaxInt64 - 1, math.MaxInt64 - 1},
		},
		{
			name: "rand infinite",
			o:    backoff.Options{Rand: fixed(math.Inf(1))},
			want: []time.Duration{s - 1, 2*s - 1},
		},
		{
			name: "rand negative",
			o:    backoff.Options{Rand: fixed(-0.5)},
			want: []time.Duration{0, 0},
		},
		{
			name: "rand NaN",
			o:    backoff.Options{Rand: fixed(math.NaN())},
			want: []time.Duration{0, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := backoff.New(tt.o)
			for i, want := range tt.want {
				if got := b.Next(); got != want {
					t.Errorf("Next() #%d = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestFullJitter(t *testing.T) {
	t.Parallel()
	// At attempt 3 the ceiling is 8s; the delay is r * 8s for every r.
	tests := []struct {
		name string
		r    float64
		want time.Duration
	}{
		{name: "zero", r: 0, want: 0},
		{name: "tenth", r: 0.1, want: 800 * time.Millisecond},
		{name: "quarter", r: 0.25, want: 2 * time.Second},
		{name: "three quarters", r: 0.75, want: 6 * time.Second},
		{name: "just below one", r: justBelowOne, want: 8*time.Second - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := 0.0
			b := backoff.New(backoff.Options{Rand: func() float64 { return r }})
			for range 3 {
				b.Next()
			}
			r = tt.r
			if got := b.Next(); got != tt.want {
				t.Errorf("Next() at attempt 3 with rand %v = %v, want %v", tt.r, got, tt.want)
			}
		})
	}
}

func TestNoOverflow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    backoff.Options
	}{
		{name: "nanosecond base, largest max", o: backoff.Options{Base: 1, Max: math.MaxInt64, Rand: fixed(justBelowOne)}},
		{name: "defaults", o: backoff.Options{Rand: fixed(justBelowOne)}},
		{name: "odd base", o: backoff.Options{Base: 7, Max: math.MaxInt64 - 1, Rand: fixed(justBelowOne)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := backoff.New(tt.o)
			maxDelay := b.Ceiling(math.MaxInt)
			if maxDelay <= 0 {
				t.Fatalf("Ceiling(MaxInt) = %v, want positive", maxDelay)
			}
			prev := time.Duration(-1)
			for i := range 10_000 {
				d := b.Next()
				if d < 0 || d >= maxDelay {
					t.Fatalf("Next() #%d = %v, want within [0, %v)", i, d, maxDelay)
				}
				if d < prev {
					t.Fatalf("Next() #%d = %v, below the previous %v with a constant rand", i, d, prev)
				}
				prev = d
			}
			if got := b.Attempt(); got > 64 {
				t.Errorf("Attempt() = %d after 10,000 draws; want it to stop once at the cap", got)
			}
			if got := b.Ceiling(-5); got != b.Ceiling(0) {
				t.Errorf("Ceiling(-5) = %v, want Ceiling(0) = %v", got, b.Ceiling(0))
			}
		})
	}
}

func TestConnected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		stableAfter  time.Duration
		connectedFor time.Duration
		wantNext     time.Duration // with rand 0.5 after 5 attempts
	}{
		{name: "dropped at once: keeps growing", connectedFor: 0, wantNext: 30 * time.Second},
		{name: "short session: keeps growing", connectedFor: 29 * time.Second, wantNext: 30 * time.Second},
		{name: "exactly stable: reset", connectedFor: 30 * time.Second, wantNext: 500 * time.Millisecond},
		{name: "long session: reset", connectedFor: 72 * time.Hour, wantNext: 500 * time.Millisecond},
		{name: "custom stable period, short", stableAfter: time.Minute, connectedFor: 59 * time.Second, wantNext: 30 * time.Second},
		{name: "custom stable period, long", stableAfter: time.Minute, connectedFor: time.Minute, wantNext: 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := backoff.New(backoff.Options{StableAfter: tt.stableAfter, Rand: fixed(0.5)})
			for range 6 {
				b.Next()
			}
			b.Connected(tt.connectedFor)
			if got := b.Next(); got != tt.wantNext {
				t.Errorf("Next() after a session of %v = %v, want %v", tt.connectedFor, got, tt.wantNext)
			}
		})
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	b := backoff.New(backoff.Options{Rand: fixed(0.5), Rejoin: time.Minute})
	for range 10 {
		b.Next()
	}
	b.Connected(time.Hour) // rejoining: delays spread over a minute
	b.Reset()
	if got := b.Attempt(); got != 0 {
		t.Errorf("Attempt() after Reset = %d, want 0", got)
	}
	if got := b.Next(); got != 500*time.Millisecond {
		t.Errorf("Next() after Reset = %v, want 500ms (no rejoin spread)", got)
	}
}

func TestRejoin(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name   string
		o      backoff.Options
		events func(b *backoff.Backoff)
		want   []time.Duration
	}{
		{
			name:   "fresh start ignores rejoin",
			o:      backoff.Options{Rejoin: time.Minute},
			events: func(*backoff.Backoff) {},
			want:   []time.Duration{s / 2, s, 2 * s},
		},
		{
			name:   "after a stable session every delay is spread over rejoin",
			o:      backoff.Options{Rejoin: 20 * s},
			events: func(b *backoff.Backoff) { b.Connected(time.Hour) },
			want:   []time.Duration{10 * s, 10 * s, 10 * s, 10 * s, 10 * s, 16 * s, 30 * s},
		},
		{
			name:   "rejoin above max is capped",
			o:      backoff.Options{Rejoin: time.Hour},
			events: func(b *backoff.Backoff) { b.Connected(time.Hour) },
			want:   []time.Duration{30 * s, 30 * s},
		},
		{
			name:   "a short session keeps the spread",
			o:      backoff.Options{Rejoin: 20 * s},
			events: func(b *backoff.Backoff) { b.Connected(time.Hour); b.Next(); b.Connected(s) },
			want:   []time.Duration{10 * s, 10 * s},
		},
		{
			name:   "zero rejoin: plain backoff from base",
			o:      backoff.Options{},
			events: func(b *backoff.Backoff) { b.Connected(time.Hour) },
			want:   []time.Duration{s / 2, s},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.o.Rand = fixed(0.5)
			b := backoff.New(tt.o)
			tt.events(b)
			for i, want := range tt.want {
				if got := b.Next(); got != want {
					t.Errorf("Next() #%d = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestWaitUsesSleep(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var slept []time.Duration
	errSleep := errors.New("sleep failed")
	fail := false
	b := backoff.New(backoff.Options{
		Rand: fixed(0.5),
		Sleep: func(c context.Context, d time.Duration) error {
			if c != ctx {
				t.Errorf("Sleep got a different context")
			}
			slept = append(slept, d)
			if fail {
				return errSleep
			}
			return nil
		},
	})
	for range 3 {
		if err := b.Wait(ctx); err != nil {
			t.Fatalf("Wait() = %v, want nil", err)
		}
	}
	fail = true
	if err := b.Wait(ctx); !errors.Is(err, errSleep) {
		t.Errorf("Wait() = %v, want the Sleep's error", err)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	if len(slept) != len(want) {
		t.Fatalf("slept %v, want %v", slept, want)
	}
	for i := range want {
		if slept[i] != want[i] {
			t.Errorf("sleep #%d = %v, want %v", i, slept[i], want[i])
		}
	}
}

func TestWaitCanceled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		cancel  time.Duration // cancel this long after Wait starts; <0: before
		wantErr error
	}{
		{name: "canceled before", ctx: func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, cancel: -1, wantErr: context.Canceled},
		{name: "canceled during", ctx: func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, cancel: 20 * time.Millisecond, wantErr: context.Canceled},
		{name: "deadline during", ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, cancel: time.Hour, wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := tt.ctx()
			defer cancel()
			// A delay of half an hour: only the context can end the wait.
			b := backoff.New(backoff.Options{Base: time.Hour, Max: time.Hour, Rand: fixed(0.5)})
			if tt.cancel < 0 {
				cancel()
			} else {
				stop := time.AfterFunc(tt.cancel, cancel)
				defer stop.Stop()
			}
			start := time.Now()
			err := b.Wait(ctx)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Wait() = %v, want %v", err, tt.wantErr)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Wait() took %v after the context ended, want prompt", took)
			}
		})
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		d       time.Duration
		wantErr error
		atLeast time.Duration
	}{
		{name: "zero", ctx: context.Background(), d: 0},
		{name: "negative", ctx: context.Background(), d: -time.Second},
		{name: "short", ctx: context.Background(), d: 20 * time.Millisecond, atLeast: 20 * time.Millisecond},
		{name: "canceled zero", ctx: canceled, d: 0, wantErr: context.Canceled},
		{name: "canceled long", ctx: canceled, d: time.Hour, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			err := backoff.Sleep(tt.ctx, tt.d)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Sleep(%v) = %v, want %v", tt.d, err, tt.wantErr)
			}
			if took := time.Since(start); took < tt.atLeast || took > tt.atLeast+5*time.Second {
				t.Errorf("Sleep(%v) took %v, want about %v", tt.d, took, tt.atLeast)
			}
		})
	}
}

// TestJitterSpreadsUniformly draws with the real Rand at the cap and checks
// that the delays cover [0, Max) evenly: this is what keeps a thousand
// agents from coming back in the same second.
func TestJitterSpreadsUniformly(t *testing.T) {
	t.Parallel()
	const draws, buckets = 10_000, 10
	b := backoff.New(backoff.Options{})
	maxDelay := b.Ceiling(math.MaxInt)
	for b.Ceiling(b.Attempt()) < maxDelay {
		b.Next()
	}
	var counts [buckets]int
	for range draws {
		d := b.Next()
		if d < 0 || d >= maxDelay {
			t.Fatalf("Next() = %v at the cap, want within [0, %v)", d, maxDelay)
		}
		counts[int(d*buckets/maxDelay)]++
	}
	for i, c := range counts {
		if c < draws*5/100 || c > draws*15/100 {
			t.Errorf("bucket %d ([%v, %v)) got %d of %d draws, want 5%%-15%%; all: %v",
				i, maxDelay*time.Duration(i)/buckets, maxDelay*time.Duration(i+1)/buckets, c, draws, counts)
		}
	}
}

// TestFleetAfterRestart simulates a thousand agents that lose stable
// sessions at once while the control plane is down for a while, and counts
// how many come back in each second once it is up. With Rejoin = Max the
// peak second stays under 3x the mean over the cap (the design's target);
// without it, a quick restart brings them all back in the first second.
// The agents' Rands are seeded, so the test is deterministic.
func TestFleetAfterRestart(t *testing.T) {
	t.Parallel()
	const agents = 1000
	tests := []struct {
		name     string
		rejoin   time.Duration
		down     time.Duration
		wantPeak func(peak, limit int) bool
		want     string
	}{
		{name: "rejoin, instant restart", rejoin: backoff.DefaultMax, down: 0, wantPeak: func(p, l int) bool { return p < l }, want: "under 3x the mean"},
		{name: "rejoin, down 5s", rejoin: backoff.DefaultMax, down: 5 * time.Second, wantPeak: func(p, l int) bool { return p < l }, want: "under 3x the mean"},
		{name: "rejoin, down 20s", rejoin: backoff.DefaultMax, down: 20 * time.Second, wantPeak: func(p, l int) bool { return p < l }, want: "under 3x the mean"},
		{name: "rejoin, down 5min", rejoin: backoff.DefaultMax, down: 5 * time.Minute, wantPeak: func(p, l int) bool { return p < l }, want: "under 3x the mean"},
		{name: "no rejoin, instant restart spikes", rejoin: 0, down: 0, wantPeak: func(p, _ int) bool { return p == agents }, want: "all in one second"},
	}
	for ti, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			maxDelay := backoff.DefaultMax
			perSecond := map[int]int{}
			for i := range agents {
				rng := rand.New(rand.NewPCG(uint64(ti), uint64(i)))
				b := backoff.New(backoff.Options{Rand: rng.Float64, Rejoin: tt.rejoin})
				b.Connected(time.Hour) // every session was stable
				// Attempts until the first one at or after the restart,
				// which succeeds.
				at := b.Next()
				for at < tt.down {
					at += b.Next()
				}
				if at-tt.down > maxDelay {
					t.Fatalf("agent %d is back %v after the restart, later than the cap %v", i, at-tt.down, maxDelay)
				}
				perSecond[int((at-tt.down)/time.Second)]++
			}
			peak := 0
			for _, n := range perSecond {
				peak = max(peak, n)
			}
			t.Logf("peak second: %d agents (limit %d)", peak, 3*agents/int(maxDelay/time.Second))
			limit := 3 * agents / int(maxDelay/time.Second)
			if !tt.wantPeak(peak, limit) {
				t.Errorf("peak second has %d of %d agents, want %s (3x the mean is %d)", peak, agents, tt.want, limit)
			}
		})
	}
}
