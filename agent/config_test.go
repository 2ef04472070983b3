package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// writeConfig writes a config file with mode 0600 and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// env is a getenv over a map.
func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(writeConfig(t, "control_plane: https://cp.example.com\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != DefaultStateDir() || c.Concurrency != DefaultConcurrency || c.DrainGrace != DefaultDrainGrace ||
		c.Log.Format != "auto" || c.Log.Level != "info" || c.InsecureAllowWS || c.Secrets.File != nil || c.CAFile != "" {
		t.Errorf("defaults: %+v", c)
	}
	// An empty file with the control plane from the environment.
	c, err = LoadConfig(writeConfig(t, ""), env(map[string]string{"AGENT_CONTROL_PLANE": "wss://cp.example.com"}))
	if err != nil || c.ControlPlane != "wss://cp.example.com" {
		t.Errorf("empty file: %+v, %v", c, err)
	}
	// No file at all.
	c, err = LoadConfig("", env(map[string]string{"AGENT_CONTROL_PLANE": "https://cp.example.com"}))
	if err != nil || c.Concurrency != DefaultConcurrency {
		t.Errorf("no file: %+v, %v", c, err)
	}
	// A nil getenv reads no environment.
	if _, err := LoadConfig(writeConfig(t, "control_plane: https://cp.example.com\n"), nil); err != nil {
		t.Errorf("nil getenv: %v", err)
	}
	// Concurrency 0 means the default, like every zero setting.
	c, err = LoadConfig(writeConfig(t, "control_plane: https://cp.example.com\nconcurrency: 0\n"), nil)
	if err != nil || c.Concurrency != DefaultConcurrency {
		t.Errorf("concurrency 0: %d, %v; want the default %d", c.Concurrency, err, DefaultConcurrency)
	}
}

func TestLoadConfigEnvWins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := writeConfig(t, `control_plane: https://file.example.com
state_dir: /file/state
ca_file: /file/ca.pem
insecure_allow_ws: false
concurrency: 2
drain_grace: 10s
log:
  format: console
  level: warn
secrets:
  file:
    path: /file/secrets.json
policy:
  job_kinds: [resolve_credentials]
`)
	c, err := LoadConfig(file, env(map[string]string{
		"AGENT_CONTROL_PLANE":     "http://env.example.com:8080/prefix",
		"AGENT_STATE_DIR":         "/env/state",
		"AGENT_CA_FILE":           ca,
		"AGENT_INSECURE_ALLOW_WS": "true",
		"AGENT_CONCURRENCY":       "16",
		"AGENT_DRAIN_GRACE":       "1m30s",
		"AGENT_LOG_FORMAT":        "json",
		"AGENT_LOG_LEVEL":         "debug",
		"AGENT_SECRETS_FILE":      "/env/secrets.json",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ControlPlane: "http://env.example.com:8080/prefix", StateDir: "/env/state", CAFile: ca, InsecureAllowWS: true,
		Concurrency: 16, DrainGrace: 90 * time.Second, Log: LogConfig{Format: "json", Level: "debug"},
	}
	if c.ControlPlane != want.ControlPlane || c.StateDir != want.StateDir || c.CAFile != want.CAFile || c.InsecureAllowWS != want.InsecureAllowWS ||
		c.Concurrency != want.Concurrency || c.DrainGrace != want.DrainGrace || c.Log != want.Log ||
		c.Secrets.File == nil || c.Secrets.File.Path != "/env/secrets.json" {
		t.Errorf("env over file:\n got %+v (secrets %+v)\nwant %+v", c, c.Secrets.File, want)
	}
	if len(c.Policy.JobKinds) != 1 {
		t.Errorf("the policy from the file was lost: %+v", c.Policy)
	}
	// An empty variable does not override.
	c, err = LoadConfig(file, env(map[string]string{"AGENT_STATE_DIR": "", "AGENT_CA_FILE": ""}))
	if err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("the file's missing ca_file: %v, want a ca_file error (empty variables keep the file's values)", err)
	}

	for name, bad := range map[string]map[string]string{
		"AGENT_CONCURRENCY":       {"AGENT_CONCURRENCY": "four"},
		"AGENT_DRAIN_GRACE":       {"AGENT_DRAIN_GRACE": "30"},
		"AGENT_INSECURE_ALLOW_WS": {"AGENT_INSECURE_ALLOW_WS": "yes please"},
	} {
		if _, err := LoadConfig(file, env(bad)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: %v, want an error naming the variable", name, bad[name], err)
		}
	}
}

func TestLoadConfigValidation(t *testing.T) {
	t.Parallel()
	const cp = "control_plane: https://cp.example.com\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"no control plane", "concurrency: 2\n", []string{"control_plane", "required"}},
		{"ftp control plane", "control_plane: ftp://cp.example.com\n", []string{"control_plane", `"ftp"`}},
		{"http without insecure", "control_plane: http://cp.example.com\n", []string{"control_plane", "insecure_allow_ws"}},
		{"ws without insecure", "control_plane: ws://cp.example.com\n", []string{"control_plane", "insecure_allow_ws"}},
		{"no host", "control_plane: https://\n", []string{"control_plane"}},
		{"no scheme", "control_plane: cp.example.com\n", []string{"control_plane"}},
		{"user info", "control_plane: https://user:pw@cp.example.com\n", []string{"control_plane", "user info"}},
		{"query", "control_plane: https://cp.example.com/?x=1\n", []string{"control_plane"}},
		{"negative concurrency", cp + "concurrency: -1\n", []string{"concurrency", "-1"}},
		{"concurrency 2000", cp + "concurrency: 2000\n", []string{"concurrency", "2000", "1..1024"}},
		{"negative grace", cp + "drain_grace: -1s\n", []string{"drain_grace"}},
		{"grace too long", cp + "drain_grace: 2h\n", []string{"drain_grace"}},
		{"bad log level", cp + "log:\n  level: verbose\n", []string{"log.level", "verbose"}},
		{"bad log format", cp + "log:\n  format: xml\n", []string{"log.format", "xml"}},
		{"unknown key", cp + "concurency: 4\n", []string{"concurency"}},
		{"unknown nested key", cp + "log:\n  levle: info\n", []string{"levle"}},
		{"secrets.file without path", cp + "secrets:\n  file: {}\n", []string{"secrets.file.path"}},
		{"unknown backend", cp + "secrets:\n  vault: {}\n", []string{"vault"}},
		{"missing ca_file", cp + "ca_file: /no/such/ca.pem\n", []string{"ca_file"}},
		{"bad policy kind", cp + "policy:\n  job_kinds: [deploy]\n", []string{"policy.job_kinds[0]", "deploy"}},
		{"bad policy host", cp + "policy:\n  secrets:\n    - backend: file\n      secret_name: x\n      hosts: [http://git.example.com]\n", []string{"policy.secrets[0].hosts[0]"}},
		{"wrong type", cp + "concurrency: many\n", []string{"many"}},
		{"not YAML", "control_plane: [\n", []string{"agent.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadConfig(writeConfig(t, tt.yaml), nil)
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to mention %q", err, w)
				}
			}
		})
	}
	// The same settings are fine where they are allowed.
	for _, ok := range []string{
		"control_plane: http://localhost:8080\ninsecure_allow_ws: true\n",
		"control_plane: ws://localhost:8080\ninsecure_allow_ws: true\n",
		cp + "concurrency: 1024\ndrain_grace: 1h\n",
		cp + "drain_grace: 0s\n",
		cp + "secrets:\n  file:\n    path: /etc/agent/secrets.json\n",
	} {
		if _, err := LoadConfig(writeConfig(t, ok), nil); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

func TestLoadConfigFileMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows: ACLs, not mode bits, guard the file")
	}
	t.Parallel()
	for mode, want := range map[os.FileMode]string{
		0o644: "chmod 0640",
		0o666: "chmod 0660",
		0o604: "chmod 0600",
		0o602: "chmod 0600",
		0o601: "chmod 0600",
	} {
		path := writeConfig(t, "control_plane: https://cp.example.com\n")
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path, nil)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("mode %04o: %v, want a refusal naming the file and %q", mode, err, want)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o640, 0o400} {
		path := writeConfig(t, "control_plane: https://cp.example.com\n")
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path, nil); err != nil {
			t.Errorf("mode %04o: %v, want it accepted", mode, err)
		}
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "config file") {
		t.Errorf("missing file: %v, want an error about the config file", err)
	}
}

func TestConnectURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		insecure bool
		want     string
		wantHTTP string
		err      string
	}{
		{in: "https://cp.example.com", want: "wss://cp.example.com/api/v1/agent/connect", wantHTTP: "https://cp.example.com/api/v1/agent/enroll"},
		{in: "https://cp.example.com/", want: "wss://cp.example.com/api/v1/agent/connect", wantHTTP: "https://cp.example.com/api/v1/agent/enroll"},
		{in: "https://cp.example.com:8443/orchestrator", want: "wss://cp.example.com:8443/orchestrator/api/v1/agent/connect", wantHTTP: "https://cp.example.com:8443/orchestrator/api/v1/agent/enroll"},
		{in: "https://cp.example.com/orchestrator/", want: "wss://cp.example.com/orchestrator/api/v1/agent/connect", wantHTTP: "https://cp.example.com/orchestrator/api/v1/agent/enroll"},
		{in: "wss://cp.example.com", want: "wss://cp.example.com/api/v1/agent/connect", wantHTTP: "https://cp.example.com/api/v1/agent/enroll"},
		{in: "wss://[::1]:9443/x", want: "wss://[::1]:9443/x/api/v1/agent/connect", wantHTTP: "https://[::1]:9443/x/api/v1/agent/enroll"},
		{in: "http://127.0.0.1:8080", insecure: true, want: "ws://127.0.0.1:8080/api/v1/agent/connect", wantHTTP: "http://127.0.0.1:8080/api/v1/agent/enroll"},
		{in: "ws://localhost:8080/", insecure: true, want: "ws://localhost:8080/api/v1/agent/connect", wantHTTP: "http://localhost:8080/api/v1/agent/enroll"},
		{in: "https://cp.example.com", insecure: true, want: "wss://cp.example.com/api/v1/agent/connect", wantHTTP: "https://cp.example.com/api/v1/agent/enroll"},
		{in: "http://127.0.0.1:8080", err: "insecure_allow_ws"},
		{in: "ws://127.0.0.1:8080", err: "insecure_allow_ws"},
		{in: "ftp://cp.example.com", insecure: true, err: "scheme"},
		{in: "", err: "required"},
		{in: "cp.example.com:443", err: "control_plane"},
		{in: "https://u:p@cp.example.com", err: "user info"},
		{in: "https://cp.example.com/#frag", err: "fragment"},
	}
	for _, tt := range tests {
		got, err := ConnectURL(tt.in, tt.insecure)
		gotHTTP, herr := HTTPURL(tt.in, tt.insecure, "/api/v1/agent/enroll")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || herr == nil {
				t.Errorf("ConnectURL(%q, %v) = %q, %v; HTTPURL err %v; want an error mentioning %q", tt.in, tt.insecure, got, err, herr, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "p@") {
				t.Errorf("the error shows the user info: %v", err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ConnectURL(%q, %v) = %q, %v; want %q", tt.in, tt.insecure, got, err, tt.want)
		}
		if herr != nil || gotHTTP != tt.wantHTTP {
			t.Errorf("HTTPURL(%q, %v) = %q, %v; want %q", tt.in, tt.insecure, gotHTTP, herr, tt.wantHTTP)
		}
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	for _, c := range []LogConfig{{Format: "json", Level: "debug"}, {Format: "console", Level: "info"}, {Format: "auto", Level: "warn"}, {Format: "", Level: "error"}} {
		if _, err := NewLogger(c); err != nil {
			t.Errorf("NewLogger(%+v): %v", c, err)
		}
	}
	if _, err := NewLogger(LogConfig{Format: "json", Level: "loud"}); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("bad level: %v", err)
	}
	if _, err := NewLogger(LogConfig{Format: "xml", Level: "info"}); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("bad format: %v", err)
	}
}
