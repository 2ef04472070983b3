package agent

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// fakeEnroll is the control plane's enrollment endpoint: it records each
// request and answers with the scripted status and body.
type fakeEnroll struct {
	ts *httptest.Server

	mu       sync.Mutex
	requests []protocol.EnrollRequest
	status   int
	body     string // when empty and status is 200, an EnrollResponse
}

func newFakeEnroll(t *testing.T) *fakeEnroll {
	t.Helper()
	f := &fakeEnroll{status: http.StatusOK}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+protocol.EnrollPath, func(w http.ResponseWriter, r *http.Request) {
		var req protocol.EnrollRequest
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &req); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, req)
		status, body := f.status, f.body
		f.mu.Unlock()
		if body == "" && status == http.StatusOK {
			b, _ := json.Marshal(protocol.EnrollResponse{AgentID: "agt_enrolled", Name: "edge-1"})
			body = string(b)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
	f.ts = httptest.NewServer(mux)
	t.Cleanup(f.ts.Close)
	return f
}

func (f *fakeEnroll) answer(status int, body string) {
	f.mu.Lock()
	f.status, f.body = status, body
	f.mu.Unlock()
}

func (f *fakeEnroll) got() []protocol.EnrollRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]protocol.EnrollRequest(nil), f.requests...)
}

func (f *fakeEnroll) opts(dir string) EnrollOptions {
	return EnrollOptions{
		ControlPlane: f.ts.URL, InsecureAllowWS: true, HTTPClient: f.ts.Client(),
		Token: "oet_single-use", StateDir: dir, Hostname: "vm-1", Version: "1.2.3",
	}
}

func TestEnroll(t *testing.T) {
	t.Parallel()
	f := newFakeEnroll(t)
	dir := filepath.Join(t.TempDir(), "state", "agent") // made by Enroll
	id, err := Enroll(testCtx(t), f.opts(dir))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	reqs := f.got()
	if len(reqs) != 1 {
		t.Fatalf("%d enrollment requests, want 1", len(reqs))
	}
	req := reqs[0]
	if req.Token != "oet_single-use" || req.Hostname != "vm-1" || req.AgentVersion != "1.2.3" {
		t.Errorf("request %+v", req)
	}
	pub, err := protocol.ParsePublicKey(req.PublicKey)
	if err != nil {
		t.Fatalf("the request's public key: %v", err)
	}
	if !pub.Equal(id.Signer().Public()) {
		t.Error("the enrolled public key is not the identity's")
	}
	if id.AgentID != "agt_enrolled" || id.ControlPlane != f.ts.URL || len(id.FingerprintKey) != 32 || id.EnrolledAt.IsZero() {
		t.Errorf("identity %+v", id)
	}
	// The private key stays home: it is not in the request.
	if raw, _ := json.Marshal(req); redact.Contains(raw, string(id.PrivateKey)) || redact.Contains(raw, string(ed25519.NewKeyFromSeed(id.PrivateKey))) {
		t.Error("the request holds the private key")
	}

	path := filepath.Join(dir, IdentityFile)
	if runtime.GOOS != "windows" {
		for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s has mode %04o, want %04o", p, got, want)
			}
		}
	}
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	if loaded.AgentID != id.AgentID || !bytes.Equal(loaded.PrivateKey, id.PrivateKey) || !bytes.Equal(loaded.FingerprintKey, id.FingerprintKey) || !loaded.EnrolledAt.Equal(id.EnrolledAt) {
		t.Errorf("loaded %+v, want %+v", loaded, id)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only %s (no temporary file left)", len(entries), IdentityFile)
	}

	// No overwrite without Force, and nothing is sent.
	before, _ := os.ReadFile(path)
	if _, err := Enroll(testCtx(t), f.opts(dir)); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second Enroll: %v, want a refusal that mentions --force", err)
	}
	if n := len(f.got()); n != 1 {
		t.Errorf("%d requests after the refused Enroll, want 1", n)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the refused Enroll changed the identity file")
	}
	// With Force, a new key replaces the old one.
	o := f.opts(dir)
	o.Force = true
	again, err := Enroll(testCtx(t), o)
	if err != nil {
		t.Fatalf("Enroll with Force: %v", err)
	}
	if bytes.Equal(again.PrivateKey, id.PrivateKey) {
		t.Error("re-enrollment kept the old key")
	}
	if loaded, _ := LoadIdentity(dir); !bytes.Equal(loaded.PrivateKey, again.PrivateKey) {
		t.Error("the identity file does not hold the new key")
	}
}

func TestEnrollNarrowsStateDir(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits")
	}
	t.Parallel()
	f := newFakeEnroll(t)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Enroll(testCtx(t), f.opts(dir)); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %04o, want 0700", fi.Mode().Perm())
	}
}

