// Package github runs the agent's GitHub jobs (test_connection,
// list_organizations) against GitHub Enterprise Server or github.com with
// the go-github client, and reports only outcomes.
//
// The caller (the agent's job handler) normalises the connection's URL with
// [Normalize], asks the agent's policy whether the secret may go to the
// normalised origin, and only then reads the secret and hands the token to
// [Service.TestConnection] or [Service.ListOrganizations]. The token goes
// only to that origin: the HTTP client refuses every redirect to another
// scheme, host or port, and a request to any other origin is refused before
// it is sent. Errors are *protocol.Error values with one of the github_*
// codes and a message a person can act on; none holds the token.
//
// Each job gets its own go-github client (go-github refuses calls after a
// rate-limit error until the reset, which must not leak from one job into
// the next); jobs share one HTTP transport: the proxy, the CA bundle and the
// connection pool of the agent's config.
package github

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	gh "github.com/google/go-github/v62/github"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// Config is the github section of the agent's config file.
//
//	github:
//	  ca_file: /etc/orchestrator-agent/github-ca.pem
//	  proxy: http://proxy.example.com:3128
//	  timeout: 30s
type Config struct {
	// CAFile is a PEM bundle of CA certificates to trust for GitHub on top
	// of the system's: a private CA of a GitHub Enterprise Server, or the
	// CA of a TLS-inspecting proxy.
	CAFile string `yaml:"ca_file" json:"ca_file,omitempty"`
	// Proxy is how GitHub is reached: empty uses the environment
	// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY; loopback addresses never go
	// through it); "direct" uses no proxy; an http://, https:// or socks5://
	// URL sends every GitHub call through that proxy.
	Proxy string `yaml:"proxy" json:"proxy,omitempty"`
	// Timeout bounds each GitHub request (connect, TLS, answer); the job's
	// deadline bounds the whole job. Default 30s.
	Timeout time.Duration `yaml:"timeout" json:"timeout,omitempty"`
}

// Defaults and bounds.
const (
	DefaultTimeout = 30 * time.Second
	// ProxyDirect is the proxy setting that uses no proxy.
	ProxyDirect = "direct"
	// MaxRetryWait is the longest Retry-After (or rate-limit reset) the agent
	// waits for, once per job, and only when it ends before the job's
	// deadline.
	MaxRetryWait = time.Minute
	// maxBody bounds one GitHub answer.
	maxBody = 8 << 20
	// maxRedirects bounds same-origin redirects.
	maxRedirects = 5
)

// Validate checks the settings, naming the one that is wrong.
func (c Config) Validate() error {
	if c.Timeout != 0 && (c.Timeout < time.Second || c.Timeout > 10*time.Minute) {
		return fmt.Errorf("github.timeout: %s is outside 1s..10m", c.Timeout)
	}
	if c.Proxy != "" && c.Proxy != ProxyDirect {
		if _, err := proxyURL(c.Proxy); err != nil {
			return err
		}
	}
	if c.CAFile != "" {
		if _, err := loadCAFile(c.CAFile); err != nil {
			return err
		}
	}
	return nil
}

func proxyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("github.proxy: %q is not a URL such as http://proxy.example.com:3128 (or empty for the environment, or %q)", redactURL(s), ProxyDirect)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("github.proxy: the scheme %q is not http, https or socks5", u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("github.proxy: %q must be scheme://host:port, without a path or query", redactURL(s))
	}
	return u, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("github.ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("github.ca_file: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Options configure a [Service]. Zero values mean the defaults.
type Options struct {
	// Config is the github section of the agent's config.
	Config Config
	// UserAgent is sent to GitHub; default "orchestrator-agent".
	UserAgent string
	// Observe, when set, sees every HTTP call to GitHub as it ends: the
	// answer's status (0 when none came), the error, the duration. For
	// metrics; it must return at once.
	Observe func(status int, err error, d time.Duration)
}

// Service calls GitHub for the agent's jobs. Build it with [New]; it is
// safe for concurrent use. Close releases its idle connections.
type Service struct {
	transport *http.Transport
	timeout   time.Duration
	userAgent string
	// proxySetting names where the proxy comes from, for messages:
	// "github.proxy", "the environment (HTTPS_PROXY)" or "".
	proxySetting string
	caFile       string
	observe      func(status int, err error, d time.Duration)
}

// New builds a Service from validated options: TLS verified against the
// system's roots plus Config.CAFile, the proxy of the config or the
// environment.
func New(o Options) (*Service, error) {
	c := o.Config
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Service{timeout: c.Timeout, userAgent: o.UserAgent, caFile: c.CAFile, observe: o.Observe}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.userAgent == "" {
		s.userAgent = "orchestrator-agent"
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, err := loadCAFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		tlsConf.RootCAs = pool
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: s.timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   8,
		ForceAttemptHTTP2:     true,
	}
	switch c.Proxy {
	case "":
		tr.Proxy = http.ProxyFromEnvironment
		s.proxySetting = "the environment (HTTPS_PROXY/HTTP_PROXY)"
	case ProxyDirect:
	default:
		u, err := proxyURL(c.Proxy)
		if err != nil {
			return nil, err
		}
		tr.Proxy = http.ProxyURL(u)
		s.proxySetting = "github.proxy"
	}
	s.transport = tr
	return s, nil
}

// Close closes the idle connections to GitHub.
func (s *Service) Close() { s.transport.CloseIdleConnections() }

// proxyFor returns the proxy a request to u goes through, without user
// info, or "" for none.
func (s *Service) proxyFor(u *url.URL) string {
	if s.transport.Proxy == nil {
		return ""
	}
	p, err := s.transport.Proxy(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}})
	if err != nil || p == nil {
		return ""
	}
	return (&url.URL{Scheme: p.Scheme, Host: p.Host}).String()
}

