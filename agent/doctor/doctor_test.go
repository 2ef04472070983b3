package doctor

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

// The doctor is tested against fakes of everything it talks to: a fake
// control plane over TLS with a private CA (speaking the real protocol's
// challenge, hello and welcome, with a clock that can be set off), a
// CONNECT proxy that records what went through it, the fake AWS Secrets
// Manager and the fake GitHub. Each failure gets its own verdict and fix.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// --- a private CA ---------------------------------------------------------

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name, Organization: []string{"Doctor Test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverCert issues a certificate for 127.0.0.1.
func (ca *testCA) serverCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "control plane"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

func (ca *testCA) write(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ca-"+ca.cert.Subject.CommonName+".pem")
	if err := os.WriteFile(p, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// --- a fake control plane -------------------------------------------------

type fakeCP struct {
	srv  *httptest.Server
	skew time.Duration // added to the clock it reports

	mu     sync.Mutex // guards the fields below
	hellos []protocol.Hello
}

func newFakeCP(t *testing.T, ca *testCA, skew time.Duration) *fakeCP {
	t.Helper()
	f := &fakeCP{skew: skew}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+protocol.EnrollPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(protocol.EnrollResponse{AgentID: "agt_doctor1", Name: "doctor"})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(f.skew).UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	mux.HandleFunc("GET "+protocol.ConnectPath, func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		nonce := make([]byte, protocol.NonceSize)
		rand.Read(nonce)
		send := func(m *protocol.Message) {
			b, _ := protocol.Encode(m)
			_ = conn.WriteMessage(websocket.TextMessage, b)
		}
		send(&protocol.Message{Type: protocol.TypeChallenge, Challenge: &protocol.Challenge{
			Nonce: base64.RawURLEncoding.EncodeToString(nonce), ServerTime: time.Now().Add(f.skew)}})
		_, frame, err := conn.ReadMessage()
		if err != nil {
			return
		}
		m, err := protocol.Decode(frame)
		if err != nil || m.Hello == nil {
			return
		}
		f.mu.Lock()
		f.hellos = append(f.hellos, *m.Hello)
		f.mu.Unlock()
		send(&protocol.Message{Type: protocol.TypeWelcome, Welcome: &protocol.Welcome{
			SessionID: "ses_doctor1", HeartbeatInterval: protocol.Duration(time.Second), ServerTime: time.Now().Add(f.skew)}})
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "probe done"), time.Now().Add(time.Second))
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	})
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the wrong-CA test's handshake errors
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCP) probes() []protocol.Hello {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]protocol.Hello(nil), f.hellos...)
}

// --- a CONNECT proxy ------------------------------------------------------

type connectProxy struct {
	addr string

	mu      sync.Mutex // guards the fields below
	targets []string
	auth    []string
}

func newConnectProxy(t *testing.T) *connectProxy {
	t.Helper()
	p := &connectProxy{}
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		p.mu.Lock()
		p.targets = append(p.targets, r.Host)
		p.auth = append(p.auth, r.Header.Get("Proxy-Authorization"))
		p.mu.Unlock()
		up, err := net.DialTimeout("tcp", r.Host, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		down, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		_, _ = io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
		wg.Add(2)
		go func() { defer wg.Done(); _, _ = io.Copy(up, buf); up.(*net.TCPConn).CloseWrite() }()
		go func() { defer wg.Done(); _, _ = io.Copy(down, up); down.Close() }()
	}))
	t.Cleanup(func() {
		srv.Close()
		srv.CloseClientConnections()
		wg.Wait()
	})
	p.addr = srv.Listener.Addr().String()
	return p
}

func (p *connectProxy) seen() ([]string, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...), append([]string(nil), p.auth...)
}

// --- the setup ------------------------------------------------------------

type setup struct {
	t      *testing.T
	dir    string
	ca     *testCA
	cp     *fakeCP
	proxy  *connectProxy
	aws    *secretstest.AWS
	gh     *githubtest.Server
	config string
	opts   Options
}

type setupConf struct {
	skew     time.Duration
	proxy    string // "" no proxy; "up"; "down"
	caFile   string // "" the right CA; "other" another CA
	noEnroll bool
}

