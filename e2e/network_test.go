package e2e

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
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/control"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// The agent binary as a customer network has it: the control plane binary
// serves TLS with a certificate from a private CA made here, and the agent
// reaches it only through an HTTP CONNECT proxy with basic auth, which
// records what went through it. Then an operator's day: status, a log
// level change, a job followed by its id through both sides' logs and log
// files, both /metrics pages, agent doctor on the healthy setup and on a
// wrong CA.

// --- a private CA ---------------------------------------------------------

type privateCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newPrivateCA(t *testing.T, name string) *privateCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name, Organization: []string{"Customer IT"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &privateCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a server certificate for 127.0.0.1 and its key, PEM.
func (ca *privateCA) issue(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "controlplane.internal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.pem...)
	writeFile(t, certFile, chain)
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	return certFile, keyFile
}

func (ca *privateCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// --- a CONNECT proxy that records -----------------------------------------

type recordingProxy struct {
	addr string

	mu      sync.Mutex // guards the fields below
	targets []string
	auth    []string
}

func newRecordingProxy(t *testing.T) *recordingProxy {
	t.Helper()
	p := &recordingProxy{}
	var wg sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		p.mu.Lock()
		p.targets = append(p.targets, r.Host)
		p.auth = append(p.auth, r.Header.Get("Proxy-Authorization"))
		p.mu.Unlock()
		if r.Header.Get("Proxy-Authorization") == "" {
			w.Header().Set("Proxy-Authenticate", `Basic realm="proxy"`)
			http.Error(w, "authenticate", http.StatusProxyAuthRequired)
			return
		}
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
		go func() { defer wg.Done(); _, _ = io.Copy(up, buf); _ = up.(*net.TCPConn).CloseWrite() }()
		go func() { defer wg.Done(); _, _ = io.Copy(down, up); down.Close() }()
	}))
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		srv.CloseClientConnections()
		wg.Wait()
	})
	p.addr = srv.Listener.Addr().String()
	return p
}

func (p *recordingProxy) saw(target, auth string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, h := range p.targets {
		if h == target && p.auth[i] == auth {
			return true
		}
	}
	return false
}

// --- the test -------------------------------------------------------------

const proxyPassword = "e2e-proxy-PW-7f3c"

// runBin runs a binary to its end and returns its exit code and output.
func runBin(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binaries(t), name), args...)
	cmd.Env = append(os.Environ(), "AGENT_LOG_FORMAT=json")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
		}
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

