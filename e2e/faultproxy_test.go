package e2e

// The fault proxy: a TCP proxy on loopback between agents and the control
// plane that the fault scenarios (faults_test.go) use to break the link in
// the ways networks break it. It can
//
//   - pause the link (nothing is forwarded, nothing is lost: the bytes wait),
//   - cut it (every open connection is closed),
//   - slow it (each chunk or frame waits a latency before it goes on),
//   - drop one direction of the open connections without closing anything
//     (a half-open connection: one side keeps writing into a black hole),
//   - refuse new connections (accepted and reset at once), and
//   - act on single websocket frames: drop a frame (a lost result_ack),
//     send one twice (a job delivered twice), or keep a copy to send again
//     later on whatever connection is open then (a redelivery after the
//     job ended).
//
// The frame rules read the websocket stream after the HTTP upgrade: the
// control plane's frames are not masked and the agent's are masked with a
// key in each frame's header (RFC 6455 §5.2), so a proxy can read, drop and
// repeat whole frames of either side; nothing is compressed. Everything it
// starts stops when the test ends.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// direction is the way bytes go through the proxy.
type direction int

const (
	toServer direction = iota // agent → control plane
	toClient                  // control plane → agent
)

func (d direction) String() string {
	if d == toServer {
		return "agent→control plane"
	}
	return "control plane→agent"
}

// frameAction is what a frame rule does to the frames it matches.
type frameAction int

const (
	dropFrame      frameAction = iota + 1 // not forwarded
	duplicateFrame                        // forwarded twice, back to back
	captureFrame                          // forwarded, and a copy kept (frameRule.captured)
)

// frameRule acts on the complete text frames of one direction whose message
// match accepts.
type frameRule struct {
	dir    direction
	match  func(*protocol.Message) bool
	action frameAction
	// times is how many frames the rule acts on; 0: every match.
	times int

	mu       sync.Mutex // guards the fields below
	hits     int
	captured [][]byte // raw frames (header and payload) of captureFrame
}

// Hits returns how many frames the rule acted on.
func (r *frameRule) Hits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits
}

// Captured returns the raw frames the rule kept.
func (r *frameRule) Captured() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.captured...)
}

// take reports whether the rule acts on m (and counts it).
func (r *frameRule) take(m *protocol.Message) bool {
	if m == nil || !r.match(m) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.times > 0 && r.hits >= r.times {
		return false
	}
	r.hits++
	return true
}

// faultProxy forwards loopback TCP connections to target. Build it with
// newFaultProxy.
type faultProxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	frames bool // parse websocket frames after the HTTP upgrade

	wg   sync.WaitGroup // the accept loop and every pump
	done chan struct{}  // closed by close

	mu       sync.Mutex // guards the fields below
	conns    map[*proxyConn]struct{}
	refuse   bool
	latency  time.Duration
	resume   chan struct{} // not nil while paused; closed by Resume
	rules    []*frameRule
	accepted int // connections forwarded
	refused  int // connections refused
	closed   bool
}

// newFaultProxy listens on a new loopback port and forwards each connection
// to target until the end of the test. With frames, the frame rules apply.
func newFaultProxy(t *testing.T, target string, frames bool) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fault proxy: listen: %v", err)
	}
	p := &faultProxy{t: t, ln: ln, target: target, frames: frames, done: make(chan struct{}), conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's address, host:port.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// URL is the control plane's URL through the proxy.
func (p *faultProxy) URL() string { return "http://" + p.Addr() }

func (p *faultProxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	conns := p.connsLocked()
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.closeBoth()
	}
	p.wg.Wait()
}

func (p *faultProxy) connsLocked() []*proxyConn {
	out := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *faultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.closed || p.refuse {
			p.refused++
			p.mu.Unlock()
			reset(client)
			continue
		}
		p.mu.Unlock()
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			reset(client) // the control plane is down: the agent sees it as it would
			continue
		}
		c := &proxyConn{p: p, client: client, server: server}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.accepted++
		p.mu.Unlock()
		c.pumps.Add(2)
		p.wg.Add(3)
		go c.pump(toServer, client, server)
		go c.pump(toClient, server, client)
		go func() { defer p.wg.Done(); c.pumps.Wait(); c.closeBoth(); p.forget(c) }()
	}
}

// reset closes a connection with a TCP reset rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

