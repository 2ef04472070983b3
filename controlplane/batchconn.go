package controlplane

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchConn is the connection under an agent's websocket. gorilla writes
// each frame with its own write system call; while the session's writer has
// frames queued it corks the connection, so that the frames gather here and
// one flush sends them all with one system call (and, under TLS, in one
// record). A write made while it is not corked (pings, close frames, the
// handshake) goes straight through.
type batchConn struct {
	net.Conn

	mu     sync.Mutex // guards the fields below, and orders writes to Conn
	corked bool
	buf    []byte
}

// maxBatch is how many bytes a corked connection gathers before the writer
// flushes them, whatever is still queued.
const maxBatch = 64 << 10

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// cork makes the next writes gather until flush.
func (c *batchConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// buffered is how many bytes wait for flush.
func (c *batchConn) buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

// flush uncorks the connection and writes what gathered, under the write
// deadline last set.
func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > maxBatch {
		c.buf = nil // do not keep a large buffer for an idle agent
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// Close sends what gathered (a close frame, typically), briefly, and
// closes the connection.
func (c *batchConn) Close() error {
	// A flush stuck on an agent that does not read holds mu until its
	// deadline: bring the deadline to a second first (the socket's own
	// deadline may be set from any goroutine).
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.mu.Lock()
	if len(c.buf) > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.flushLocked()
	}
	c.corked = false
	c.mu.Unlock()
	return c.Conn.Close()
}

// batchWriter makes the websocket upgrade hijack a batchConn. A
// ResponseWriter that cannot be hijacked is returned as it is: the upgrade
// then fails as it would have.
func batchWriter(w http.ResponseWriter) http.ResponseWriter {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return w
	}
	return batchHijacker{ResponseWriter: w, hj: hj}
}

type batchHijacker struct {
	http.ResponseWriter
	hj http.Hijacker
}

func (w batchHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := w.hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &batchConn{Conn: conn}, rw, nil
}
