package service

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// notifySocket listens where $NOTIFY_SOCKET would point, as systemd does.
func notifySocket(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

func readNotify(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifyReadyAfterHandshake(t *testing.T) {
	t.Parallel()
	path, c := notifySocket(t)
	n := newNotifier(func(k string) string {
		if k == "NOTIFY_SOCKET" {
			return path
		}
		return ""
	})
	n.start()
	if got := readNotify(t, c); !strings.Contains(got, "STATUS=connecting") {
		t.Errorf("first notification %q, want a connecting STATUS", got)
	}
	n.Connected("ses_1")
	if got := readNotify(t, c); !strings.HasPrefix(got, "READY=1\n") || !strings.Contains(got, "ses_1") {
		t.Errorf("notification after the handshake %q, want READY=1 and the session", got)
	}
	n.Disconnected(errors.New("boom"))
	if got := readNotify(t, c); strings.Contains(got, "READY") || !strings.Contains(got, "boom") {
		t.Errorf("after a disconnect %q, want a STATUS only", got)
	}
	n.Connected("ses_2")
	if got := readNotify(t, c); strings.Contains(got, "READY=1") {
		t.Errorf("READY sent twice: %q", got)
	}
	n.stopping()
	if got := readNotify(t, c); !strings.Contains(got, "STOPPING=1") {
		t.Errorf("stopping: %q", got)
	}
}

func TestNotifyWithoutSocketDoesNothing(t *testing.T) {
	t.Parallel()
	n := newNotifier(func(string) string { return "" })
	n.start()
	n.Connected("ses_1")
	n.stopping()
	if n.timer != nil {
		t.Error("a fallback timer was armed without $NOTIFY_SOCKET")
	}
}
