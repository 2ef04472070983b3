package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/secrets"
)

// Config is the agent's configuration: a YAML file (documented in
// deploy/agent.example.yaml), then AGENT_* environment variables over it.
type Config struct {
	// ControlPlane is the control plane's URL: https://host[:port] or
	// wss://host[:port]; http:// and ws:// only with InsecureAllowWS.
	ControlPlane string `yaml:"control_plane"`
	// StateDir holds the agent's identity (its key pair and id).
	StateDir string `yaml:"state_dir"`
	// CAFile is a PEM bundle of extra CAs to trust for the control plane
	// (a private CA), on top of the system's.
	CAFile string `yaml:"ca_file"`
	// InsecureAllowWS allows plain ws:// and http:// to the control plane:
	// for development and tests only.
	InsecureAllowWS bool `yaml:"insecure_allow_ws"`
	// Proxy is how the control plane is reached: empty uses HTTPS_PROXY /
	// NO_PROXY from the environment; "direct" uses none; an http:// or
	// socks5:// URL (user:password@ for basic auth) sends the websocket
	// through that proxy. See config_ops.go.
	Proxy string `yaml:"proxy"`
	// ControlPlaneCAPin, when set, pins the control plane's CA: a
	// certificate of the verified chain must have one of these SHA-256
	// digests (of its public key, or of the whole certificate).
	ControlPlaneCAPin string `yaml:"control_plane_ca_pin"`
	// Metrics configures the optional local /healthz, /readyz, /metrics
	// listener.
	Metrics MetricsConfig `yaml:"metrics"`
	// Concurrency is how many jobs run at once. Default 4.
	Concurrency int `yaml:"concurrency"`
	// DrainGrace is how long running jobs may take to finish on shutdown.
	// Default 30s.
	DrainGrace time.Duration `yaml:"drain_grace"`
	// Log configures logging.
	Log LogConfig `yaml:"log"`
	// Secrets configures the secret backends.
	Secrets SecretsConfig `yaml:"secrets"`
	// Policy is the agent's own policy: what it will do, whatever the
	// control plane asks.
	Policy policy.Config `yaml:"policy"`
	// GitHub configures the agent's calls to GitHub: a CA bundle, a proxy,
	// a timeout per request.
	GitHub github.Config `yaml:"github"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Format is "json", "console", or "auto" (console on a terminal, json
	// otherwise). Default auto.
	Format string `yaml:"format"`
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// File, when set, receives the logs too (stderr still does), rotated
	// by size: MaxSizeMB per file, MaxBackups old files kept for at most
	// MaxAgeDays. Defaults 50, 5, 30.
	File       string `yaml:"file"`
	MaxSizeMB  int    `yaml:"max_size_mb"`
	MaxBackups int    `yaml:"max_backups"`
	MaxAgeDays int    `yaml:"max_age_days"`
}

// SecretsConfig configures the secret backends. A backend that is not
// configured is not offered.
type SecretsConfig struct {
	File *FileSecretsConfig `yaml:"file"`
	// AWS configures AWS Secrets Manager (secrets.aws).
	AWS *secrets.AWSConfig `yaml:"aws"`
	// Azure configures Azure Key Vault (secrets.azure).
	Azure *secrets.AzureConfig `yaml:"azure"`
	// CacheTTL is how long a value read from AWS or Azure is reused, in
	// memory only; 0 (the default) reuses none. Either way, concurrent
	// jobs for one secret share one call to the secret manager.
	CacheTTL time.Duration `yaml:"cache_ttl"`
}

// MaxCacheTTL bounds secrets.cache_ttl: a rotated secret is seen within it.
const MaxCacheTTL = 15 * time.Minute

// FileSecretsConfig configures the file backend.
type FileSecretsConfig struct {
	// Path is a JSON or YAML file (mode 0600) mapping secret names to
	// objects of keys and values.
	Path string `yaml:"path"`
}

// Defaults.
const (
	DefaultConcurrency = 4
	DefaultDrainGrace  = 30 * time.Second
)

// DefaultStateDir is where the identity lives when state_dir is not set.
func DefaultStateDir() string {
	switch runtime.GOOS {
	case "windows":
		return `C:\ProgramData\orchestrator-agent`
	case "darwin":
		return "/Library/Application Support/orchestrator-agent"
	}
	return "/var/lib/orchestrator-agent"
}

// LoadConfig reads the config file at path (which must not be readable or
// writable by others), applies the environment through getenv, fills in
// defaults and validates the result.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	var c Config
	if path != "" {
		if err := checkFileMode(path, 0o007, "the config file"); err != nil {
			return c, err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := c.applyEnv(getenv); err != nil {
		return c, err
	}
	c.setDefaults()
	return c, c.Validate()
}

// applyEnv overrides settings from AGENT_* variables.
func (c *Config) applyEnv(getenv func(string) string) error {
	if getenv == nil {
		return nil
	}
	str := map[string]*string{
		"AGENT_CONTROL_PLANE": &c.ControlPlane,
		"AGENT_STATE_DIR":     &c.StateDir,
		"AGENT_CA_FILE":       &c.CAFile,
		"AGENT_LOG_FORMAT":    &c.Log.Format,
		"AGENT_LOG_LEVEL":     &c.Log.Level,
	}
	for k, p := range str {
		if v := getenv(k); v != "" {
			*p = v
		}
	}
	if v := getenv("AGENT_SECRETS_FILE"); v != "" {
		c.Secrets.File = &FileSecretsConfig{Path: v}
	}
	c.applySecretsEnv(getenv)
	if v := getenv("AGENT_SECRETS_CACHE_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("AGENT_SECRETS_CACHE_TTL=%q is not a duration such as 30s", v)
		}
		c.Secrets.CacheTTL = d
	}
	if v := getenv("AGENT_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("AGENT_CONCURRENCY=%q is not a number", v)
		}
		c.Concurrency = n
	}
	if v := getenv("AGENT_DRAIN_GRACE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("AGENT_DRAIN_GRACE=%q is not a duration such as 30s", v)
		}
		c.DrainGrace = d
	}
	if v := getenv("AGENT_INSECURE_ALLOW_WS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("AGENT_INSECURE_ALLOW_WS=%q is not true or false", v)
		}
		c.InsecureAllowWS = b
	}
	if err := c.applyOpsEnv(getenv); err != nil {
		return err
	}
	if v := getenv("AGENT_GITHUB_CA_FILE"); v != "" {
		c.GitHub.CAFile = v
	}
	if v := getenv("AGENT_GITHUB_PROXY"); v != "" {
		c.GitHub.Proxy = v
	}
	if v := getenv("AGENT_GITHUB_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("AGENT_GITHUB_TIMEOUT=%q is not a duration such as 30s", v)
		}
		c.GitHub.Timeout = d
	}
	return nil
}

// applySecretsEnv overrides the AWS and Azure settings from AGENT_AWS_* and
// AGENT_AZURE_* variables; setting one configures the backend.
func (c *Config) applySecretsEnv(getenv func(string) string) {
	aws := map[string]func(*secrets.AWSConfig) *string{
		"AGENT_AWS_REGION":   func(a *secrets.AWSConfig) *string { return &a.Region },
		"AGENT_AWS_PROFILE":  func(a *secrets.AWSConfig) *string { return &a.Profile },
		"AGENT_AWS_ROLE_ARN": func(a *secrets.AWSConfig) *string { return &a.RoleARN },
		"AGENT_AWS_ENDPOINT": func(a *secrets.AWSConfig) *string { return &a.Endpoint },
	}
	for k, field := range aws {
		if v := getenv(k); v != "" {
			if c.Secrets.AWS == nil {
				c.Secrets.AWS = &secrets.AWSConfig{}
			}
			*field(c.Secrets.AWS) = v
		}
	}
	azure := map[string]func(*secrets.AzureConfig) *string{
		"AGENT_AZURE_CREDENTIAL": func(a *secrets.AzureConfig) *string { return &a.Credential },
		"AGENT_AZURE_CLOUD":      func(a *secrets.AzureConfig) *string { return &a.Cloud },
		"AGENT_AZURE_CLIENT_ID":  func(a *secrets.AzureConfig) *string { return &a.ClientID },
		"AGENT_AZURE_TENANT_ID":  func(a *secrets.AzureConfig) *string { return &a.TenantID },
	}
	for k, field := range azure {
		if v := getenv(k); v != "" {
			if c.Secrets.Azure == nil {
				c.Secrets.Azure = &secrets.AzureConfig{}
			}
			*field(c.Secrets.Azure) = v
		}
	}
}

func (c *Config) setDefaults() {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir()
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.DrainGrace == 0 {
		c.DrainGrace = DefaultDrainGrace
	}
	if c.Log.Format == "" {
		c.Log.Format = "auto"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	c.setOpsDefaults()
}

// Validate checks every setting and names the one that is wrong.
func (c *Config) Validate() error {
	if _, err := ConnectURL(c.ControlPlane, c.InsecureAllowWS); err != nil {
		return err
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		return fmt.Errorf("concurrency: %d is outside 1..1024", c.Concurrency)
	}
	if c.DrainGrace < 0 || c.DrainGrace > time.Hour {
		return fmt.Errorf("drain_grace: %s is outside 0s..1h", c.DrainGrace)
	}
	switch c.Log.Format {
	case "auto", "json", "console":
	default:
		return fmt.Errorf("log.format: %q is not auto, json or console", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	if c.Secrets.File != nil && c.Secrets.File.Path == "" {
		return errors.New("secrets.file.path: required when secrets.file is set")
	}
	if c.Secrets.AWS != nil {
		a := *c.Secrets.AWS
		a.SetDefaults()
		if err := a.Validate(); err != nil {
			return err
		}
	}
	if c.Secrets.Azure != nil {
		a := *c.Secrets.Azure
		a.SetDefaults()
		if err := a.Validate(); err != nil {
			return err
		}
	}
	if c.Secrets.CacheTTL < 0 || c.Secrets.CacheTTL > MaxCacheTTL {
		return fmt.Errorf("secrets.cache_ttl: %s is outside 0s..%s", c.Secrets.CacheTTL, MaxCacheTTL)
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			return fmt.Errorf("ca_file: %w", err)
		}
	}
	if err := c.validateOps(); err != nil {
		return err
	}
	if _, err := policy.New(c.Policy); err != nil {
		return err
	}
	if err := c.GitHub.Validate(); err != nil {
		return err
	}
	return nil
}

// ConnectURL turns the control_plane setting into the websocket URL of the
// agent endpoint. https becomes wss; http and ws need allowInsecure.
func ConnectURL(controlPlane string, allowInsecure bool) (string, error) {
	u, err := baseURL(controlPlane, allowInsecure)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	case "http":
		u.Scheme = "ws"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v1/agent/connect"
	return u.String(), nil
}

// HTTPURL turns the control_plane setting into an HTTP URL for path.
func HTTPURL(controlPlane string, allowInsecure bool, path string) (string, error) {
	u, err := baseURL(controlPlane, allowInsecure)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "wss":
		u.Scheme = "https"
	case "ws":
		u.Scheme = "http"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	return u.String(), nil
}

func baseURL(controlPlane string, allowInsecure bool) (*url.URL, error) {
	if controlPlane == "" {
		return nil, errors.New("control_plane: required (for example https://cp.example.com)")
	}
	u, err := url.Parse(controlPlane)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("control_plane: %q is not a URL such as https://cp.example.com", RedactURL(controlPlane))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("control_plane: %q must not hold user info, a query or a fragment", u.Redacted())
	}
	switch u.Scheme {
	case "https", "wss":
	case "http", "ws":
		if !allowInsecure {
			return nil, fmt.Errorf("control_plane: %q is not encrypted; use https:// (or set insecure_allow_ws: true for development)", u.Redacted())
		}
	default:
		return nil, fmt.Errorf("control_plane: scheme %q is not https or wss", u.Scheme)
	}
	return u, nil
}

// checkFileMode refuses a file whose permission bits intersect deny, naming
// the file and the fix. It is a no-op on Windows, where ACLs govern access.
func checkFileMode(path string, deny os.FileMode, what string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if m := fi.Mode().Perm(); m&deny != 0 {
		want := m &^ deny
		return fmt.Errorf("%s %s has mode %04o, readable or writable by others; run: chmod %04o %s", what, path, m, want, path)
	}
	return nil
}