func TestBinaryAgentThroughProxyWithPrivateCA(t *testing.T) {
	bin := binaries(t)
	_ = bin
	dir := t.TempDir()
	ca := newPrivateCA(t, "Customer Private Root CA")
	certFile, keyFile := ca.issue(t, filepath.Join(dir, "tls"))
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, ca.pem)

	// The control plane, over TLS, with a log file.
	cpLog := filepath.Join(dir, "cplogs", "controlplane.log")
	cpConfig := filepath.Join(dir, "controlplane.yaml")
	writeFile(t, cpConfig, []byte(fmt.Sprintf("heartbeat_interval: 500ms\nlog:\n  format: json\n  file: %s\n  max_size_mb: 1\n", cpLog)))
	addrFile := filepath.Join(dir, "addr")
	cp := startBin(t, "controlplane", "serve", "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0",
		"--addr-file", addrFile, "--config", cpConfig, "--tls-cert", certFile, "--tls-key", keyFile)
	var addr string
	eventually(t, 30*time.Second, "the control plane's address", func() bool {
		b, err := os.ReadFile(addrFile)
		addr = strings.TrimSpace(string(b))
		return err == nil && addr != ""
	})
	base := "https://" + addr
	tokenBytes, err := os.ReadFile(filepath.Join(dir, "data", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(tokenBytes))
	client := &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}
	t.Cleanup(client.CloseIdleConnections)
	api := func(method, path string, in any, want int, out any) {
		t.Helper()
		var body io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			body = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, body)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	var reg protocol.RegisterAgentResponse
	api("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "behind-proxy"}, http.StatusCreated, &reg)
	agentID := reg.Agent.ID

	// The agent, behind the proxy, trusting the private CA.
	proxy := newRecordingProxy(t)
	stateBase, err := os.MkdirTemp("", "netagent") // short: the control socket's path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stateBase) })
	secretsFile := filepath.Join(dir, "secrets.json")
	writeFile(t, secretsFile, []byte(`{"ci/github":{"username":"octo","token":"`+binCanary+`"}}`))
	agentLog := filepath.Join(dir, "agentlogs", "agent.log")
	agentConfig := func(ca string) string {
		return fmt.Sprintf(`control_plane: %s
ca_file: %s
proxy: http://e2e-user:%s@%s
state_dir: %s
drain_grace: 5s
log: {format: json, level: info, file: %s, max_size_mb: 1, max_backups: 2}
metrics: {listen: "127.0.0.1:0"}
secrets:
  file: {path: %s}
policy:
  job_kinds: [resolve_credentials]
  secrets:
    - {backend: file, secret_name: ci/github}
`, base, ca, proxyPassword, proxy.addr, filepath.Join(stateBase, "s"), agentLog, secretsFile)
	}
	config := filepath.Join(dir, "agent.yaml")
	writeFile(t, config, []byte(agentConfig(caFile)))

	if code, out := runBin(t, "agent", "enroll", "--config", config, "--token", reg.EnrollmentToken.Token); code != 0 {
		t.Fatalf("agent enroll: exit %d\n%s", code, out)
	}
	ag := startBin(t, "agent", "run", "--config", config)
	waitOnline := func() {
		t.Helper()
		eventually(t, 30*time.Second, "the agent online", func() bool {
			var v protocol.AgentView
			api("GET", "/api/v1/agents/"+agentID, nil, http.StatusOK, &v)
			return v.Status == protocol.AgentOnline
		})
	}
	waitOnline()
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("e2e-user:"+proxyPassword))
	if !proxy.saw(addr, wantAuth) {
		proxy.mu.Lock()
		t.Errorf("the proxy did not see CONNECT %s with the agent's credentials; it saw %v", addr, proxy.targets)
		proxy.mu.Unlock()
	}

	// agent status: the service manager's view and the agent's own.
	code, out := runBin(t, "agent", "status", "--config", config, "--json")
	var rep control.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.Connected || rep.AgentID != agentID || rep.MetricsListen == "" {
		t.Fatalf("agent status --json: exit %d\n%s", code, out)
	}
	code, out = runBin(t, "agent", "status", "--config", config)
	t.Logf("agent status:\n%s", out)
	if code != 0 || !strings.Contains(out, "connected since") {
		t.Errorf("agent status: exit %d\n%s", code, out)
	}

	// Debug for a while, without a restart.
	if code, out := runBin(t, "agent", "log-level", "debug", "--for", "10m", "--config", config); code != 0 || !strings.Contains(out, "logging at debug until") {
		t.Errorf("agent log-level: exit %d\n%s", code, out)
	}
	ag.waitLog(10*time.Second, `"log level changed"`, `"to":"debug"`)

	// A job, followed by its id on both sides.
	var j protocol.JobView
	api("POST", "/api/v1/jobs?wait=20s", protocol.SubmitJobRequest{
		AgentID: agentID, Kind: protocol.KindResolveCredentials,
		Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "file", SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"}},
	}, http.StatusCreated, &j)
	if j.State != protocol.JobSucceeded {
		t.Fatalf("job %s: %s %+v", j.ID, j.State, j.Error)
	}
	ag.waitLog(10*time.Second, `"job done"`, j.ID)
	cp.waitLog(10*time.Second, `"job finished"`, j.ID)
	t.Logf("grep %s, control plane:\n%s", j.ID, grepLines(cp.output(), j.ID))
	t.Logf("grep %s, agent:\n%s", j.ID, grepLines(ag.output(), j.ID))
	for _, f := range []struct{ name, path string }{{"agent", agentLog}, {"control plane", cpLog}} {
		b, err := os.ReadFile(f.path)
		if err != nil || !strings.Contains(string(b), j.ID) {
			t.Errorf("the %s's log file %s has no line of %s (%v)", f.name, f.path, j.ID, err)
		}
	}

	// Both /metrics pages show the job.
	agm := scrape(t, client, "http://"+rep.MetricsListen+"/metrics")
	wantMetric(t, "agent", agm, `orchestrator_agent_jobs_total{error_code="",kind="resolve_credentials",outcome="succeeded"}`, 1)
	wantMetric(t, "agent", agm, `orchestrator_agent_connected`, 1)
	cpm := scrape(t, client, base+"/metrics")
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_jobs_total{error_code="",kind="resolve_credentials",outcome="succeeded"}`, 1)
	wantMetric(t, "control plane", cpm, `orchestrator_controlplane_agents_connected`, 1)
	t.Logf("agent /metrics, orchestrator_agent_ lines:\n%s\ncontrol plane /metrics, orchestrator_controlplane_ lines:\n%s",
		grepLines(agm, "orchestrator_agent_j"), grepLines(cpm, "orchestrator_controlplane_j"))

	// agent doctor while the agent runs: its session is the proof.
	if code, out := runBin(t, "agent", "doctor", "--config", config); code != 0 || !strings.Contains(out, "the running agent's session") {
		t.Errorf("agent doctor (running): exit %d\n%s", code, out)
	}

	// Stop the agent (SIGTERM drains), then agent doctor probes itself.
	ag.signal(syscall.SIGTERM)
	if code := ag.wait(30 * time.Second); code != 0 {
		t.Errorf("agent exit code %d after SIGTERM", code)
	}
	code, out = runBin(t, "agent", "doctor", "--config", config)
	t.Logf("agent doctor (healthy):\n%s", out)
	if code != 0 || !strings.Contains(out, "probe session") || !strings.Contains(out, "opened a tunnel") {
		t.Errorf("agent doctor (healthy, stopped agent): exit %d\n%s", code, out)
	}
	cp.waitLog(10*time.Second, `"agent probe authenticated"`, agentID)

	// A wrong CA: the doctor says which issuer it saw and names ca_file.
	other := filepath.Join(dir, "other-ca.pem")
	writeFile(t, other, newPrivateCA(t, "Some Other CA").pem)
	wrong := filepath.Join(dir, "agent-wrong-ca.yaml")
	writeFile(t, wrong, []byte(agentConfig(other)))
	code, out = runBin(t, "agent", "doctor", "--config", wrong)
	t.Logf("agent doctor (wrong CA):\n%s", out)
	if code != 1 || !strings.Contains(out, "[FAIL]  tls") || !strings.Contains(out, "Customer Private Root CA") || !strings.Contains(out, "ca_file") {
		t.Errorf("agent doctor (wrong CA): exit %d\n%s", code, out)
	}

	// No secret anywhere: not the canary, not the proxy's password.
	agentFile, _ := os.ReadFile(agentLog)
	cpFile, _ := os.ReadFile(cpLog)
	for where, b := range map[string][]byte{
		"agent output": []byte(ag.output()), "agent log file": agentFile,
		"control plane output": []byte(cp.output()), "control plane log file": cpFile,
	} {
		if form, found := redact.Find(b, binCanary); found {
			t.Errorf("the canary secret (%s form) leaked into %s", form, where)
		}
		if bytes.Contains(b, []byte(proxyPassword)) {
			t.Errorf("the proxy's password is in %s", where)
		}
	}
}
