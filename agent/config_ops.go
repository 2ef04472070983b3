package agent

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// This file holds the settings an operator needs around the agent's work:
// the control plane's proxy and CA pin, the log file, and the local metrics
// listener. config.go holds the rest.

// ProxyDirect is the proxy setting that connects without a proxy, whatever
// the environment says.
const ProxyDirect = "direct"

// MetricsConfig configures the agent's optional local listener with
// /healthz, /readyz and /metrics. Off unless Listen is set.
type MetricsConfig struct {
	// Listen is host:port, such as 127.0.0.1:9464. Only a loopback address
	// unless AllowNonLoopback.
	Listen string `yaml:"listen"`
	// AllowNonLoopback allows Listen on an address other hosts reach. The
	// listener has no authentication: put it behind a firewall.
	AllowNonLoopback bool `yaml:"allow_non_loopback"`
}

// Log file defaults: size-based rotation keeps at most about
// (MaxBackups+1) × MaxSizeMB on disk.
const (
	DefaultLogMaxSizeMB  = 50
	DefaultLogMaxBackups = 5
	DefaultLogMaxAgeDays = 30
)

// applyOpsEnv overrides the operational settings from AGENT_* variables.
func (c *Config) applyOpsEnv(getenv func(string) string) error {
	for k, p := range map[string]*string{
		"AGENT_PROXY":                &c.Proxy,
		"AGENT_CONTROL_PLANE_CA_PIN": &c.ControlPlaneCAPin,
		"AGENT_METRICS_LISTEN":       &c.Metrics.Listen,
		"AGENT_LOG_FILE":             &c.Log.File,
	} {
		if v := getenv(k); v != "" {
			*p = v
		}
	}
	return nil
}

func (c *Config) setOpsDefaults() {
	if c.Log.File != "" {
		if c.Log.MaxSizeMB == 0 {
			c.Log.MaxSizeMB = DefaultLogMaxSizeMB
		}
		if c.Log.MaxBackups == 0 {
			c.Log.MaxBackups = DefaultLogMaxBackups
		}
		if c.Log.MaxAgeDays == 0 {
			c.Log.MaxAgeDays = DefaultLogMaxAgeDays
		}
	}
}

// validateOps checks the operational settings, naming the wrong one.
func (c *Config) validateOps() error {
	if c.Proxy != "" && c.Proxy != ProxyDirect {
		if _, err := controlPlaneProxyURL(c.Proxy); err != nil {
			return err
		}
	}
	if _, err := ParsePins(c.ControlPlaneCAPin); err != nil {
		return err
	}
	if c.Log.MaxSizeMB < 0 || c.Log.MaxSizeMB > 10240 {
		return fmt.Errorf("log.max_size_mb: %d is outside 1..10240", c.Log.MaxSizeMB)
	}
	if c.Log.MaxBackups < 0 || c.Log.MaxBackups > 1000 {
		return fmt.Errorf("log.max_backups: %d is outside 0..1000", c.Log.MaxBackups)
	}
	if c.Log.MaxAgeDays < 0 || c.Log.MaxAgeDays > 3650 {
		return fmt.Errorf("log.max_age_days: %d is outside 0..3650", c.Log.MaxAgeDays)
	}
	if c.Metrics.Listen != "" {
		if err := checkMetricsListen(c.Metrics); err != nil {
			return err
		}
	}
	return nil
}

// controlPlaneProxyURL parses the proxy setting. The websocket library
// speaks to http:// proxies (CONNECT, with basic auth from the URL's user
// info) and socks5://; an https:// proxy is not supported by it.
func controlPlaneProxyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("proxy: %q is not a URL such as http://proxy.example.com:3128 (or %q, or empty for HTTPS_PROXY)", RedactURL(s), ProxyDirect)
	}
	switch u.Scheme {
	case "http", "socks5":
	case "https":
		return nil, errors.New("proxy: an https:// proxy is not supported for the control plane's websocket; use http:// (the tunnel inside is TLS all the same)")
	default:
		return nil, fmt.Errorf("proxy: the scheme %q is not http or socks5", u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("proxy: %q must be scheme://[user:password@]host:port, without a path or query", RedactURL(s))
	}
	return u, nil
}

