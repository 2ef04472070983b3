package agent

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePins(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256([]byte("x"))
	hexPin := hex.EncodeToString(sum[:])
	colons := strings.ToUpper(strings.Join(splitEvery(hexPin, 2), ":"))
	for _, tt := range []struct {
		in   string
		n    int
		fail bool
	}{
		{"", 0, false},
		{"sha256:" + hexPin, 1, false},
		{colons, 1, false}, // openssl x509 -fingerprint -sha256
		{"sha256//" + base64.StdEncoding.EncodeToString(sum[:]), 1, false},
		{"sha256:" + hexPin + ", sha256:" + hexPin, 2, false},
		{"sha256:abcd", 0, true},
		{"md5:" + hexPin, 0, true},
	} {
		pins, err := ParsePins(tt.in)
		if (err != nil) != tt.fail || len(pins) != tt.n {
			t.Errorf("ParsePins(%q) = %d pins, %v", tt.in, len(pins), err)
		}
		if err != nil && !strings.Contains(err.Error(), "control_plane_ca_pin") {
			t.Errorf("ParsePins(%q): the error does not name the setting: %v", tt.in, err)
		}
		if tt.n > 0 && pins[0] != Pin(sum) {
			t.Errorf("ParsePins(%q) = %x", tt.in, pins[0])
		}
	}
}

func splitEvery(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func TestOpsValidation(t *testing.T) {
	t.Parallel()
	base := func() Config {
		return Config{ControlPlane: "https://cp.example.com", Concurrency: 1, Log: LogConfig{Format: "json", Level: "info"}}
	}
	for _, tt := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"http proxy", func(c *Config) { c.Proxy = "http://user:pw@proxy:3128" }, ""},
		{"socks5 proxy", func(c *Config) { c.Proxy = "socks5://proxy:1080" }, ""},
		{"direct", func(c *Config) { c.Proxy = "direct" }, ""},
		{"https proxy", func(c *Config) { c.Proxy = "https://proxy:3128" }, "https:// proxy is not supported"},
		{"proxy with a path", func(c *Config) { c.Proxy = "http://u:secretpw@proxy:3128/x" }, "without a path"},
		{"proxy not a URL", func(c *Config) { c.Proxy = "proxy:3128" }, "proxy:"},
		{"metrics on loopback", func(c *Config) { c.Metrics.Listen = "127.0.0.1:9464" }, ""},
		{"metrics on ::1", func(c *Config) { c.Metrics.Listen = "[::1]:9464" }, ""},
		{"metrics on all addresses", func(c *Config) { c.Metrics.Listen = ":9464" }, "allow_non_loopback"},
		{"metrics on a LAN address", func(c *Config) { c.Metrics.Listen = "10.0.0.5:9464" }, "not a loopback"},
		{"metrics on a LAN address, allowed", func(c *Config) { c.Metrics.Listen = "10.0.0.5:9464"; c.Metrics.AllowNonLoopback = true }, ""},
		{"metrics without a port", func(c *Config) { c.Metrics.Listen = "127.0.0.1" }, "metrics.listen"},
		{"bad pin", func(c *Config) { c.ControlPlaneCAPin = "nope" }, "control_plane_ca_pin"},
		{"log size", func(c *Config) { c.Log.MaxSizeMB = -1 }, "log.max_size_mb"},
	} {
		c := base()
		tt.mod(&c)
		err := c.validateOps()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s: the error shows the proxy's password: %v", tt.name, err)
		}
	}
}

func TestProxyFunc(t *testing.T) {
	t.Parallel()
	req := &http.Request{URL: &url.URL{Scheme: "https", Host: "127.0.0.1:8443"}}
	// An explicit proxy applies even to loopback, where the environment's
	// never does.
	pf, err := ProxyFunc(Config{Proxy: "http://u:p@proxy.example.com:3128"})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := pf(req); err != nil || p == nil || p.Host != "proxy.example.com:3128" || p.User.Username() != "u" {
		t.Errorf("explicit proxy for loopback = %v, %v", p, err)
	}
	if pf, err := ProxyFunc(Config{Proxy: ProxyDirect}); err != nil || pf != nil {
		t.Errorf("direct = %v, %v; want no proxy function", pf != nil, err)
	}
	if pf, err := ProxyFunc(Config{}); err != nil || pf == nil {
		t.Errorf("default = %v, %v; want the environment's", pf != nil, err)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://user:secretpw@proxy:3128": "http://user:xxxxx@proxy:3128",
		"http://proxy:3128":               "http://proxy:3128",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestControlPlaneCAPin: with a pin, the chain must hold a pinned
// certificate; without a match the connection fails with a PinError.
func TestControlPlaneCAPin(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	cert := srv.Certificate()
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	spki, whole := CertPins(cert)
	other := sha256.Sum256([]byte("another CA"))
	for _, tt := range []struct {
		name, pin string
		ok        bool
	}{
		{"no pin", "", true},
		{"key pin", spki, true},
		{"certificate pin", whole, true},
		{"one of two", "sha256:" + hex.EncodeToString(other[:]) + "," + spki, true},
		{"wrong pin", "sha256:" + hex.EncodeToString(other[:]), false},
	} {
		c := Config{ControlPlane: srv.URL, CAFile: ca, ControlPlaneCAPin: tt.pin, Proxy: ProxyDirect}
		client, err := HTTPClient(c)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		client.CloseIdleConnections()
		var pe *PinError
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case !tt.ok && !errors.As(err, &pe):
			t.Errorf("%s: %v, want a PinError", tt.name, err)
		}
	}
}
