package e2e

// Hostile input against the control plane as it is served in production
// (controlplane.Serve: its http.Server with its header timeout and limits,
// the websocket upgrader, the handshake deadline, the read limit): clients
// that do not authenticate or sign wrongly, frames that are huge or never
// end, thousands of connections that never finish their handshake, request
// bodies that trickle, and a flood of requests with a wrong admin token.
// Through all of it the control plane stays up, a good agent keeps its
// session and runs jobs, a new agent can connect, and good API requests are
// answered in bounded time.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/protocol"
)

// The production bounds these tests expect (controlplane/serve.go,
// session.go, api.go): the HTTP server's ReadHeaderTimeout and the
// handshake's hello deadline (servedBodyTimeout, below, is the body's).
const (
	servedHeaderTimeout = 10 * time.Second
	servedHelloTimeout  = 10 * time.Second
)

// newServedControlPlane runs controlplane.Serve, as `controlplane serve`
// does, on a new data directory and a loopback port, until the end of the
// test. The harness's API helpers and canary check work on it; Restart
// does not.
func newServedControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	leaks := newLeakCheck(t)
	logs := &lockedBuffer{}
	cp := &controlPlane{
		t: t, ctx: testCtx(t, 3*time.Minute), dir: filepath.Join(dir, "data"),
		logs: logs, log: newLogger(logs), leaks: leaks,
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
	cp.client = &http.Client{Transport: &recordingTransport{base: tr, record: cp.record}, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	leaks.add(cp.evidence)
	addrFile := filepath.Join(dir, "addr")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	getenv := func(k string) string {
		if k == "CONTROLPLANE_ADMIN_TOKEN" {
			return adminToken
		}
		return ""
	}
	go func() {
		done <- controlplane.Serve(ctx, controlplane.ServeConfig{
			Listen: "127.0.0.1:0", DataDir: cp.dir, AddrFile: addrFile, HeartbeatInterval: heartbeat,
		}, cp.log, "e2e", getenv)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve did not return within 30s")
		}
		if t.Failed() {
			t.Logf("control plane log:\n%s", tail(cp.logs.String(), 30000))
		}
	})
	eventually(t, 10*time.Second, "the control plane to listen", func() bool {
		select {
		case err := <-done:
			t.Fatalf("Serve: %v", err)
		default:
		}
		b, err := os.ReadFile(addrFile)
		cp.addr = strings.TrimSpace(string(b))
		return err == nil && cp.addr != ""
	})
	return cp
}

// --- a websocket client by hand -------------------------------------------

// rawWS is a websocket connection driven byte by byte, to send what no
// well-behaved client would.
type rawWS struct {
	conn net.Conn
	br   *bufio.Reader
}

// dialRawWS opens a TCP connection and upgrades it to a websocket with the
// protocol's subprotocol (or proto, if not empty).
func dialRawWS(addr, proto string) (*rawWS, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if proto == "" {
		proto = protocol.Subprotocol
	}
	key := make([]byte, 16)
	rand.Read(key)
	req := "GET " + protocol.ConnectPath + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\n" +
		"Sec-WebSocket-Protocol: " + proto + "\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("upgrade answered %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return &rawWS{conn: conn, br: br}, nil
}

// header writes a masked frame's header announcing length bytes, and
// returns the mask.
func (w *rawWS) header(opcode byte, fin bool, length uint64) ([4]byte, error) {
	var h []byte
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	switch {
	case length < 126:
		h = []byte{b0, 0x80 | byte(length)}
	case length <= 0xffff:
		h = []byte{b0, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(h[2:], uint16(length))
	default:
		h = make([]byte, 10)
		h[0], h[1] = b0, 0x80|127
		binary.BigEndian.PutUint64(h[2:], length)
	}
	var mask [4]byte
	rand.Read(mask[:])
	_ = w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := w.conn.Write(append(h, mask[:]...))
	return mask, err
}

// payload writes bytes of a frame's payload, masked, starting at offset.
func (w *rawWS) payload(mask [4]byte, offset int, p []byte) error {
	m := make([]byte, len(p))
	for i := range p {
		m[i] = p[i] ^ mask[(offset+i)%4]
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := w.conn.Write(m)
	return err
}

// send writes one whole text frame.
func (w *rawWS) send(p []byte) error {
	mask, err := w.header(0x1, true, uint64(len(p)))
	if err != nil {
		return err
	}
	return w.payload(mask, 0, p)
}

// read reads the server's next frame (never masked).
func (w *rawWS) read(timeout time.Duration) (opcode byte, p []byte, err error) {
	_ = w.conn.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("the server sent a %d-byte frame", n)
	}
	p = make([]byte, n)
	_, err = io.ReadFull(w.br, p)
	return h[0] & 0x0f, p, err
}

// challenge reads the challenge and returns its nonce.
func (w *rawWS) challenge() (string, error) {
	op, p, err := w.read(5 * time.Second)
	if err != nil {
		return "", err
	}
	m, err := protocol.Decode(p)
	if err != nil || op != 0x1 || m.Type != protocol.TypeChallenge {
		return "", fmt.Errorf("the first frame is not a challenge: %q", p)
	}
	return m.Challenge.Nonce, nil
}

// closed reads until the server closes the connection and returns the close
// code (0 when the connection ended without a close frame) and how long it
// took.
func (w *rawWS) closed(timeout time.Duration) (code int, after time.Duration, err error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		op, p, err := w.read(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, time.Since(start), fmt.Errorf("still open after %s", timeout)
			}
			return 0, time.Since(start), nil // ended without a close frame
		}
		if op == 0x8 {
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			return code, time.Since(start), nil
		}
	}
}