// RedactURL masks the password of a URL's user info, for messages and
// logs: http://user:pass@proxy:3128 becomes http://user:xxxxx@proxy:3128.
// A text that is not a URL with a host has everything up to its last "@"
// masked, in case that was user info the parser did not recognise.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		return u.Redacted()
	}
	if at := strings.LastIndex(s, "@"); at >= 0 {
		return "[REDACTED]" + s[at:]
	}
	return s
}

func checkMetricsListen(m MetricsConfig) error {
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil {
		return fmt.Errorf("metrics.listen: %q is not host:port such as 127.0.0.1:9464", m.Listen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("metrics.listen: %q has no valid port", m.Listen)
	}
	if m.AllowNonLoopback {
		return nil
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("metrics.listen: %q is not a loopback address; use 127.0.0.1 or [::1], or set metrics.allow_non_loopback: true (the listener has no authentication)", m.Listen)
}

// Pin is one pinned SHA-256 digest of a control-plane CA certificate: of
// its SubjectPublicKeyInfo or of the whole certificate (DER).
type Pin [sha256.Size]byte

// ParsePins parses the control_plane_ca_pin setting: one or more SHA-256
// digests, separated by commas or spaces, each written "sha256:HEX"
// (openssl's colon-separated fingerprint is accepted too) or
// "sha256//BASE64". Empty means no pin.
func ParsePins(s string) ([]Pin, error) {
	var pins []Pin
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		v := f
		var raw []byte
		var err error
		switch {
		case strings.HasPrefix(v, "sha256//"):
			raw, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(v, "sha256//"))
		default:
			v = strings.TrimPrefix(strings.TrimPrefix(v, "sha256:"), "SHA256:")
			raw, err = hex.DecodeString(strings.ReplaceAll(v, ":", ""))
		}
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("control_plane_ca_pin: %q is not a SHA-256 digest such as sha256:3f1c…(64 hex digits) or sha256//BASE64", f)
		}
		pins = append(pins, Pin(raw))
	}
	return pins, nil
}

// matchesPin reports whether c's SPKI or whole certificate has one of the
// pinned digests.
func matchesPin(c *x509.Certificate, pins []Pin) bool {
	spki := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	whole := sha256.Sum256(c.Raw)
	for _, p := range pins {
		if p == spki || p == whole {
			return true
		}
	}
	return false
}

// CertPins returns the two pins of a certificate: its SPKI's and its
// whole DER's, as "sha256:HEX", for messages and `agent doctor`.
func CertPins(c *x509.Certificate) (spki, cert string) {
	s := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	w := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(s[:]), "sha256:" + hex.EncodeToString(w[:])
}

// ProxyFunc returns the proxy function for the control plane's connections
// from the proxy setting: the environment's (HTTPS_PROXY, NO_PROXY) when
// empty, none for "direct", else always that proxy. Note that Go's
// environment proxy never applies to localhost or loopback addresses; an
// explicit proxy setting does.
func ProxyFunc(c Config) (func(*http.Request) (*url.URL, error), error) {
	switch c.Proxy {
	case "":
		return http.ProxyFromEnvironment, nil
	case ProxyDirect:
		return nil, nil
	}
	u, err := controlPlaneProxyURL(c.Proxy)
	if err != nil {
		return nil, err
	}
	return http.ProxyURL(u), nil
}

// pinVerifier returns a tls.Config.VerifyConnection that refuses a chain
// in which no certificate has one of the pins. It runs after the usual
// verification, so the chain is already trusted.
func pinVerifier(pins []Pin) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		for _, chain := range cs.VerifiedChains {
			for _, cert := range chain {
				if matchesPin(cert, pins) {
					return nil
				}
			}
		}
		return &PinError{Chain: cs.PeerCertificates}
	}
}

// PinError: the control plane's chain holds no pinned certificate.
type PinError struct {
	// Chain is what the server presented.
	Chain []*x509.Certificate
}

func (e *PinError) Error() string {
	return "the control plane's certificate chain holds no certificate pinned in control_plane_ca_pin"
}
