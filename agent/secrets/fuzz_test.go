package secrets_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/agent/secrets"
)

// FuzzFileErrorsNeverQuote writes files that hold the canary somewhere among
// arbitrary bytes and checks that whatever NewFile says about them (parse
// and shape errors: these never list names) holds no form of the canary.
func FuzzFileErrorsNeverQuote(f *testing.F) {
	seeds := []struct {
		prefix, suffix string
		ext            uint8
	}{
		{`{"ci/github": {"token": "`, `"x}}`, 0},
		{`{"ci/github": {"token": `, `}}`, 0},
		{`{"a": {"token": "`, ``, 0},
		{`["`, `"]`, 0},
		{"ci/github:\n  token: \"", "\n", 1},
		{"ci/github:\n  token: ", ": x\n", 1},
		{"ci/github:\n\ttoken: ", "\n", 1},
		{"ci/github:\n  token: *", "\n", 1},
		{"a: &", " x\nb: *y\n", 1},
		{"", "\n", 1},
		{"? [", "]\n: x\n", 1},
		{"{\"ci/github\": {\"token\": \"", "\"\n  x: [}", 2},
		{"%YAML 1.1\n--- !", "\n", 2},
		{"a: !<", "> x\n", 2},
	}
	for _, s := range seeds {
		f.Add(s.prefix, s.suffix, s.ext)
	}
	f.Fuzz(func(t *testing.T, prefix, suffix string, ext uint8) {
		name := []string{"s.json", "s.yaml", "secrets"}[int(ext)%3]
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, []byte(prefix+canary+suffix), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := secrets.NewFile(path)
		if err == nil {
			return
		}
		if form, leaked := redact.Find([]byte(err.Error()), canary); leaked {
			t.Fatalf("the error quotes the file (%q): %v", form, err)
		}
	})
}
