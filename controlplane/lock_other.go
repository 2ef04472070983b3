//go:build !unix

package controlplane

// lockDataDir does nothing where flock is not available: run one control
// plane per data directory there.
func lockDataDir(string) (func(), error) { return func() {}, nil }