func (p *faultProxy) forget(c *proxyConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Refuse makes the proxy refuse (reset) new connections, or accept them
// again.
func (p *faultProxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Cut closes every open connection, both sides.
func (p *faultProxy) Cut() {
	p.mu.Lock()
	conns := p.connsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.closeBoth()
	}
}

// Pause holds every byte of every connection, new ones too, until Resume.
func (p *faultProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
}

// Resume forwards again what Pause held.
func (p *faultProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

// SetLatency delays every chunk (or frame) by d before it goes on.
func (p *faultProxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Blackhole makes the open connections drop everything going in dir,
// without closing them: a half-open connection (both directions: a link
// that went silent). Connections made later are not affected.
func (p *faultProxy) Blackhole(dirs ...direction) {
	p.mu.Lock()
	conns := p.connsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		for _, d := range dirs {
			c.drop[d] = true
		}
		c.mu.Unlock()
	}
}

// Rule adds a frame rule (the proxy must parse frames) and returns it.
func (p *faultProxy) Rule(r *frameRule) *frameRule {
	if !p.frames {
		p.t.Fatal("fault proxy: frame rules need a proxy made with frames")
	}
	p.mu.Lock()
	p.rules = append(p.rules, r)
	p.mu.Unlock()
	return r
}

// Inject writes raw frames into every open connection going in dir, as if
// the peer had sent them. It returns how many connections got them.
func (p *faultProxy) Inject(dir direction, frames ...[]byte) int {
	p.mu.Lock()
	conns := p.connsLocked()
	p.mu.Unlock()
	n := 0
	for _, c := range conns {
		if c.inject(dir, frames) {
			n++
		}
	}
	return n
}

// Stats returns how many connections were forwarded and refused so far,
// and how many are open.
func (p *faultProxy) Stats() (accepted, refused, open int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.refused, len(p.conns)
}

// gate returns a channel to wait on while the proxy is paused, nil if not.
func (p *faultProxy) gate() (chan struct{}, time.Duration, []*frameRule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resume, p.latency, p.rules
}

// proxyConn is one forwarded connection.
type proxyConn struct {
	p              *faultProxy
	client, server net.Conn
	pumps          sync.WaitGroup
	closeOnce      sync.Once

	mu       sync.Mutex // guards the fields below
	drop     [2]bool    // by direction: blackholed
	upgraded [2]bool    // by direction: past the HTTP upgrade, frames follow
	wmu      [2]sync.Mutex
}

func (c *proxyConn) closeBoth() {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.server.Close()
	})
}

func (c *proxyConn) dst(dir direction) net.Conn {
	if dir == toServer {
		return c.server
	}
	return c.client
}

func (c *proxyConn) dropped(dir direction) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drop[dir]
}

// write sends b on in dir, whole, under the direction's write lock, so that
// injected frames go between frames.
func (c *proxyConn) write(dir direction, b []byte) error {
	c.wmu[dir].Lock()
	defer c.wmu[dir].Unlock()
	dst := c.dst(dir)
	_ = dst.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := dst.Write(b)
	return err
}

func (c *proxyConn) inject(dir direction, frames [][]byte) bool {
	c.mu.Lock()
	ok := c.upgraded[dir] && !c.drop[dir]
	c.mu.Unlock()
	if !ok {
		return false
	}
	for _, f := range frames {
		if c.write(dir, f) != nil {
			return false
		}
	}
	return true
}

// wait holds a unit while the proxy is paused, then for the latency. It
// reports false once the proxy closed.
func (c *proxyConn) wait() (bool, []*frameRule) {
	for {
		resume, latency, rules := c.p.gate()
		if resume == nil {
			if latency > 0 {
				t := time.NewTimer(latency)
				select {
				case <-t.C:
				case <-c.p.done:
					t.Stop()
					return false, nil
				}
			}
			return true, rules
		}
		select {
		case <-resume:
		case <-c.p.done:
			return false, nil
		}
	}
}

// pump forwards src to dst in dir until src ends. The end of a blackholed
// direction is not passed on (the peer must find out by itself); any other
// end closes the whole connection.
func (c *proxyConn) pump(dir direction, src, _ net.Conn) {
	defer c.p.wg.Done()
	defer c.pumps.Done()
	br := bufio.NewReaderSize(src, 64<<10)
	framed := c.p.frames
	if framed {
		head, ok := readHTTPHead(br)
		if len(head) > 0 && !c.forward(dir, head, nil) {
			c.end(dir)
			return
		}
		if !ok {
			framed = false // not an upgrade: pass the rest through as it is
		} else {
			c.mu.Lock()
			c.upgraded[dir] = true
			c.mu.Unlock()
		}
	}
	buf := make([]byte, 32<<10)
	for {
		var unit []byte
		var msg *protocol.Message
		if framed {
			f, payload, err := readFrame(br)
			if err != nil {
				if errors.Is(err, errFrameTooLong) {
					framed = false
					if len(f) > 0 && !c.forward(dir, f, nil) {
						break
					}
					continue
				}
				break
			}
			unit = f
			if f[0]&0x0f == 0x1 && f[0]&0x80 != 0 { // a whole text frame
				msg, _ = protocol.Decode(payload)
			}
		} else {
			n, err := br.Read(buf)
			if n > 0 {
				unit = bytes.Clone(buf[:n])
			}
			if err != nil && n == 0 {
				break
			}
		}
		if !c.forward(dir, unit, msg) {
			break
		}
	}
	c.end(dir)
}

