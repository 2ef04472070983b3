package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/protocol"
)

func TestPragmas(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)

	type pragmas struct {
		journalMode string
		synchronous int
		busyTimeout int
		foreignKeys int
		queryOnly   int
	}
	read := func(q func(string) *sql.Row) (p pragmas, err error) {
		for _, f := range []struct {
			name string
			dst  any
		}{
			{"journal_mode", &p.journalMode},
			{"synchronous", &p.synchronous},
			{"busy_timeout", &p.busyTimeout},
			{"foreign_keys", &p.foreignKeys},
			{"query_only", &p.queryOnly},
		} {
			if err := q("PRAGMA " + f.name).Scan(f.dst); err != nil {
				return p, fmt.Errorf("%s: %w", f.name, err)
			}
		}
		return p, nil
	}

	// The writer's connection, through the writer itself.
	var w pragmas
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		w, err = read(func(q string) *sql.Row { return tx.QueryRow(q) })
		return err
	})
	if err != nil {
		t.Fatalf("read the writer's pragmas: %v", err)
	}
	want := pragmas{journalMode: "wal", synchronous: 2, busyTimeout: 5000, foreignKeys: 1, queryOnly: 0}
	if w != want {
		t.Errorf("writer pragmas = %+v, want %+v", w, want)
	}

	// Several read connections at once, so that more than one is opened.
	var conns []*sql.Conn
	for range 3 {
		c, err := s.rdb.Conn(ctx)
		if err != nil {
			t.Fatalf("read conn: %v", err)
		}
		conns = append(conns, c)
	}
	want.queryOnly = 1
	for i, c := range conns {
		r, err := read(func(q string) *sql.Row { return c.QueryRowContext(ctx, q) })
		if err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
		if r != want {
			t.Errorf("reader %d pragmas = %+v, want %+v", i, r, want)
		}
		if _, err := c.ExecContext(ctx, "DELETE FROM jobs"); err == nil {
			t.Errorf("reader %d could write", i)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

func TestBusyTimeoutOption(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := testCtx(t)
	s, err := Open(ctx, dir, Options{BusyTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var bt int
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&bt); err != nil {
		t.Fatal(err)
	}
	if bt != 50 {
		t.Errorf("busy_timeout = %d, want 50", bt)
	}

	// Another process (here: another connection) holds the write lock.
	other, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	err = s.CreateJob(ctx, newJob("j1", "a1", base))
	waited := time.Since(start)
	if err == nil {
		t.Fatal("CreateJob succeeded while another connection held the write lock")
	}
	// The write transaction is IMMEDIATE: it fails at BEGIN, before any
	// statement, after waiting the busy timeout.
	if !strings.Contains(err.Error(), "begin:") || !strings.Contains(err.Error(), "SQLITE_BUSY") {
		t.Errorf("error %q is not a busy failure at begin", err)
	}
	if waited < 40*time.Millisecond || waited > 10*time.Second {
		t.Errorf("waited %v for the lock, want about 50ms", waited)
	}

	if _, err := c.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJob(ctx, newJob("j1", "a1", base)); err != nil {
		t.Fatalf("CreateJob after the lock was released: %v", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := testCtx(t)
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := newAgent("a1", "alpha")
	if err := s.CreateAgent(ctx, a, newToken("a1", "tok")); err != nil {
		t.Fatal(err)
	}
	j := newJob("j1", "a1", base)
	if err := s.CreateJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	j.State = protocol.JobSucceeded
	j.Attempt = 1
	j.FinishedAt = ptr(base.Add(time.Second))
	j.Output = &protocol.Output{Credentials: &protocol.CredentialsOutput{Backend: "aws", KeysFound: []string{"password"}, Fingerprint: "ab12"}}
	if ok, err := s.UpdateJob(ctx, j, protocol.JobQueued); err != nil || !ok {
		t.Fatalf("UpdateJob = %v, %v", ok, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		s, err := Open(ctx, dir, Options{})
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		gotA, err := s.GetAgent(ctx, "a1")
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		assertEqual(t, "agent after reopen", gotA, a)
		gotJ, err := s.GetJob(ctx, "j1")
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		assertEqual(t, "job after reopen", gotJ, j)
		// The token survived too: it can be spent once, and the
		// enrollment survives the next reopen.
		if _, err := s.Enroll(ctx, tokenHash("tok"), []byte("key"), base.Add(time.Minute)); i == 0 && err != nil {
			t.Errorf("reopen %d: enroll: %v", i, err)
		} else if i == 0 {
			a.PublicKey, a.EnrolledAt = []byte("key"), ptr(base.Add(time.Minute))
		} else if i == 1 && !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("reopen %d: enroll with a spent token: %v, want ErrTokenInvalid", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCrashRecovery writes from a child process that exits without closing
// the store: what returned nil must be there on the next open.
func TestCrashRecovery(t *testing.T) {
	if dir := os.Getenv("SQLITE_STORE_CRASH_DIR"); dir != "" {
		crashChild(dir)
		return
	}
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.CommandContext(testCtx(t), os.Args[0], "-test.run=^TestCrashRecovery$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SQLITE_STORE_CRASH_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "wrote 50 jobs") {
		t.Fatalf("child did not write: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+"-wal")); err != nil {
		t.Errorf("the child left no WAL to recover (%v): the test proves less", err)
	}
	s, err := Open(testCtx(t), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	jobs, err := s.ListJobs(testCtx(t), store.JobFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 50 {
		t.Errorf("found %d jobs after the crash, want 50", len(jobs))
	}
}

// crashChild writes 50 jobs and exits at once, without Close.
func crashChild(dir string) {
	ctx := context.Background()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	for i := range 50 {
		if err := s.CreateJob(ctx, newJob(fmt.Sprintf("j%02d", i), "a1", base.Add(time.Duration(i)))); err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
	}
	fmt.Println("wrote 50 jobs")
	os.Exit(0)
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	rawOpen := func(t *testing.T, dir string) *sql.DB {
		t.Helper()
		db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), time.Second, false))
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		return db
	}
	tables := func(t *testing.T, db *sql.DB) string {
		t.Helper()
		rows, err := db.QueryContext(ctx, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		return strings.Join(names, ",")
	}

	t.Run("open applies the schema once", func(t *testing.T) {
		dir := t.TempDir()
		for i := range 3 {
			s, err := Open(ctx, dir, Options{})
			if err != nil {
				t.Fatalf("open %d: %v", i, err)
			}
			if i == 0 {
				mustCreateAgent(t, s, newAgent("a1", "alpha"), "tok")
			}
			if _, err := s.GetAgent(ctx, "a1"); err != nil {
				t.Errorf("open %d: %v", i, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		db := rawOpen(t, dir)
		v, err := schemaVersion(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if v != len(migrations) {
			t.Errorf("user_version = %d, want %d", v, len(migrations))
		}
		if got, want := tables(t, db), "agents,connections,enrollment_tokens,jobs"; got != want {
			t.Errorf("tables = %s, want %s", got, want)
		}
	})

	t.Run("steps apply in order and once", func(t *testing.T) {
		db := rawOpen(t, t.TempDir())
		steps := []string{
			"CREATE TABLE one (x INTEGER)",
			"CREATE TABLE two (x INTEGER); INSERT INTO one VALUES (2)",
		}
		if err := migrate(ctx, db, steps[:1]); err != nil {
			t.Fatal(err)
		}
		if v, _ := schemaVersion(ctx, db); v != 1 {
			t.Errorf("version after step 1 = %d", v)
		}
		for range 2 { // the second run has nothing to do
			if err := migrate(ctx, db, steps); err != nil {
				t.Fatal(err)
			}
		}
		if v, _ := schemaVersion(ctx, db); v != 2 {
			t.Errorf("version after step 2 = %d", v)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM one").Scan(&n); err != nil || n != 1 {
			t.Errorf("step 2 ran %d times (%v), want once", n, err)
		}
	})

	t.Run("a failed step leaves nothing behind", func(t *testing.T) {
		db := rawOpen(t, t.TempDir())
		steps := []string{
			"CREATE TABLE one (x INTEGER)",
			"CREATE TABLE two (x INTEGER); INSERT INTO nowhere VALUES (1)",
		}
		err := migrate(ctx, db, steps)
		if err == nil || !strings.Contains(err.Error(), "migrate to schema version 2") {
			t.Fatalf("migrate = %v, want a failure at version 2", err)
		}
		if v, _ := schemaVersion(ctx, db); v != 1 {
			t.Errorf("version = %d, want 1", v)
		}
		if got := tables(t, db); got != "one" {
			t.Errorf("tables = %s, want one (step 2 rolled back)", got)
		}
	})

	t.Run("a newer schema is refused", func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(ctx, dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		db := rawOpen(t, dir)
		newer := len(migrations) + 1
		if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", newer)); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s, err = Open(ctx, dir, Options{})
		if err == nil {
			s.Close()
			t.Fatal("Open accepted a newer schema")
		}
		want := fmt.Sprintf("store schema version %d is newer than this control plane (%d); upgrade the control plane", newer, len(migrations))
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error = %q, want it to say %q", err, want)
		}
	})

	t.Run("a newer schema is refused with no step to apply", func(t *testing.T) {
		db := rawOpen(t, t.TempDir())
		if _, err := db.ExecContext(ctx, "PRAGMA user_version = 3"); err != nil {
			t.Fatal(err)
		}
		if err := migrate(ctx, db, nil); err == nil || !strings.Contains(err.Error(), "version 3 is newer") {
			t.Errorf("migrate = %v, want the newer-version error", err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dbIsDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dbIsDir, FileName), 0o700); err != nil {
		t.Fatal(err)
	}
	notDB := t.TempDir()
	if err := os.WriteFile(filepath.Join(notDB, FileName), []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()

	for _, tc := range []struct {
		name string
		ctx  context.Context
		dir  string
		want string
	}{
		{"no directory", ctx, "", "no directory given"},
		{"directory is a file", ctx, file, "not a directory"},
		{"database is a directory", ctx, dbIsDir, "is a directory"},
		{"database is not SQLite", ctx, notDB, "not a database"},
		{"context canceled", canceled, t.TempDir(), "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.ctx, tc.dir, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestPingAndClose(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, err := Open(ctx, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping after Close succeeded")
	}
	if err := s.CreateJob(ctx, newJob("j1", "a1", base)); !errors.Is(err, errClosed) {
		t.Errorf("CreateJob after Close = %v, want errClosed", err)
	}
	if _, err := s.GetJob(ctx, "j1"); err == nil {
		t.Error("GetJob after Close succeeded")
	}
}

func TestDSNEscapesPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ path, want string }{
		{"/var/lib/cp/" + FileName, "file:/var/lib/cp/" + FileName + "?"},
		{"/odd?dir#1%/" + FileName, "file:/odd%3fdir%231%25/" + FileName + "?"},
	} {
		if got := dsn(tc.path, time.Second, false); !strings.HasPrefix(got, tc.want) {
			t.Errorf("dsn(%q) = %q, want prefix %q", tc.path, got, tc.want)
		}
	}
	// And SQLite reads it back as that path.
	dir := filepath.Join(t.TempDir(), "odd?dir#1%")
	s, err := Open(testCtx(t), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCreateJob(t, s, newJob("j1", "a1", base))
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Errorf("the database is not in the odd directory: %v", err)
	}
}

func TestTimesRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := openTest(t)
	ctx := testCtx(t)
	for i, tc := range []struct {
		name string
		t    time.Time
		ok   bool
	}{
		{"nanoseconds outside UTC", base, true},
		{"now, with a monotonic reading", time.Now(), true},
		{"the Unix epoch", time.Unix(0, 0), true},
		{"before 1970", time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC), true},
		{"earliest", minTime, true},
		{"latest", maxTime, true},
		{"zero", time.Time{}, false},
		{"too early", minTime.Add(-1), false},
		{"too late", maxTime.Add(1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := newJob(fmt.Sprintf("j%d", i), "a1", tc.t)
			j.Deadline = tc.t
			err := s.CreateJob(ctx, j)
			if !tc.ok {
				if err == nil {
					t.Fatal("CreateJob accepted the time")
				}
				if !strings.Contains(err.Error(), "deadline") {
					t.Errorf("error %q does not name the field", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.GetJob(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.CreatedAt.Equal(tc.t) || !got.Deadline.Equal(tc.t) {
				t.Errorf("read back %v, %v; want %v", got.CreatedAt, got.Deadline, tc.t)
			}
			if got.CreatedAt.Location() != time.UTC {
				t.Errorf("read back in %v, want UTC", got.CreatedAt.Location())
			}
			var raw int64
			if err := s.rdb.QueryRowContext(ctx, "SELECT created_at FROM jobs WHERE id = ?", j.ID).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if raw != tc.t.UnixNano() {
				t.Errorf("stored %d, want Unix nanoseconds %d", raw, tc.t.UnixNano())
			}
		})
	}
}
