//go:build linux

package main

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex // guards the fields below
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) summary() dist {
	l.mu.Lock()
	defer l.mu.Unlock()
	return summarize(l.d)
}

// dist is a latency distribution.
type dist struct {
	N    int
	P50  time.Duration
	P99  time.Duration
	P999 time.Duration
	Max  time.Duration
}

func summarize(d []time.Duration) dist {
	if len(d) == 0 {
		return dist{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return dist{N: len(s), P50: q(0.50), P99: q(0.99), P999: q(0.999), Max: s[len(s)-1]}
}

func (d dist) String() string {
	return fmt.Sprintf("p50 %s  p99 %s  p999 %s  max %s  (n=%d)", ms(d.P50), ms(d.P99), ms(d.P999), ms(d.Max), d.N)
}

// ms prints a duration in milliseconds with three decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond)) }

// median returns the median of xs (the lower middle for an even count).
func median[T int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)/2]
}

// ratio is a/b, or 0 when b is 0.
func ratio[T int64 | float64 | time.Duration](a, b T) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