// --- hostile websocket clients -----------------------------------------

// TestHostileWebsocketClients: clients that never say hello, name an agent
// that does not exist, sign with the wrong key or over a nonce of their
// own, announce a frame of a terabyte, send one over the limit, or send one
// that never ends (before and after authenticating), and one that is not a
// websocket or speaks another protocol. Each is refused or cut within its
// bound (the read limit at once; the hello deadline; three heartbeats); a
// good agent keeps its session and runs jobs all along.
func TestHostileWebsocketClients(t *testing.T) {
	t.Parallel()
	cp := newServedControlPlane(t)
	good := startAgent(t, cp, agentConfig{name: "good"})
	session := cp.waitAgentStatus(good.ID, protocol.AgentOnline, 5*time.Second).SessionID
	rawID, rawKey := cp.enrollRaw("raw-1")
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	addr := cp.addr

	// hello sends a hello for id signed with key over nonce.
	hello := func(w *rawWS, id string, key ed25519.PrivateKey, nonce string) error {
		b, err := protocol.Encode(signedHello(id, key, nonce))
		if err != nil {
			return err
		}
		return w.send(b)
	}
	// challenged opens a websocket and reads the control plane's challenge,
	// returning its nonce. The caller closes w.
	challenged := func() (w *rawWS, nonce string, err error) {
		if w, err = dialRawWS(addr, ""); err != nil {
			return nil, "", err
		}
		if nonce, err = w.challenge(); err != nil {
			w.conn.Close()
			return nil, "", err
		}
		return w, nonce, nil
	}
	// trickle announces a 200 KiB frame (under the limit) and sends one
	// byte of it every 100ms until the server cuts the connection.
	trickle := func(w *rawWS, timeout time.Duration) (time.Duration, error) {
		start := time.Now()
		mask, err := w.header(0x1, true, 200<<10)
		if err != nil {
			return 0, err
		}
		for i := 0; time.Since(start) < timeout; i++ {
			if err := w.payload(mask, i, []byte{'x'}); err != nil {
				return time.Since(start), nil // cut
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, after, err := w.closed(time.Second)
		return time.Since(start) - time.Second + after, err
	}

	type outcome struct {
		name  string
		codes []int         // acceptable close codes; nil: any end
		bound time.Duration // must end within
		run   func() (code int, after time.Duration, err error)
	}
	cases := []outcome{
		{"never says hello", []int{protocol.CloseProtocolError}, servedHelloTimeout + 3*time.Second, func() (int, time.Duration, error) {
			w, _, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			return w.closed(servedHelloTimeout + 5*time.Second)
		}},
		{"unknown agent", []int{protocol.CloseAuthFailed}, 3 * time.Second, func() (int, time.Duration, error) {
			w, nonce, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			if err := hello(w, "agt_nobody", otherKey, nonce); err != nil {
				return 0, 0, err
			}
			return w.closed(5 * time.Second)
		}},
		{"signed with another key", []int{protocol.CloseAuthFailed}, 3 * time.Second, func() (int, time.Duration, error) {
			w, nonce, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			if err := hello(w, rawID, otherKey, nonce); err != nil {
				return 0, 0, err
			}
			return w.closed(5 * time.Second)
		}},
		{"signed over another nonce (a replay)", []int{protocol.CloseAuthFailed}, 3 * time.Second, func() (int, time.Duration, error) {
			w, _, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			old := base64.RawURLEncoding.EncodeToString(make([]byte, protocol.NonceSize))
			if err := hello(w, rawID, rawKey, old); err != nil {
				return 0, 0, err
			}
			return w.closed(5 * time.Second)
		}},
		{"announces a terabyte frame", []int{1009, protocol.CloseProtocolError}, 3 * time.Second, func() (int, time.Duration, error) {
			w, _, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			if _, err := w.header(0x1, true, 1<<40); err != nil {
				return 0, 0, err
			}
			return w.closed(5 * time.Second)
		}},
		{"sends a frame over the limit", []int{1009, protocol.CloseProtocolError}, 3 * time.Second, func() (int, time.Duration, error) {
			w, _, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			_ = w.send(bytes.Repeat([]byte("x"), protocol.MaxFrameSize+1)) // the server may stop reading midway
			return w.closed(5 * time.Second)
		}},
		{"endless frame before the hello", nil, servedHelloTimeout + 3*time.Second, func() (int, time.Duration, error) {
			w, _, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			after, err := trickle(w, servedHelloTimeout+5*time.Second)
			return 0, after, err
		}},
		{"endless frame in a session", nil, 3*heartbeat + 3*time.Second, func() (int, time.Duration, error) {
			w, nonce, err := challenged()
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			if err := hello(w, rawID, rawKey, nonce); err != nil {
				return 0, 0, err
			}
			if op, p, err := w.read(5 * time.Second); err != nil || op != 0x1 || !bytes.Contains(p, []byte(`"welcome"`)) {
				return 0, 0, fmt.Errorf("no welcome: %v %q", err, p)
			}
			after, err := trickle(w, 3*heartbeat+5*time.Second)
			return 0, after, err
		}},
		{"another protocol", []int{protocol.CloseIncompatible}, 3 * time.Second, func() (int, time.Duration, error) {
			w, err := dialRawWS(addr, "orchestrator.v0")
			if err != nil {
				return 0, 0, err
			}
			defer w.conn.Close()
			return w.closed(5 * time.Second)
		}},
		{"not a websocket", nil, 3 * time.Second, func() (int, time.Duration, error) {
			start := time.Now()
			resp, err := http.Get("http://" + addr + protocol.ConnectPath)
			if err != nil {
				return 0, 0, err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				return 0, 0, fmt.Errorf("answered %s, want 400", resp.Status)
			}
			return 0, time.Since(start), nil
		}},
	}

	results := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, after, err := c.run()
			switch {
			case err != nil:
				results[i] = err
			case after > c.bound:
				results[i] = fmt.Errorf("ended after %s, want within %s", after, c.bound)
			case c.codes != nil && !slices.Contains(c.codes, code):
				results[i] = fmt.Errorf("close code %d, want one of %v", code, c.codes)
			default:
				t.Logf("%s: ended after %s (close code %d)", c.name, after.Round(time.Millisecond), code)
			}
		}()
	}
	// The good agent works all along.
	hostileDone := make(chan struct{})
	go func() { wg.Wait(); close(hostileDone) }()
	jobs := 0
	for running := true; running; {
		select {
		case <-hostileDone:
			running = false
		case <-time.After(200 * time.Millisecond):
		}
		j := cp.submit(good.ID, allowedSecret, jobTimeout, 10*time.Second)
		requireState(t, j, protocol.JobSucceeded, 1)
		jobs++
	}
	for i, err := range results {
		if err != nil {
			t.Errorf("%s: %v", cases[i].name, err)
		}
	}
	if v := cp.agent(good.ID); v.Status != protocol.AgentOnline || v.SessionID != session {
		t.Errorf("the good agent is %s in session %s, want online in its first session %s", v.Status, v.SessionID, session)
	}
	t.Logf("the good agent ran %d jobs meanwhile", jobs)
	if status, _ := cp.do(http.MethodGet, "/healthz", nil); status != http.StatusOK {
		t.Errorf("/healthz: %d", status)
	}
}

