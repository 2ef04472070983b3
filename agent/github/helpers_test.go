package github_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// Every test closes its fakes, services and proxies.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tokens the fakes know. Each is a canary: no result, error or log
// line may hold any form of it.
const (
	tokClassic     = "ghp_canaryCLASSIC7f3c9e1dSECRET0001"
	tokFullScopes  = "ghp_canaryFULLSCOPES7f3c9e1dSECRET02"
	tokNoOrgScope  = "ghp_canaryNOORGSCOPE7f3c9e1dSECRET03"
	tokFineGrained = "github_pat_canaryFINEGRAINED7f3c9e1dSECRET04"
	tokApp         = "ghs_canaryAPPINSTALL7f3c9e1dSECRET05"
	tokUnknown     = "ghp_canaryUNKNOWN7f3c9e1dSECRET06"
	tokFault       = "ghp_canaryFAULT7f3c9e1dSECRET07"
)

var allTokens = []string{tokClassic, tokFullScopes, tokNoOrgScope, tokFineGrained, tokApp, tokUnknown, tokFault}

var tokenExpiry = time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	orgPlatform = githubtest.Org{Login: "platform", ID: 1001, Description: "Platform team"}
	orgPayments = githubtest.Org{Login: "payments", ID: 1002}
	orgSSO      = githubtest.Org{Login: "octo-sso", ID: 1003, Description: "SAML protected", SSO: true}
	orgPublic   = githubtest.Org{Login: "public-org", ID: 2001, Description: "Anyone can see it"}
)

// ctx is a context that ends with the test or after a minute.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fixture is a fake GitHub, a Service that trusts it, and the log.
type fixture struct {
	t    *testing.T
	fake *githubtest.Server
	svc  *github.Service
	kind protocol.GitHubKind
	log  *zap.Logger
	logs *lockedBuffer
}

type fixtureOpt func(*fixtureConf)

type fixtureConf struct {
	fake   githubtest.Options
	config github.Config
	noCA   bool
	faults []githubtest.Fault // for tokFault (a classic token with every scope)
}

func withFaults(f ...githubtest.Fault) fixtureOpt {
	return func(c *fixtureConf) { c.faults = append(c.faults, f...) }
}
func withConfig(f func(*github.Config)) fixtureOpt { return func(c *fixtureConf) { f(&c.config) } }
func withFake(f func(*githubtest.Options)) fixtureOpt {
	return func(c *fixtureConf) { f(&c.fake) }
}
func withoutCA() fixtureOpt { return func(c *fixtureConf) { c.noCA = true } }

// newFixture starts a fake GitHub in mode with the standard tokens, and a
// Service whose github.ca_file holds the fake's certificate.
func newFixture(t *testing.T, mode githubtest.Mode, opts ...fixtureOpt) *fixture {
	t.Helper()
	c := fixtureConf{fake: githubtest.Options{Mode: mode, PublicOrgs: []githubtest.Org{orgPublic}}}
	c.config.Proxy = github.ProxyDirect
	for _, o := range opts {
		o(&c)
	}
	fake := githubtest.New(c.fake)
	t.Cleanup(fake.Close)
	addTokens(fake, c.faults)
	if !c.noCA && c.config.CAFile == "" {
		p, err := fake.WriteCAFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.config.CAFile = p
	}
	svc, err := github.New(github.Options{Config: c.config})
	if err != nil {
		t.Fatalf("github.New: %v", err)
	}
	t.Cleanup(svc.Close)
	logs := &lockedBuffer{}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(logs), zapcore.DebugLevel))
	kind := protocol.GitHubEnterpriseServer
	if mode == githubtest.Cloud {
		kind = protocol.GitHubCloud
	}
	f := &fixture{t: t, fake: fake, svc: svc, kind: kind, log: log, logs: logs}
	t.Cleanup(func() { f.checkNoCanary("log", logs.Bytes()) })
	return f
}

func addTokens(fake *githubtest.Server, faults []githubtest.Fault) {
	orgs := []githubtest.Org{orgPlatform, orgPayments}
	fake.AddToken(tokClassic, githubtest.Token{Type: githubtest.Classic, Login: "svc-orchestrator", UserID: 501,
		Scopes: []string{"repo", "read:org", "workflow", "read:packages"}, Orgs: orgs, ExpiresAt: tokenExpiry})
	fake.AddToken(tokFullScopes, githubtest.Token{Type: githubtest.Classic, Login: "svc-admin", UserID: 502,
		Scopes: []string{"repo", "workflow", "write:packages", "delete:packages", "admin:org", "notifications", "user",
			"delete_repo", "admin:enterprise", "audit_log", "codespace", "project"}, Orgs: append(orgs, orgSSO)})
	fake.AddToken(tokNoOrgScope, githubtest.Token{Type: githubtest.Classic, Login: "svc-noorg", UserID: 503, Scopes: []string{"repo"}, Orgs: orgs})
	fake.AddToken(tokFineGrained, githubtest.Token{Type: githubtest.FineGrained, Login: "svc-fine", UserID: 504, Orgs: orgs, ExpiresAt: tokenExpiry})
	fake.AddToken(tokApp, githubtest.Token{Type: githubtest.AppInstallation, Orgs: []githubtest.Org{orgPlatform}, ExpiresAt: tokenExpiry})
	fake.AddToken(tokFault, githubtest.Token{Type: githubtest.Classic, Login: "svc-fault", UserID: 507,
		Scopes: []string{"repo", "admin:org", "user"}, Orgs: append(orgs, orgSSO), Faults: faults})
}

