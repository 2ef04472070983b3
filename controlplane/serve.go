package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
)

// ServeConfig is `controlplane serve`'s configuration: flags over the
// environment over the optional YAML file.
type ServeConfig struct {
	// Listen is the address of the HTTP API and the agents' endpoint.
	Listen string `yaml:"listen"`
	// DataDir holds the embedded store (and the generated admin token).
	DataDir string `yaml:"data_dir"`
	// TLSCertFile and TLSKeyFile serve HTTPS when both are set.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// AdminTokenFile holds the admin token. Without it, the environment's
	// CONTROLPLANE_ADMIN_TOKEN; without that, DataDir/admin-token,
	// created on first start.
	AdminTokenFile string `yaml:"admin_token_file"`
	// AddrFile, when set, receives the address actually listened on (for
	// scripts that listen on port 0).
	AddrFile string `yaml:"addr_file"`
	// Durations; zero means the default of Options.
	HeartbeatInterval  time.Duration `yaml:"heartbeat_interval"`
	EnrollmentTokenTTL time.Duration `yaml:"enrollment_token_ttl"`
	DefaultJobTimeout  time.Duration `yaml:"default_job_timeout"`
	MaxJobTimeout      time.Duration `yaml:"max_job_timeout"`
	Log                LogConfig     `yaml:"log"`
}

// DefaultListen is where the control plane listens unless told otherwise.
const DefaultListen = "127.0.0.1:8080"

// LoadServeConfig reads the optional YAML file; unknown keys are errors.
func LoadServeConfig(path string) (ServeConfig, error) {
	var c ServeConfig
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// adminToken finds or creates the admin token, and says where it came from
// (never the token itself).
func adminToken(c ServeConfig, getenv func(string) string) (token, source string, err error) {
	if c.AdminTokenFile != "" {
		b, err := os.ReadFile(c.AdminTokenFile)
		if err != nil {
			return "", "", fmt.Errorf("admin_token_file: %w", err)
		}
		return strings.TrimSpace(string(b)), c.AdminTokenFile, nil
	}
	if v := getenv("CONTROLPLANE_ADMIN_TOKEN"); v != "" {
		return v, "the environment variable CONTROLPLANE_ADMIN_TOKEN", nil
	}
	path := filepath.Join(c.DataDir, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), path, nil
	}
	var raw [32]byte
	rand.Read(raw[:])
	token = base64.RawURLEncoding.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("create the admin token file: %w", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return "", "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", "", err
	}
	return token, path + " (created)", f.Close()
}

// Serve runs the control plane until ctx ends: it opens the store in
// DataDir, serves the API and the agents' endpoint on Listen, and on the
// way out closes agent sessions and the store.
func Serve(ctx context.Context, c ServeConfig, log *zap.Logger, version string, getenv func(string) string) error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.DataDir == "" {
		return errors.New("--data: the data directory is required")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	unlock, err := lockDataDir(c.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := sqlite.Open(ctx, c.DataDir, sqlite.Options{})
	if err != nil {
		return fmt.Errorf("open the store in %s: %w", c.DataDir, err)
	}
	defer st.Close()
	token, source, err := adminToken(c, getenv)
	if err != nil {
		return err
	}
	srv, err := New(Options{
		Store: st, AdminToken: token, Logger: log, Version: version,
		HeartbeatInterval: c.HeartbeatInterval, EnrollmentTokenTTL: c.EnrollmentTokenTTL,
		DefaultJobTimeout: c.DefaultJobTimeout, MaxJobTimeout: c.MaxJobTimeout,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", c.Listen, err)
	}
	addr := ln.Addr().String()
	if c.AddrFile != "" {
		if err := os.WriteFile(c.AddrFile, []byte(addr+"\n"), 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("--addr-file: %w", err)
		}
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	scheme := "http"
	errc := make(chan error, 1)
	go func() {
		if c.TLSCertFile != "" {
			errc <- hs.ServeTLS(ln, c.TLSCertFile, c.TLSKeyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	if c.TLSCertFile != "" {
		scheme = "https"
	}
	log.Info("control plane started", zap.String("addr", addr), zap.String("url", scheme+"://"+addr),
		zap.String("data_dir", c.DataDir), zap.String("admin_token_from", source), zap.String("version", version),
		zap.String("go", runtime.Version()))
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("control plane stopping")
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(shut)
	if err := srv.Close(shut); err != nil {
		log.Warn("close", zap.Error(err))
	}
	log.Info("control plane stopped")
	return nil
}
