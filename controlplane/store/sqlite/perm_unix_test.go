//go:build unix

package sqlite

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// modes maps each entry of dir to its permission bits.
func modes(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]fs.FileMode{}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = fi.Mode().Perm()
	}
	return m
}

// TestPermissions runs with umask 0, so that nothing but the store's own
// care keeps its files private. It changes the process's umask and so does
// not run in parallel with other tests.
func TestPermissions(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	ctx := testCtx(t)

	checkDir := func(t *testing.T, dir string, wantFiles ...string) {
		t.Helper()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("directory mode = %o, want 700", got)
		}
		m := modes(t, dir)
		for _, name := range wantFiles {
			if _, ok := m[name]; !ok {
				t.Errorf("no %s in the directory (have %v)", name, m)
			}
		}
		for name, mode := range m {
			if mode != 0o600 {
				t.Errorf("%s mode = %o, want 600", name, mode)
			}
		}
	}
	// write makes SQLite create its -wal and -shm files.
	write := func(t *testing.T, s *Store) {
		t.Helper()
		j := newJob("j1", "a1", base)
		mustCreateJob(t, s, j)
		j.State = protocol.JobRunning
		j.AcceptedAt = ptr(base.Add(time.Second))
		if ok, err := s.UpdateJob(ctx, j, protocol.JobQueued); err != nil || !ok {
			t.Fatalf("UpdateJob = %v, %v", ok, err)
		}
		if _, err := s.GetJob(ctx, "j1"); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string
	}{
		{"new nested directory", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "a", "b")
		}},
		{"existing open directory", func(t *testing.T) string {
			dir := filepath.Join(t.TempDir(), "open")
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"directory without owner write", func(t *testing.T) string {
			dir := filepath.Join(t.TempDir(), "ro")
			if err := os.Mkdir(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"existing readable database files", func(t *testing.T) string {
			dir := t.TempDir()
			for _, name := range []string{FileName, FileName + "-wal", FileName + "-shm"} {
				if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			return dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t)
			s, err := Open(ctx, dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			write(t, s)
			checkDir(t, dir, FileName, FileName+"-wal", FileName+"-shm")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			checkDir(t, dir, FileName)
		})
	}
}
