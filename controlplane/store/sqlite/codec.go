package sqlite

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The times an int64 of nanoseconds since 1970 can hold: from 1677-09-21
// to 2262-04-11.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// nanos encodes a required time.
func nanos(field string, t time.Time) (int64, error) {
	if t.IsZero() {
		return 0, fmt.Errorf("%s is not set", field)
	}
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("%s %s is outside the years 1678 to 2262 that the store keeps", field, t.UTC().Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

// nullNanos encodes an optional time: nil is NULL.
func nullNanos(field string, t *time.Time) (any, error) {
	if t == nil {
		return nil, nil
	}
	return nanos(field, *t)
}

// fromNanos decodes a time written by nanos.
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// fromNullNanos decodes a time written by nullNanos.
func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// jsonText encodes v as JSON text.
func jsonText(field string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", field, err)
	}
	return string(b), nil
}

// nullJSON encodes a pointer as JSON text, or NULL when it is nil.
func nullJSON[T any](field string, v *T) (any, error) {
	if v == nil {
		return nil, nil
	}
	return jsonText(field, v)
}

// fromJSON decodes JSON text into v.
func fromJSON(field, text string, v any) error {
	if err := json.Unmarshal([]byte(text), v); err != nil {
		return fmt.Errorf("decode %s: %w", field, err)
	}
	return nil
}

// fromNullJSON decodes JSON text or NULL into a pointer.
func fromNullJSON[T any](field string, text sql.NullString) (*T, error) {
	if !text.Valid {
		return nil, nil
	}
	v := new(T)
	if err := fromJSON(field, text.String, v); err != nil {
		return nil, err
	}
	return v, nil
}

// uniqueViolation reports whether err is a UNIQUE or PRIMARY KEY constraint
// failure, and on what ("agents.name").
func uniqueViolation(err error) (string, bool) {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return "", false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
	default:
		return "", false
	}
	// The message ends "constraint failed: agents.name (2067)" or similar.
	msg := se.Error()
	if i := strings.LastIndex(msg, "failed: "); i >= 0 {
		msg = msg[i+len("failed: "):]
	}
	if i := strings.IndexByte(msg, ' '); i >= 0 {
		msg = msg[:i]
	}
	return msg, true
}

// foreignKeyViolation reports whether err is a FOREIGN KEY constraint
// failure.
func foreignKeyViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}
