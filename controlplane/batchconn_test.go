package controlplane

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordConn is a net.Conn that records each Write.
type recordConn struct {
	net.Conn // nil: only Write, Close and SetWriteDeadline are used

	mu     sync.Mutex // guards the fields below
	writes [][]byte
	closed bool
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

func (c *recordConn) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, w := range c.writes {
		out = append(out, string(w))
	}
	return out
}

func TestBatchConn(t *testing.T) {
	t.Parallel()
	rec := &recordConn{}
	c := &batchConn{Conn: rec}
	write := func(s string) {
		t.Helper()
		if n, err := c.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	write("a") // not corked: straight through
	c.cork()
	write("b")
	write("c")
	if got := rec.got(); len(got) != 1 {
		t.Fatalf("corked writes reached the connection: %q", got)
	}
	if c.buffered() != 2 {
		t.Errorf("buffered %d, want 2", c.buffered())
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	write("d") // uncorked again
	if got, want := rec.got(), []string{"a", "bc", "d"}; !slices.Equal(got, want) {
		t.Errorf("writes %q, want %q", got, want)
	}
	if err := c.flush(); err != nil || len(rec.got()) != 3 {
		t.Errorf("an empty flush wrote: %q, %v", rec.got(), err)
	}
}

func TestBatchConnCloseSendsWhatGathered(t *testing.T) {
	t.Parallel()
	rec := &recordConn{}
	c := &batchConn{Conn: rec}
	c.cork()
	_, _ = c.Write([]byte("frame"))
	_, _ = c.Write([]byte("close"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.got(), []string{"frameclose"}; !slices.Equal(got, want) || !rec.closed {
		t.Errorf("after Close: writes %q closed %v, want %q and closed", got, rec.closed, want)
	}
}