// endpoint normalises the fake's URL for the fixture's kind.
func (f *fixture) endpoint() github.Endpoint {
	f.t.Helper()
	return f.endpointFor(f.kind, f.fake.URL())
}

func (f *fixture) endpointFor(kind protocol.GitHubKind, raw string) github.Endpoint {
	f.t.Helper()
	ep, err := github.Normalize(kind, raw, nil)
	if err != nil {
		f.t.Fatalf("Normalize(%s, %s): %v", kind, raw, err)
	}
	return ep
}

// test runs test_connection and checks the outcome for canaries.
func (f *fixture) test(ctx context.Context, token string, o github.TestOptions) (*protocol.ConnectionOutput, error) {
	f.t.Helper()
	return f.testAt(ctx, f.endpoint(), token, o)
}

func (f *fixture) testAt(ctx context.Context, ep github.Endpoint, token string, o github.TestOptions) (*protocol.ConnectionOutput, error) {
	f.t.Helper()
	out, err := f.svc.TestConnection(ctx, f.log, ep, redact.New(token), o)
	f.checkOutcome(out, err)
	return out, err
}

func (f *fixture) list(ctx context.Context, token string) (*protocol.OrganizationsOutput, error) {
	f.t.Helper()
	out, err := f.svc.ListOrganizations(ctx, f.log, f.endpoint(), redact.New(token))
	f.checkOutcome(out, err)
	return out, err
}

// checkOutcome checks that neither the output nor the error holds a token,
// and that both would travel on the wire.
func (f *fixture) checkOutcome(out any, err error) {
	f.t.Helper()
	if err != nil {
		f.checkNoCanary("error", []byte(err.Error()))
		var pe *protocol.Error
		if errors.As(err, &pe) {
			if verr := pe.Validate(); verr != nil {
				f.t.Errorf("the error would not travel: %v", verr)
			}
		}
	}
	b, jerr := json.Marshal(out)
	if jerr != nil {
		f.t.Fatalf("marshal output: %v", jerr)
	}
	f.checkNoCanary("output", b)
	var o protocol.Output
	switch v := out.(type) {
	case *protocol.ConnectionOutput:
		o.Connection = v
	case *protocol.OrganizationsOutput:
		o.Organizations = v
	}
	if (o.Connection != nil || o.Organizations != nil) && err == nil {
		m := &protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{JobID: "job_1", Attempt: 1, OK: true, Output: &o,
			StartedAt: time.Now(), FinishedAt: time.Now()}}
		if _, eerr := protocol.Encode(m); eerr != nil {
			f.t.Errorf("the output would not travel: %v", eerr)
		}
	}
}

func (f *fixture) checkNoCanary(what string, b []byte) {
	f.t.Helper()
	for _, tok := range allTokens {
		if form, ok := redact.Find(b, tok); ok {
			f.t.Errorf("the %s holds a token (as %q): %s", what, form, b)
		}
	}
}

// wantCode checks err's code and that its message holds each of want.
func wantCode(t *testing.T, err error, code protocol.ErrorCode, want ...string) *protocol.Error {
	t.Helper()
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		t.Fatalf("err = %T %v, want a %s *protocol.Error", err, err, code)
	}
	if pe.Code != code {
		t.Fatalf("code = %s, want %s; message: %s", pe.Code, code, pe.Message)
	}
	for _, w := range want {
		if !strings.Contains(pe.Message, w) {
			t.Errorf("message %q does not hold %q", pe.Message, w)
		}
	}
	return pe
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// connectProxy is an HTTP CONNECT proxy that records the targets asked for.
type connectProxy struct {
	srv     *http.Server
	ln      net.Listener
	mu      sync.Mutex
	targets []string
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newConnectProxy(t *testing.T) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = p.srv.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *connectProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *connectProxy) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

func (p *connectProxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, r.Host)
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", r.Host, 5*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "no hijack", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	_, _ = down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	if n := buf.Reader.Buffered(); n > 0 {
		b, _ := buf.Reader.Peek(n)
		_, _ = up.Write(b)
	}
	p.mu.Lock()
	p.conns = append(p.conns, up, down)
	p.mu.Unlock()
	p.wg.Add(2)
	go func() { defer p.wg.Done(); _, _ = io.Copy(up, down); up.Close() }()
	go func() { defer p.wg.Done(); _, _ = io.Copy(down, up); down.Close() }()
}