// --- connections that never finish ---------------------------------------

// openFiles returns the soft limit on open files.
func openFiles(t *testing.T) int {
	t.Helper()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Skipf("no open-files limit: %v", err)
	}
	return int(l.Cur)
}

// TestHostileHalfFinishedHandshakes: 2000 TCP connections send part of an
// HTTP request and stop; 200 more finish the websocket upgrade and never
// say hello; a request body trickles. Meanwhile the control plane answers
// /healthz, the good agent runs jobs, and a new agent connects and runs
// one. The server cuts every stalled connection by its deadline: the
// header timeout, the hello deadline, the body deadline.
func TestHostileHalfFinishedHandshakes(t *testing.T) {
	t.Parallel()
	limit := openFiles(t)
	// Both ends are in this process: two descriptors per connection; stay
	// well below the limit, leaving room for the other tests.
	n := min(2000, (limit/2-2000)/2)
	if n < 200 {
		t.Skipf("the open-files limit %d leaves room for %d connections", limit, n)
	}
	const upgraded = 200
	cp := newServedControlPlane(t)
	good := startAgent(t, cp, agentConfig{name: "good"})
	cp.waitAgentStatus(good.ID, protocol.AgentOnline, 5*time.Second)
	goroutines := runtime.NumGoroutine()

	// The partial requests.
	conns := make([]net.Conn, n)
	var dialErrs atomic.Int64
	var wg sync.WaitGroup
	var next atomic.Int64
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := net.DialTimeout("tcp", cp.addr, 5*time.Second)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, "GET "+protocol.ConnectPath+" HTTP/1.1\r\nHost: "+cp.addr+"\r\nUpgrade: websocket\r\n")
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if e := dialErrs.Load(); e > 0 {
		t.Fatalf("%d of %d connections could not be opened", e, n)
	}
	opened := time.Now()
	// The upgraded ones that never say hello.
	stalled := make([]*rawWS, 0, upgraded)
	for range upgraded {
		w, err := dialRawWS(cp.addr, "")
		if err != nil {
			t.Fatalf("upgrade: %v", err)
		}
		stalled = append(stalled, w)
	}
	t.Cleanup(func() {
		for _, w := range stalled {
			w.conn.Close()
		}
	})
	// A body that trickles: the enrollment endpoint needs no token.
	body, err := net.DialTimeout("tcp", cp.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { body.Close() })
	_, _ = io.WriteString(body, "POST "+protocol.EnrollPath+" HTTP/1.1\r\nHost: "+cp.addr+"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	bodyStart := time.Now()
	bodyCut := make(chan time.Duration, 1)
	go func() {
		for time.Since(bodyStart) < 2*time.Minute {
			_ = body.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(body, " "); err != nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		bodyCut <- time.Since(bodyStart)
	}()
	t.Logf("%d partial requests and %d silent websockets open in %s; goroutines %d → %d",
		n, upgraded, time.Since(start).Round(time.Millisecond), goroutines, runtime.NumGoroutine())

	// The control plane serves meanwhile.
	healthStart := time.Now()
	if status, _ := cp.do(http.MethodGet, "/healthz", nil); status != http.StatusOK {
		t.Fatalf("/healthz: %d", status)
	}
	t.Logf("/healthz answered in %s", time.Since(healthStart).Round(time.Millisecond))
	requireState(t, cp.submit(good.ID, allowedSecret, jobTimeout, 10*time.Second), protocol.JobSucceeded, 1)
	newcomer := startAgent(t, cp, agentConfig{name: "newcomer"})
	cp.waitAgentStatus(newcomer.ID, protocol.AgentOnline, 10*time.Second)
	requireState(t, cp.submit(newcomer.ID, allowedSecret, jobTimeout, 10*time.Second), protocol.JobSucceeded, 1)

	// Every stalled connection is cut by its deadline.
	var cut, open atomic.Int64
	check := func(c net.Conn, by time.Time) {
		_ = c.SetReadDeadline(by)
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			open.Add(1)
		} else {
			cut.Add(1)
		}
	}
	var checks sync.WaitGroup
	for _, c := range conns {
		checks.Add(1)
		go func() { defer checks.Done(); check(c, opened.Add(servedHeaderTimeout+10*time.Second)) }()
	}
	for _, w := range stalled {
		checks.Add(1)
		go func() { defer checks.Done(); check(w.conn, opened.Add(servedHelloTimeout+10*time.Second)) }()
	}
	checks.Wait()
	t.Logf("stalled connections cut by the server: %d, still open: %d, %s after they were opened",
		cut.Load(), open.Load(), time.Since(opened).Round(time.Millisecond))
	if open.Load() != 0 {
		t.Errorf("%d stalled connections were still open past their deadlines", open.Load())
	}
	select {
	case took := <-bodyCut:
		t.Logf("the trickling body was cut after %s", took.Round(time.Millisecond))
		if took > servedBodyTimeout+5*time.Second {
			t.Errorf("the trickling body was cut after %s, want within %s", took, servedBodyTimeout)
		}
	case <-time.After(servedBodyTimeout + 10*time.Second - time.Since(bodyStart)):
		t.Errorf("the trickling body is still being read %s after it began", time.Since(bodyStart))
	}
	if v := cp.agent(good.ID); v.Status != protocol.AgentOnline {
		t.Errorf("the good agent is %s", v.Status)
	}
}

