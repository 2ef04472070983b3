// Package sqlite is the embedded store engine: store.Store on one SQLite
// database file, through the pure-Go driver modernc.org/sqlite (no cgo).
//
// # Files and permissions
//
// The database is FileName in the directory given to Open. Open creates the
// directory with mode 0700 and, if it already exists with any other mode
// (group or other bits set, or owner bits missing), changes it to 0700. It
// creates the database file with mode 0600 before SQLite opens it, and
// narrows an existing one (and its -wal, -shm and -journal files) to 0600:
// SQLite's unix VFS gives the journal files it creates the database file's
// mode, so every file of the store stays 0600.
//
// # Durability
//
// Every connection runs with journal_mode=WAL, synchronous=FULL,
// foreign_keys=ON and a busy timeout: a method that returns nil has its
// change fsynced to the write-ahead log. Open refuses to go on if the WAL
// mode or the synchronous level did not take.
//
// # Connections and group commit
//
// There are two connection pools on the one file. Writes go through a
// single connection that only one goroutine, the writer, uses: SQLite allows
// one writer at a time anyway, and queueing writers in Go avoids SQLite's
// busy-wait, which sleeps in steps of milliseconds when two connections of
// one process contend for the write lock. Write transactions begin
// IMMEDIATE, so they hold the write lock from the start and never fail to
// upgrade a read lock. Reads go through a pool of query-only connections
// that WAL lets run alongside the writer and each other.
//
// A checkpointer goroutine, on a connection of its own, copies the
// write-ahead log into the database file shortly after commits (PASSIVE,
// alongside the writer), so that no commit waits for a checkpoint; see
// checkpoint.go.
//
// The writer commits in groups: the writes that arrive while a commit is
// being synced are run together in the next transaction, each inside its
// own savepoint, and made durable by one fsync. A write that fails rolls
// back to its savepoint and does not disturb the others of its group; a
// failed commit fails every write of the group. A caller learns the outcome
// of its own write only: nil means committed and durable. A write whose
// context ends before the writer takes it up is not run and returns the
// context's error; once taken up, it runs to its end and its caller waits
// for the outcome (at most the busy timeout plus the group's work), so that
// an error never hides a write that happened.
//
// # Schema
//
// The schema version is SQLite's user_version. Open applies the missing
// migration steps in order, each in its own transaction, and refuses a
// database whose version is newer than this code knows.
//
// Times are stored as INTEGER Unix nanoseconds in UTC and read back in UTC;
// they round-trip exactly (time.Time.Equal), but the location is not kept.
// A time must lie between the years 1678 and 2262, and a required time must
// be set. Maps, lists, params, errors and outputs are stored as JSON text;
// nil and empty maps and lists round-trip as they were given.
//
// The package logs nothing and stores only what it is given.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/orchestrator/orchestrator/controlplane/store"
)

// FileName is the name of the database file in the store's directory.
const FileName = "controlplane.db"

// DefaultBusyTimeout is how long a connection waits for a lock held by
// another connection (a checkpoint, another process) when Options does not
// say.
const DefaultBusyTimeout = 5 * time.Second

// Options tune Open. The zero value is the defaults.
type Options struct {
	// BusyTimeout is how long a statement waits for a lock held elsewhere
	// before failing with SQLITE_BUSY; 0 means DefaultBusyTimeout.
	BusyTimeout time.Duration
}

// Store is the SQLite engine of store.Store. It is safe for concurrent use.
// Close it when done: it owns a goroutine and open files.
type Store struct {
	// wdb has exactly one connection; only the writer goroutine uses it
	// once Open has returned.
	wdb *sql.DB
	// rdb is the pool of query-only connections.
	rdb *sql.DB
	// cdb has one connection, the checkpointer's.
	cdb *sql.DB
	// wstmt and rstmt hold the statements prepared at Open, by SQL text.
	wstmt map[string]*sql.Stmt
	rstmt map[string]*sql.Stmt

	ops  chan *writeOp
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the writer has stopped

	cpKick chan struct{} // capacity 1: a commit appended to the log
	cpDone chan struct{} // closed when the checkpointer has stopped
	// checkpoints counts the checkpointer's checkpoints.
	checkpoints atomic.Uint64

	closeOnce sync.Once
	closeErr  error

	// groups counts the transactions the writer has begun.
	groups atomic.Uint64
}

var _ store.Store = (*Store)(nil)

// errClosed is returned by methods called after Close.
var errClosed = errors.New("store is closed")

