package controlplane

import (
	"fmt"
	"testing"
	"time"
)

func TestRefusalsLogOncePerMinute(t *testing.T) {
	t.Parallel()
	r := newRefusals()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	steps := []struct {
		addr string
		at   time.Duration
		want int
	}{
		{"10.0.0.1", 0, 1},                  // the first refusal is logged at once
		{"10.0.0.1", time.Second, 0},        // then quiet
		{"10.0.0.1", 30 * time.Second, 0},   //
		{"10.0.0.2", 31 * time.Second, 1},   // another address has its own count
		{"10.0.0.1", time.Minute, 3},        // a minute on: the count since the last line
		{"10.0.0.1", 61 * time.Second, 0},   //
		{"10.0.0.1", 2 * time.Minute, 2},    //
		{"10.0.0.2", 2 * time.Minute, 1},    //
		{"10.0.0.1", 10 * time.Minute, 1},   //
		{"10.0.0.1", 10*time.Minute + 1, 0}, //
	}
	for i, s := range steps {
		if got := r.note(s.addr, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d (%s at %s): note = %d, want %d", i, s.addr, s.at, got, s.want)
		}
	}
}

func TestRefusalsBounded(t *testing.T) {
	t.Parallel()
	r := newRefusals()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 3 * maxRefusalAddrs {
		r.note(fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), t0)
	}
	if n := len(r.byAddr); n > maxRefusalAddrs+1 {
		t.Fatalf("%d addresses tracked, want at most %d", n, maxRefusalAddrs+1)
	}
	// Once quiet for a minute, the old ones make room.
	if got := r.note("192.0.2.1", t0.Add(2*time.Minute)); got != 1 {
		t.Fatalf("a new address after the others went quiet: note = %d, want 1", got)
	}
	if _, ok := r.byAddr["192.0.2.1"]; !ok {
		t.Fatal("the new address was not tracked on its own")
	}
}