// newSetup writes an agent config for the fakes, enrolls the agent, and
// returns the doctor's options.
func newSetup(t *testing.T, c setupConf) *setup {
	t.Helper()
	s := &setup{t: t, dir: t.TempDir(), ca: newCA(t, "Orchestrator Test Root CA")}
	s.cp = newFakeCP(t, s.ca, c.skew)
	s.aws = secretstest.NewAWS(t)
	s.aws.Put(secretstest.AWSSecret{Name: "ci/github", String: `{"token":"canary-doctor-SECRET"}`})
	s.gh = githubtest.New(githubtest.Options{Mode: githubtest.GHES})
	t.Cleanup(s.gh.Close)
	ghCA, err := s.gh.WriteCAFile(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	caFile := s.ca.write(t, s.dir)
	if c.caFile == "other" {
		caFile = newCA(t, "Some Other CA").write(t, s.dir)
	}
	proxyLine := "proxy: direct"
	switch c.proxy {
	case "up":
		s.proxy = newConnectProxy(t)
		proxyLine = "proxy: http://doctor:proxy-secret-pw@" + s.proxy.addr
	case "down":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		proxyLine = "proxy: http://" + addr
	}
	secretsFile := filepath.Join(s.dir, "secrets.json")
	if err := os.WriteFile(secretsFile, []byte(`{"ci/file":{"token":"canary-doctor-SECRET"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(s.dir, "state")
	cfg := fmt.Sprintf(`control_plane: %s
state_dir: %s
ca_file: %s
%s
secrets:
  file: {path: %s}
  aws: {region: %s, endpoint: %s, max_backoff: 10ms}
policy:
  job_kinds: [resolve_credentials, test_connection]
  secrets:
    - {backend: aws, secret_name: ci/github, hosts: [%s]}
    - {backend: aws, secret_name: "ci/*"}
    - {backend: file, secret_name: ci/file}
github:
  ca_file: %s
  proxy: direct
`, s.cp.srv.URL, state, caFile, proxyLine, secretsFile, s.aws.Region, s.aws.URL, s.gh.URL(), ghCA)
	s.config = filepath.Join(s.dir, "agent.yaml")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if !c.noEnroll {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.ca.pem)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: s.cp.srv.URL, HTTPClient: &http.Client{Transport: tr},
			Token: "tok", StateDir: state}); err != nil {
			t.Fatalf("enroll: %v", err)
		}
	}
	s.opts = Options{
		ConfigPath: s.config, Getenv: func(string) string { return "" }, Version: "test", Timeout: 5 * time.Second,
		AWS: secrets.AWSOptions{
			Credentials: credentials.NewStaticCredentialsProvider(secretstest.AWSAccessKeyID, secretstest.AWSSecretAccessKey, ""),
			HTTPClient:  s.aws.Client(),
		},
	}
	return s
}

func (s *setup) run() *Report {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep := Run(ctx, s.opts)
	var b bytes.Buffer
	rep.Write(&b)
	s.t.Logf("agent doctor:\n%s", b.String())
	if strings.Contains(b.String(), "proxy-secret-pw") || strings.Contains(b.String(), "canary-doctor-SECRET") {
		s.t.Errorf("the report shows a secret:\n%s", b.String())
	}
	return rep
}

// want checks one result's verdict and that its text holds every part.
func want(t *testing.T, rep *Report, check string, v Verdict, parts ...string) {
	t.Helper()
	r, ok := rep.Get(check)
	if !ok {
		t.Errorf("no %q check", check)
		return
	}
	if r.Verdict != v {
		t.Errorf("%s: verdict %s, want %s (%s)", check, r.Verdict, v, r.Detail)
	}
	text := r.Detail + "\n" + r.Fix
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("%s: %q lacks %q", check, text, p)
		}
	}
}

// --- the tests ------------------------------------------------------------

func TestHealthyThroughProxy(t *testing.T) {
	t.Parallel()
	s := newSetup(t, setupConf{proxy: "up"})
	rep := s.run()
	if rep.Blocking() {
		t.Error("a healthy setup blocks")
	}
	for _, c := range []string{"config", "identity", "running agent", "proxy", "dns", "tcp", "tls", "http", "websocket", "clock", "secrets file", "secrets aws"} {
		want(t, rep, c, OK)
	}
	want(t, rep, "proxy", OK, "basic authentication")
	want(t, rep, "tcp", OK, "opened a tunnel to "+strings.TrimPrefix(s.cp.srv.URL, "https://"))
	want(t, rep, "tls", OK, "Orchestrator Test Root CA", "ca_file")
	want(t, rep, "websocket", OK, "agt_doctor1", "probe session ses_doctor1")
	want(t, rep, "secrets aws", OK, "ci/github", "not checked (patterns): ci/*")
	want(t, rep, "github "+s.gh.URL(), OK, "GitHub Enterprise Server 3.19.0")

	targets, auth := s.proxy.seen()
	cpHost := strings.TrimPrefix(s.cp.srv.URL, "https://")
	found := false
	for i, h := range targets {
		if h == cpHost {
			found = true
			if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("doctor:proxy-secret-pw")); auth[i] != want {
				t.Errorf("Proxy-Authorization %q, want %q", auth[i], want)
			}
		}
	}
	if !found {
		t.Errorf("the proxy saw %v, not %s", targets, cpHost)
	}
	probes := s.cp.probes()
	if len(probes) != 1 || !probes[0].Probe || probes[0].AgentID != "agt_doctor1" {
		t.Errorf("the control plane got hellos %+v, want one probe", probes)
	}
	if n := s.aws.Calls(); n != 0 {
		t.Errorf("%d GetSecretValue calls: the doctor must read no value", n)
	}
}

func TestWrongCA(t *testing.T) {
	t.Parallel()
	s := newSetup(t, setupConf{caFile: "other"})
	rep := s.run()
	if !rep.Blocking() {
		t.Error("an untrusted control plane does not block")
	}
	want(t, rep, "tls", Fail, "does not trust", "Orchestrator Test Root CA", "presented chain", "ca_file", "TLS-inspecting proxy")
	want(t, rep, "websocket", Skip)
	if len(s.cp.probes()) != 0 {
		t.Error("a probe was sent over an unverified connection")
	}
}

func TestProxyDown(t *testing.T) {
	t.Parallel()
	s := newSetup(t, setupConf{proxy: "down"})
	rep := s.run()
	if !rep.Blocking() {
		t.Error("a proxy that is down does not block")
	}
	want(t, rep, "proxy", Fail, "cannot reach the proxy", "the proxy setting", "proxy: in the config")
	want(t, rep, "websocket", Skip)
}

func TestMissingPermission(t *testing.T) {
	t.Parallel()
	s := newSetup(t, setupConf{})
	s.aws.FailDescribe(&secretstest.AWSError{Status: 400, Type: "AccessDeniedException",
		Message: "User: arn:aws:sts::111122223333:assumed-role/agent/i-0abc is not authorized to perform: secretsmanager:DescribeSecret"})
	rep := s.run()
	// Jobs need only GetSecretValue, which the doctor never calls: a denied
	// DescribeSecret is reported with its fix but does not block.
	if rep.Blocking() {
		t.Error("a denied DescribeSecret blocks the agent")
	}
	want(t, rep, "secrets aws", Warn, "ci/github", "secretsmanager:DescribeSecret", "assumed-role/agent/i-0abc", "aws-iam-policy.json")
	want(t, rep, "websocket", OK)
}

func TestSkewedClock(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		enroll bool
		from   string
	}{
		{"from welcome", true, "welcome"},
		{"from the Date header", false, "Date header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSetup(t, setupConf{skew: 10 * time.Minute, noEnroll: !tt.enroll})
			rep := s.run()
			if !rep.Blocking() {
				t.Error("a clock 10 minutes off does not block")
			}
			// (10m0s, or 10m1s from a Date header, which is to the second.)
			want(t, rep, "clock", Fail, "clock is 10m", "s behind", tt.from, "timedatectl set-ntp true")
		})
	}
}

func TestSmallSkewWarns(t *testing.T) {
	t.Parallel()
	s := newSetup(t, setupConf{skew: -2 * time.Minute})
	rep := s.run()
	want(t, rep, "clock", Warn, "ahead of")
	if rep.Blocking() {
		t.Error("a 2-minute skew blocks")
	}
}

func TestBadConfigStops(t *testing.T) {
	t.Parallel()
	s := newSetup(t, setupConf{})
	if err := os.Chmod(s.config, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := s.run()
	want(t, rep, "config", Fail, "chmod")
	if len(rep.Results) != 1 {
		t.Errorf("%d results after a bad config, want 1", len(rep.Results))
	}
}