// forward applies the pause, the latency, the blackhole and the frame rules
// to one unit and writes what remains. It reports false when the pump must
// stop.
func (c *proxyConn) forward(dir direction, unit []byte, msg *protocol.Message) bool {
	ok, rules := c.wait()
	if !ok {
		return false
	}
	if c.dropped(dir) {
		return true
	}
	copies := 1
	for _, r := range rules {
		if r.dir != dir || !r.take(msg) {
			continue
		}
		switch r.action {
		case dropFrame:
			copies = 0
		case duplicateFrame:
			copies = 2
		case captureFrame:
			r.mu.Lock()
			r.captured = append(r.captured, bytes.Clone(unit))
			r.mu.Unlock()
		}
		break
	}
	for range copies {
		if c.write(dir, unit) != nil {
			return false
		}
	}
	return true
}

// end is called when a pump stops reading. Unless its direction is
// blackholed, the whole connection closes.
func (c *proxyConn) end(dir direction) {
	if c.dropped(dir) {
		return
	}
	c.wait() // a paused link passes the end on when it resumes, like the bytes
	c.closeBoth()
}

// readHTTPHead reads an HTTP request or response head, up to and including
// the empty line. ok says whether it is a websocket upgrade (a GET with
// Upgrade, or a 101 answer), after which frames follow.
func readHTTPHead(br *bufio.Reader) (head []byte, ok bool) {
	var b bytes.Buffer
	first := ""
	upgrade := false
	for b.Len() < 64<<10 {
		line, err := br.ReadSlice('\n')
		b.Write(line)
		if err != nil {
			return b.Bytes(), false
		}
		s := strings.TrimRight(string(line), "\r\n")
		if first == "" {
			first = s
			continue
		}
		if strings.HasPrefix(strings.ToLower(s), "upgrade:") {
			upgrade = true
		}
		if s == "" {
			ok = upgrade && (strings.HasPrefix(first, "GET ") || strings.Contains(first, " 101 "))
			return b.Bytes(), ok
		}
	}
	return b.Bytes(), false
}

// errFrameTooLong: a frame announced more than the proxy parses; it passes
// the rest through unparsed.
var errFrameTooLong = errors.New("frame too long to parse")

// readFrame reads one websocket frame and returns it raw, and its payload
// unmasked.
func readFrame(br *bufio.Reader) (raw, payload []byte, err error) {
	var hdr [14]byte
	if _, err := io.ReadFull(br, hdr[:2]); err != nil {
		return nil, nil, err
	}
	n := 2
	length := uint64(hdr[1] & 0x7f)
	switch length {
	case 126:
		if _, err := io.ReadFull(br, hdr[2:4]); err != nil {
			return nil, nil, err
		}
		length, n = uint64(binary.BigEndian.Uint16(hdr[2:4])), 4
	case 127:
		if _, err := io.ReadFull(br, hdr[2:10]); err != nil {
			return nil, nil, err
		}
		length, n = binary.BigEndian.Uint64(hdr[2:10]), 10
	}
	masked := hdr[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(br, hdr[n:n+4]); err != nil {
			return nil, nil, err
		}
		n += 4
	}
	if length > 2*protocol.MaxFrameSize {
		return bytes.Clone(hdr[:n]), nil, errFrameTooLong
	}
	raw = make([]byte, n+int(length))
	copy(raw, hdr[:n])
	if _, err := io.ReadFull(br, raw[n:]); err != nil {
		return nil, nil, err
	}
	payload = bytes.Clone(raw[n:])
	if masked {
		key := hdr[n-4 : n]
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return raw, payload, nil
}

// isJob, isResultAck and isResult match messages about one job.
func isJob(jobID string) func(*protocol.Message) bool {
	return func(m *protocol.Message) bool { return m.Type == protocol.TypeJob && m.Job.JobID == jobID }
}

func isResultAck(jobID string) func(*protocol.Message) bool {
	return func(m *protocol.Message) bool {
		return m.Type == protocol.TypeResultAck && m.ResultAck.JobID == jobID
	}
}

func isResult(jobID string) func(*protocol.Message) bool {
	return func(m *protocol.Message) bool { return m.Type == protocol.TypeResult && m.Result.JobID == jobID }
}