// servedBodyTimeout is the control plane's bound on reading a request body.
const servedBodyTimeout = 20 * time.Second

// --- a flood of bad tokens ---------------------------------------------------

// TestHostileAdminTokenFlood: 5000 API requests with a wrong, missing or
// oversized admin token (and console sign-ins with a wrong one), from 20
// goroutines, while a client with the right token keeps asking: every bad
// request is refused, every good one answered, none slower than a generous
// bound, and the log does not grow with the flood but says, once, that
// tokens were refused and how many.
func TestHostileAdminTokenFlood(t *testing.T) {
	t.Parallel()
	cp := newServedControlPlane(t)
	a := startAgent(t, cp, agentConfig{name: "good"})
	cp.waitAgentStatus(a.ID, protocol.AgentOnline, 5*time.Second)
	logBefore := len(logLines(cp.logs.Bytes()))

	const (
		workers = 20
		each    = 250
		bound   = 2 * time.Second // generous: 2 cores, -race, 20 flooding goroutines
	)
	bad := []func(*http.Request){
		func(r *http.Request) { r.Header.Set("Authorization", "Bearer wrong-token-0123456789abcdef") },
		func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+adminToken[:len(adminToken)-1]+"x") },
		func(r *http.Request) {},
		func(r *http.Request) {
			r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:"+adminToken)))
		},
		func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+strings.Repeat("A", 32<<10)) },
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: workers}
	t.Cleanup(tr.CloseIdleConnections)
	flood := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	statuses := make([]map[int]int, workers)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range workers {
		statuses[w] = map[int]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				method, path, body := http.MethodGet, "/api/v1/agents", ""
				switch i % 3 {
				case 1:
					method, path, body = http.MethodPost, "/api/v1/jobs", `{"agent_id":"`+a.ID+`","kind":"resolve_credentials","params":{}}`
				case 2: // the web console's sign-in takes the admin token too
					method, path, body = http.MethodPost, "/api/v1/session", `{"token":"wrong-token-`+fmt.Sprint(w, i)+`"}`
				}
				req, _ := http.NewRequest(method, "http://"+cp.addr+path, strings.NewReader(body))
				if i%3 != 2 {
					bad[(w+i)%len(bad)](req)
				}
				resp, err := flood.Do(req)
				if err != nil {
					statuses[w][0]++
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				statuses[w][resp.StatusCode]++
			}
		}()
	}
	go func() { wg.Wait(); close(stop) }()

	var worst time.Duration
	var latencies []time.Duration
	for running := true; running; {
		select {
		case <-stop:
			running = false
		case <-time.After(20 * time.Millisecond):
		}
		start := time.Now()
		status, body := cp.do(http.MethodGet, "/api/v1/agents/"+a.ID, nil)
		took := time.Since(start)
		latencies = append(latencies, took)
		worst = max(worst, took)
		if status != http.StatusOK {
			t.Fatalf("a good request during the flood: %d %s", status, body)
		}
	}
	j := cp.submit(a.ID, allowedSecret, jobTimeout, 10*time.Second)
	requireState(t, j, protocol.JobSucceeded, 1)

	total := map[int]int{}
	for _, s := range statuses {
		for k, v := range s {
			total[k] += v
		}
	}
	slices.Sort(latencies)
	t.Logf("flood answers by status: %v; %d good requests meanwhile: median %s, p99 %s, worst %s", total, len(latencies),
		latencies[len(latencies)/2].Round(time.Microsecond), latencies[len(latencies)*99/100].Round(time.Microsecond), worst.Round(time.Microsecond))
	for status, count := range total {
		if status != http.StatusUnauthorized && status != http.StatusTooManyRequests && status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%d flood requests answered %d, want 401, 429 or 431", count, status)
		}
	}
	if worst > bound {
		t.Errorf("a good request took %s during the flood, want under %s", worst, bound)
	}
	if grown := len(logLines(cp.logs.Bytes())) - logBefore; grown > 100 {
		t.Errorf("the control plane logged %d lines during the flood", grown)
	}
	// But it leaves a trace: the refusals, counted, once a minute per address.
	if !hasLog(cp.logs.Bytes(), "admin token refused", map[string]string{"remote": "127.0.0.1"}) {
		t.Errorf("the control plane did not log the refused admin tokens")
	}
}