// errOtherOrigin is the cause of a refused request to another origin.
var errOtherOrigin = errors.New("refused: another origin than the connection's")

// redirectError is returned by CheckRedirect for a redirect the client does
// not follow.
type redirectError struct {
	from, to string // origins
	tooMany  bool
}

func (e *redirectError) Error() string {
	if e.tooMany {
		return fmt.Sprintf("more than %d redirects at %s", maxRedirects, e.from)
	}
	return fmt.Sprintf("redirect from %s to %s not followed", e.from, e.to)
}

// newHTTPClient returns the HTTP client of one job's calls to ep: it sends
// requests only to ep's origin, follows redirects only within it, logs each
// call at debug level and bounds each answer.
func (s *Service) newHTTPClient(ep Endpoint, log *zap.Logger) *http.Client {
	// The timeout is the transport's, not http.Client.Timeout: go-github
	// swaps the body of an error answer for a copy and closes only that, so
	// the client's timer would outlive the call.
	return &http.Client{
		Transport: &jobTransport{base: s.transport, origin: ep.Origin, log: log, timeout: s.timeout, observe: s.observe},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			o, err := policy.ParseOrigin(req.URL.String())
			if err != nil || o != ep.Origin {
				to := "an unparseable location"
				if err == nil {
					to = o.String()
				}
				return &redirectError{from: ep.Origin.String(), to: to}
			}
			if len(via) >= maxRedirects {
				return &redirectError{from: ep.Origin.String(), tooMany: true}
			}
			return nil
		},
	}
}

// newClient returns a go-github client for one job, authenticated with
// token (nil for an unauthenticated probe).
func (s *Service) newClient(ep Endpoint, token *redact.Secret, log *zap.Logger) (*gh.Client, error) {
	c := gh.NewClient(s.newHTTPClient(ep, log))
	if token != nil {
		c = c.WithAuthToken(token.Reveal())
	}
	if ep.Kind == protocol.GitHubEnterpriseServer {
		var err error
		upload := strings.TrimSuffix(ep.APIURL, "api/v3/") + "api/uploads/"
		if c, err = c.WithEnterpriseURLs(ep.APIURL, upload); err != nil {
			return nil, err
		}
	} else {
		u, err := url.Parse(ep.APIURL)
		if err != nil {
			return nil, err
		}
		c.BaseURL = u
	}
	c.UserAgent = s.userAgent
	return c, nil
}

// jobTransport is one job's round tripper: the origin guard, the timeout of
// each call (connect, answer and body), the debug log line per call and the
// answer bound, over the shared transport.
type jobTransport struct {
	base    http.RoundTripper
	origin  policy.Origin
	log     *zap.Logger
	timeout time.Duration
	observe func(status int, err error, d time.Duration) // may be nil
}

func (t *jobTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if o, err := policy.ParseOrigin(req.URL.String()); err != nil || o != t.origin {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errOtherOrigin
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	req = req.WithContext(ctx)
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	if ce := t.log.Check(zap.DebugLevel, "github call"); ce != nil {
		fields := []zap.Field{
			zap.String("method", req.Method), zap.String("path", req.URL.Path),
			zap.Int64("duration_ms", time.Since(start).Milliseconds()),
		}
		if err != nil {
			fields = append(fields, zap.String("error", err.Error()))
		} else {
			fields = append(fields, zap.Int("status", resp.StatusCode))
		}
		ce.Write(fields...)
	}
	if t.observe != nil {
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		t.observe(status, err, time.Since(start))
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: maxBody, done: cancel}
	return resp, nil
}

// errTooLarge is returned when an answer exceeds maxBody.
var errTooLarge = fmt.Errorf("the answer is larger than %d MiB", maxBody>>20)

// limitedBody bounds an answer and ends its call's timeout when it has
// been read or closed.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
	done context.CancelFunc
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a larger one.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		b.done()
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err != nil {
		b.done()
	}
	return n, err
}

func (b *limitedBody) Close() error {
	err := b.rc.Close()
	b.done()
	return err
}

// redactURL masks user info in a URL for a message.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	if at := strings.LastIndex(s, "@"); at >= 0 {
		return "[REDACTED]" + s[at:]
	}
	return truncate(s, 256)
}
