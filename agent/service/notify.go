package service

import (
	"net"
	"strings"
	"sync"
	"time"

	"github.com/orchestrator/orchestrator/agent"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): datagrams such
// as "READY=1" to the socket $NOTIFY_SOCKET names. The unit is
// Type=notify: systemd counts the agent as started once it has connected
// to the control plane, or, so that a control plane that is down does not
// hold the boot, once readyAfter has passed (with a STATUS saying it is
// still trying). Without $NOTIFY_SOCKET (not under systemd) it does
// nothing.
type notifier struct {
	agent.NopObserver
	addr string

	mu    sync.Mutex // guards the fields below
	ready bool
	timer *time.Timer
}

// readyAfter bounds the wait for the first session before reporting ready
// all the same; the unit's TimeoutStartSec is longer.
const readyAfter = 60 * time.Second

func newNotifier(getenv func(string) string) *notifier {
	return &notifier{addr: getenv("NOTIFY_SOCKET")}
}

// send writes one notification; errors are ignored, as sd_notify does.
func (n *notifier) send(lines ...string) {
	if n.addr == "" {
		return
	}
	// A name starting with "@" is in the abstract namespace; Go's net
	// package maps it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write([]byte(strings.Join(lines, "\n")))
}

// start arms the fallback readiness.
func (n *notifier) start() {
	if n.addr == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.send("STATUS=connecting to the control plane")
	n.timer = time.AfterFunc(readyAfter, func() {
		if n.markReady() {
			n.send("READY=1", "STATUS=not connected to the control plane yet; still trying (see the log)")
		}
	})
}

// markReady reports whether this call is the one that made it ready.
func (n *notifier) markReady() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ready {
		return false
	}
	n.ready = true
	if n.timer != nil {
		n.timer.Stop()
	}
	return true
}

// Connected implements agent.Observer: ready at the first session.
func (n *notifier) Connected(sessionID string) {
	status := "STATUS=connected to the control plane (session " + sessionID + ")"
	if n.markReady() {
		n.send("READY=1", status)
		return
	}
	n.send(status)
}

// Disconnected implements agent.Observer.
func (n *notifier) Disconnected(err error) {
	n.send("STATUS=disconnected from the control plane: " + oneLine(err))
}

// Reconnecting implements agent.Observer.
func (n *notifier) Reconnecting(d time.Duration, err error) {
	n.send("STATUS=reconnecting in " + d.Round(time.Second).String() + ": " + oneLine(err))
}

// stopping tells systemd the agent is draining.
func (n *notifier) stopping() {
	n.mu.Lock()
	if n.timer != nil {
		n.timer.Stop()
	}
	n.mu.Unlock()
	n.send("STOPPING=1", "STATUS=draining")
}

func oneLine(err error) string {
	if err == nil {
		return "closed"
	}
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
