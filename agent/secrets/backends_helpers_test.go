package secrets_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

// The cloud backends' tests run the real SDK clients against the fakes of
// secretstest. Every backend logs at debug level into a buffer that is
// checked for the canary when the test ends.

// logBuffer is a zap sink that keeps what was written.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the JSON log lines with message msg.
func (b *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", l)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// debugLogger returns a logger at debug level into a buffer, which must
// never hold the canary: checked when the test ends.
func debugLogger(t *testing.T) (*zap.Logger, *logBuffer) {
	t.Helper()
	b := &logBuffer{}
	enc := zap.NewProductionEncoderConfig()
	enc.MessageKey = "msg"
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), b, zapcore.DebugLevel))
	t.Cleanup(func() {
		if form, leaked := redact.Find([]byte(b.String()), canary); leaked {
			t.Errorf("the log leaks the canary as %q:\n%s", form, b.String())
		}
	})
	return log, b
}

// awsValue is a secret value holding the canary as the token.
const awsValue = `{"username": "bot", "token": "` + canary + `"}`

// newAWSBackend builds the AWS backend against the fake with explicit
// static credentials: nothing is read from the environment, ~/.aws or IMDS.
func newAWSBackend(t *testing.T, fake *secretstest.AWS, log *zap.Logger, mutate func(*secrets.AWSConfig)) *secrets.AWS {
	t.Helper()
	c := secrets.AWSConfig{Region: fake.Region, Endpoint: fake.URL, MaxBackoff: 10 * time.Millisecond}
	if mutate != nil {
		mutate(&c)
	}
	b, err := secrets.NewAWS(context.Background(), c, secrets.AWSOptions{
		Credentials: credentials.NewStaticCredentialsProvider(secretstest.AWSAccessKeyID, secretstest.AWSSecretAccessKey, ""),
		HTTPClient:  fake.Client(),
		Logger:      log,
	})
	if err != nil {
		t.Fatalf("NewAWS: %v", err)
	}
	return b
}

func awsRef(name, usernameKey, passwordKey string) protocol.SecretRef {
	return protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: name, UsernameKey: usernameKey, PasswordKey: passwordKey}
}

// newAzureBackend builds the Azure backend against the fake vault with the
// given credential, its TLS client, and the one test-only switch the fake's
// address needs (challenge resource verification).
func newAzureBackend(t *testing.T, fake *secretstest.KeyVault, cred *secretstest.TokenCredential, log *zap.Logger, mutate func(*secrets.AzureConfig)) *secrets.Azure {
	t.Helper()
	c := secrets.AzureConfig{MaxBackoff: 10 * time.Millisecond}
	if mutate != nil {
		mutate(&c)
	}
	b, err := secrets.NewAzure(c, secrets.AzureOptions{
		Credential:                           cred,
		Transport:                            fake.Client(),
		VaultURL:                             func(string) string { return fake.URL },
		DisableChallengeResourceVerification: true,
		Getenv:                               func(string) string { return "" },
		Logger:                               log,
	})
	if err != nil {
		t.Fatalf("NewAzure: %v", err)
	}
	return b
}

func azureRef(vault, usernameSecret, passwordSecret string) protocol.SecretRef {
	return protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: vault, UsernameSecret: usernameSecret, PasswordSecret: passwordSecret}
}

// checkCallLog checks that the log has n debug lines for calls, the last
// one with the outcome.
func checkCallLog(t *testing.T, logs *logBuffer, backend string, n int, outcome string) {
	t.Helper()
	lines := logs.lines(t, "secret manager call")
	if len(lines) != n {
		t.Fatalf("%d call log lines, want %d:\n%s", len(lines), n, logs.String())
	}
	if n == 0 {
		return
	}
	l := lines[n-1]
	if l["backend"] != backend || l["outcome"] != outcome || l["secret_ref"] == "" || l["duration_ms"] == nil {
		t.Errorf("call log line = %v, want backend %s, outcome %s, secret_ref and duration_ms", l, backend, outcome)
	}
}
