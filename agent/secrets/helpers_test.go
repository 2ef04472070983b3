package secrets_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// canary is the secret value every test plants; no error may show it.
const canary = "canary-7f3c9e1d-SECRET"

// writeSecrets writes content to name in a new temporary directory with the
// given mode (set explicitly, whatever the umask) and returns the path.
func writeSecrets(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkError checks that err is a *protocol.Error with code, whose message
// holds each of want and no form of the canary.
func checkError(t *testing.T, err error, code protocol.ErrorCode, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %s", code)
	}
	if form, leaked := redact.Find([]byte(err.Error()), canary); leaked {
		t.Fatalf("the error leaks the canary as %q: %v", form, err)
	}
	var perr *protocol.Error
	if !errors.As(err, &perr) {
		t.Fatalf("err = %T %v, want a *protocol.Error", err, err)
	}
	if perr.Code != code {
		t.Errorf("code = %s, want %s (message: %s)", perr.Code, code, perr.Message)
	}
	if verr := perr.Validate(); verr != nil {
		t.Errorf("the error is not valid on the wire: %v", verr)
	}
	for _, w := range want {
		if !strings.Contains(perr.Message, w) {
			t.Errorf("message = %q, want it to contain %q", perr.Message, w)
		}
	}
}

func fileRef(name, usernameKey, passwordKey string) protocol.SecretRef {
	return protocol.SecretRef{Backend: protocol.BackendFile, SecretName: name, UsernameKey: usernameKey, PasswordKey: passwordKey}
}