// Open opens the store in dir, creating the directory and the database as
// needed, brings the schema up to date, and starts the writer. It fixes the
// permissions of the directory (0700) and of the database files (0600) as
// the package documentation says. ctx bounds the opening and the
// migrations, not the life of the store.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("store: open: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err := prepareDir(abs); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	path := filepath.Join(abs, FileName)
	if err := prepareFile(path); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = DefaultBusyTimeout
	}

	s := &Store{
		ops:    make(chan *writeOp),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		cpKick: make(chan struct{}, 1),
		cpDone: make(chan struct{}),
	}
	fail := func(err error) (*Store, error) {
		s.closeDBs()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}

	if s.wdb, err = sql.Open("sqlite", dsn(path, busy, false)); err != nil {
		return fail(err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)
	if err := checkDurability(ctx, s.wdb); err != nil {
		return fail(err)
	}
	if err := migrate(ctx, s.wdb, migrations); err != nil {
		return fail(err)
	}

	if s.rdb, err = sql.Open("sqlite", dsn(path, busy, true)); err != nil {
		return fail(err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.rdb.SetMaxOpenConns(readers)
	s.rdb.SetMaxIdleConns(readers)
	s.rdb.SetConnMaxLifetime(0)
	s.rdb.SetConnMaxIdleTime(0)

	if s.wstmt, err = prepareAll(ctx, s.wdb, writeQueries()); err != nil {
		return fail(err)
	}
	if s.rstmt, err = prepareAll(ctx, s.rdb, readQueries()); err != nil {
		return fail(err)
	}
	if s.cdb, err = openCheckpointDB(path, busy); err != nil {
		return fail(err)
	}

	go s.writer()
	go s.checkpointer()
	return s, nil
}

// Close stops the writer once the writes it has taken up are done, and
// closes the database. Calls after the first return the first's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
		<-s.cpDone
		if err := s.closeDBs(); err != nil {
			s.closeErr = fmt.Errorf("store: close: %w", err)
		}
	})
	return s.closeErr
}

// closeDBs closes the prepared statements and both pools, whichever exist.
func (s *Store) closeDBs() error {
	var errs []error
	for _, m := range []map[string]*sql.Stmt{s.wstmt, s.rstmt} {
		for _, st := range m {
			errs = append(errs, st.Close())
		}
	}
	for _, db := range []*sql.DB{s.cdb, s.rdb, s.wdb} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// Ping runs a trivial query on a read connection.
func (s *Store) Ping(ctx context.Context) error {
	select {
	case <-s.quit:
		return fmt.Errorf("store: ping: %w", errClosed)
	default:
	}
	var one int
	if err := s.rstmt[qPing].QueryRowContext(ctx).Scan(&one); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	if one != 1 {
		return fmt.Errorf("store: ping: answered %d, not 1", one)
	}
	return nil
}

// prepareDir creates dir with mode 0700, or sets an existing one to 0700.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("set the directory's mode to 0700: %w", err)
		}
	}
	return nil
}

// prepareFile creates the database file with mode 0600 so that SQLite's
// journal files, which take the database file's mode, are 0600 as well, and
// narrows the mode of existing store files that allow group or others in.
func prepareFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("set the mode of %s to 0600: %w", filepath.Base(p), err)
			}
		}
	}
	return nil
}

// dsn is the data source name of the database at path: a SQLite URI whose
// _pragma parameters the driver runs on every new connection. Readers are
// query-only; the writer begins its transactions IMMEDIATE.
func dsn(path string, busy time.Duration, reader bool) string {
	p := filepath.ToSlash(path)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a Windows volume: file:/C:/...
	}
	// In a SQLite URI, '?' starts the query, '#' the fragment, and '%'
	// escapes; everything else in a path stands for itself.
	p = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
	var b strings.Builder
	b.WriteString("file:")
	b.WriteString(p)
	fmt.Fprintf(&b, "?_pragma=busy_timeout(%d)", max(busy.Milliseconds(), 1))
	b.WriteString("&_pragma=journal_mode(WAL)")
	b.WriteString("&_pragma=synchronous(FULL)")
	b.WriteString("&_pragma=foreign_keys(1)")
	if reader {
		b.WriteString("&_pragma=query_only(1)")
	} else {
		// The checkpointer copies the log into the database file; the
		// writer does it itself only if the log grew this long.
		fmt.Fprintf(&b, "&_pragma=wal_autocheckpoint(%d)", walSafetyPages)
		b.WriteString("&_txlock=immediate")
	}
	return b.String()
}

// checkDurability makes sure the writer's connection really is in WAL mode
// with synchronous=FULL: SQLite keeps the old journal mode, without an
// error, where it cannot use WAL.
func checkDurability(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("the database is in journal mode %q, not WAL: is it on a filesystem without shared memory support?", mode)
	}
	var sync int
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return err
	}
	if sync != 2 {
		return fmt.Errorf("synchronous is %d, not FULL (2)", sync)
	}
	return nil
}

// prepareAll prepares each query on db.
func prepareAll(ctx context.Context, db *sql.DB, queries []string) (map[string]*sql.Stmt, error) {
	m := make(map[string]*sql.Stmt, len(queries))
	for _, q := range queries {
		if _, ok := m[q]; ok {
			continue
		}
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			for _, st := range m {
				st.Close()
			}
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		m[q] = st
	}
	return m, nil
}
