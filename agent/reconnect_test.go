package agent

import (
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/backoff"
)

// TestReconnectDefaults: the agent spreads its reconnects after a stable
// session over the whole backoff cap unless told otherwise.
func TestReconnectDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   backoff.Options
		want time.Duration
	}{
		{"zero value: the default cap", backoff.Options{}, backoff.DefaultMax},
		{"a cap of its own", backoff.Options{Max: 10 * time.Second}, 10 * time.Second},
		{"a spread of its own", backoff.Options{Rejoin: 5 * time.Second}, 5 * time.Second},
		{"turned off", backoff.Options{Rejoin: -1}, -1},
	} {
		if got := reconnectOptions(tc.in).Rejoin; got != tc.want {
			t.Errorf("%s: Rejoin = %s, want %s", tc.name, got, tc.want)
		}
	}
}
