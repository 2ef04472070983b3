//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestrator/orchestrator/protocol"
)

// The floor of DESIGN §8: what the transport and durability cost alone,
// measured in the same run as the product so that noise on a shared
// machine hits both. Each part is a bare round trip with messages of the
// sizes the product sends.

// floor is one measurement of the floor.
type floor struct {
	HTTP  dist // a keep-alive POST with a body of the submit's size, answered with a body of the job view's size
	WS    dist // a websocket frame of the job's size, answered with one of the result's size
	Fsync dist // a 4 KiB write and fsync in the store's directory
}

// P50 and P99 sum the parts.
func (f floor) P50() time.Duration { return f.HTTP.P50 + f.WS.P50 + f.Fsync.P50 }
func (f floor) P99() time.Duration { return f.HTTP.P99 + f.WS.P99 + f.Fsync.P99 }

// frames are the sizes to use: real bodies and frames of the product,
// captured from a job of the same run.
type frames struct {
	submit []byte // the API request body
	view   []byte // the API answer
	job    []byte // the job frame
	result []byte // the result frame
}

func measureFloor(ctx context.Context, fr frames, dir string, iters int) (floor, error) {
	var f floor
	var err error
	if f.HTTP, err = floorHTTP(ctx, fr.submit, fr.view, iters); err != nil {
		return f, fmt.Errorf("floor http: %w", err)
	}
	if f.WS, err = floorWS(ctx, fr.job, fr.result, iters); err != nil {
		return f, fmt.Errorf("floor websocket: %w", err)
	}
	if f.Fsync, err = floorFsync(ctx, dir, iters); err != nil {
		return f, fmt.Errorf("floor fsync: %w", err)
	}
	return f, nil
}

// floorHTTP times keep-alive round trips to a trivial net/http handler on
// loopback: it reads the request body and answers with resp.
func floorHTTP(ctx context.Context, req, resp []byte, iters int) (dist, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return dist{}, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write(resp)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + ln.Addr().String() + "/api/v1/jobs?wait=30s"
	one := func() error {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
		if err != nil {
			return err
		}
		r.Header.Set("Authorization", "Bearer floor-token-0123456789")
		r.Header.Set("Content-Type", "application/json")
		res, err := c.Do(r)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return err
	}
	return timeLoop(ctx, iters, one)
}

// timeLoop runs one iters times after a short warm-up and returns the
// distribution of its durations.
func timeLoop(ctx context.Context, iters int, one func() error) (dist, error) {
	warm := min(200, iters/10)
	d := make([]time.Duration, 0, iters)
	for i := 0; i < warm+iters; i++ {
		if err := ctx.Err(); err != nil {
			return dist{}, err
		}
		start := time.Now()
		if err := one(); err != nil {
			return dist{}, err
		}
		if i >= warm {
			d = append(d, time.Since(start))
		}
	}
	return summarize(d), nil
}

// floorWS times bare gorilla websocket round trips on loopback: the server
// writes a frame of the job's size, the client answers with one of the
// result's size, as the agent does; the time is taken on the server side,
// where the control plane stands. The buffer sizes are the product's.
func floorWS(ctx context.Context, job, result []byte, iters int) (dist, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return dist{}, err
	}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	type outcome struct {
		d   dist
		err error
	}
	res := make(chan outcome, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				res <- outcome{err: err}
				return
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			d, err := timeLoop(ctx, iters, func() error {
				if err := conn.WriteMessage(websocket.TextMessage, job); err != nil {
					return err
				}
				_, _, err := conn.ReadMessage()
				return err
			})
			res <- outcome{d, err}
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	d := websocket.Dialer{ReadBufferSize: 4096, WriteBufferSize: 4096, HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.DialContext(ctx, "ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		return dist{}, err
	}
	resp.Body.Close()
	defer conn.Close()
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
			if err := conn.WriteMessage(websocket.TextMessage, result); err != nil {
				return
			}
		}
	}()
	select {
	case o := <-res:
		return o.d, o.err
	case <-ctx.Done():
		return dist{}, ctx.Err()
	}
}

// floorFsync times a 4 KiB write and f.Sync in dir, the store's directory,
// cycling over a preallocated 4 MiB file as SQLite's write-ahead log does
// between checkpoints.
func floorFsync(ctx context.Context, dir string, iters int) (dist, error) {
	const block, span = 4096, 4 << 20
	path := filepath.Join(dir, "load-floor-fsync.tmp")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return dist{}, err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, block)
	for off := int64(0); off < span; off += block {
		if _, err := f.WriteAt(buf, off); err != nil {
			return dist{}, err
		}
	}
	if err := f.Sync(); err != nil {
		return dist{}, err
	}
	i := 0
	return timeLoop(ctx, iters, func() error {
		off := int64(i*block) % span
		i++
		buf[0] = byte(i)
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
		return f.Sync()
	})
}

// wsCeiling measures the bare JSON-over-websocket ceiling: conns loopback
// connections, each with window round trips in flight, the server encoding
// the job message with protocol.Encode and decoding the answer with
// protocol.Decode, the client doing the same with the result. It returns
// round trips per second over d.
func wsCeiling(ctx context.Context, job, result []byte, conns, window int, d time.Duration) (float64, error) {
	jm, err := protocol.Decode(job)
	if err != nil {
		return 0, err
	}
	rm, err := protocol.Decode(result)
	if err != nil {
		return 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	var (
		count    atomic.Int64
		counting atomic.Bool
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer conn.Close()
			credits := make(chan struct{}, window)
			for range window {
				credits <- struct{}{}
			}
			go func() { // reader
				for {
					_, b, err := conn.ReadMessage()
					if err != nil {
						close(credits)
						return
					}
					if _, err := protocol.Decode(b); err != nil {
						close(credits)
						return
					}
					if counting.Load() {
						count.Add(1)
					}
					credits <- struct{}{}
				}
			}()
			for range credits {
				select {
				case <-stop:
					return
				default:
				}
				b, err := protocol.Encode(jm)
				if err != nil {
					return
				}
				_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
					return
				}
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	dialer := websocket.Dialer{ReadBufferSize: 4096, WriteBufferSize: 4096, HandshakeTimeout: 10 * time.Second}
	var clients []*websocket.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		wg.Wait()
	}()
	for range conns {
		c, resp, err := dialer.DialContext(ctx, "ws://"+ln.Addr().String()+"/", nil)
		if err != nil {
			close(stop)
			return 0, err
		}
		resp.Body.Close()
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				if _, err := protocol.Decode(b); err != nil {
					return
				}
				out, err := protocol.Encode(rm)
				if err != nil {
					return
				}
				if err := c.WriteMessage(websocket.TextMessage, out); err != nil {
					return
				}
			}
		}()
	}
	// Warm up, then count for d.
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		close(stop)
		return 0, ctx.Err()
	}
	counting.Store(true)
	start := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	counting.Store(false)
	el := time.Since(start)
	close(stop)
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return 0, err
	}
	return float64(count.Load()) / el.Seconds(), nil
}