func TestEnrollRefused(t *testing.T) {
	t.Parallel()
	f := newFakeEnroll(t)
	tests := []struct {
		name   string
		status int
		body   string
		want   []string
		code   protocol.ErrorCode
	}{
		{"token invalid", http.StatusUnauthorized, `{"error":{"code":"enrollment_token_invalid","message":"the enrollment token is unknown, already used or expired"}}`,
			[]string{"401", "enrollment_token_invalid", "already used"}, protocol.CodeTokenInvalid},
		{"revoked", http.StatusConflict, `{"error":{"code":"agent_revoked","message":"agent agt_x is revoked"}}`, []string{"409", "agent_revoked"}, protocol.CodeAgentRevoked},
		{"not JSON", http.StatusBadGateway, `<html>bad gateway</html>`, []string{"HTTP 502"}, ""},
		{"no code", http.StatusInternalServerError, `{"error":{}}`, []string{"HTTP 500"}, ""},
		{"not an answer", http.StatusOK, `{"hello":"world"}`, []string{"not an enrollment response"}, ""},
		{"not JSON ok", http.StatusOK, `ok`, []string{"not an enrollment response"}, ""},
	}
	for _, tt := range tests {
		dir := filepath.Join(t.TempDir(), "state")
		f.answer(tt.status, tt.body)
		_, err := Enroll(testCtx(t), f.opts(dir))
		if err == nil {
			t.Errorf("%s: Enroll succeeded", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q, want it to mention %q", tt.name, err, w)
			}
		}
		var pe *protocol.Error
		if tt.code != "" && (!errors.As(err, &pe) || pe.Code != tt.code) {
			t.Errorf("%s: error %v does not wrap the API error %s", tt.name, err, tt.code)
		}
		if _, err := os.Stat(filepath.Join(dir, IdentityFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: an identity was written after a refusal", tt.name)
		}
	}

	// Settings checked before anything is sent.
	o := f.opts(t.TempDir())
	o.InsecureAllowWS = false
	if _, err := Enroll(testCtx(t), o); err == nil || !strings.Contains(err.Error(), "insecure_allow_ws") {
		t.Errorf("http without InsecureAllowWS: %v", err)
	}
	o = f.opts(t.TempDir())
	o.ControlPlane = "http://127.0.0.1:1" // nothing listens
	o.HTTPClient = nil
	if _, err := Enroll(testCtx(t), o); err == nil || !strings.Contains(err.Error(), "enroll at") {
		t.Errorf("unreachable control plane: %v", err)
	}
}

func TestLoadIdentity(t *testing.T) {
	t.Parallel()
	good := testIdentity(t, "agt_good")
	write := func(t *testing.T, v any, mode os.FileMode) string {
		t.Helper()
		dir := t.TempDir()
		var b []byte
		switch v := v.(type) {
		case string:
			b = []byte(v)
		default:
			b, _ = json.Marshal(v)
		}
		path := filepath.Join(dir, IdentityFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	dir := write(t, good, 0o600)
	id, err := LoadIdentity(dir)
	if err != nil || id.AgentID != "agt_good" || !bytes.Equal(id.PrivateKey, good.PrivateKey) {
		t.Errorf("LoadIdentity = %+v, %v", id, err)
	}

	missing := t.TempDir()
	if _, err := LoadIdentity(missing); err == nil || !strings.Contains(err.Error(), "enroll first") || !strings.Contains(err.Error(), missing) {
		t.Errorf("no identity: %v, want a message to enroll first naming the directory", err)
	}

	incomplete := good
	incomplete.FingerprintKey = nil
	short := good
	short.PrivateKey = good.PrivateKey[:16]
	noID := good
	noID.AgentID = ""
	for name, v := range map[string]any{
		"damaged":            `{"agent_id":"agt_x","private_key":`,
		"not JSON":           "identity",
		"wrong types":        `{"agent_id":5}`,
		"no fingerprint key": incomplete,
		"short key":          short,
		"no agent id":        noID,
	} {
		_, err := LoadIdentity(write(t, v, 0o600))
		if err == nil || !strings.Contains(err.Error(), "enroll again") {
			t.Errorf("%s: %v, want a message to enroll again", name, err)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), good.PrivateKey) {
			t.Errorf("%s: the error shows the key", name)
		}
	}

	if runtime.GOOS == "windows" {
		return
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		dir := write(t, good, mode)
		_, err := LoadIdentity(dir)
		if err == nil || !strings.Contains(err.Error(), "chmod 0600") {
			t.Errorf("identity with mode %04o: %v, want a refusal that says chmod 0600", mode, err)
		}
	}
}
