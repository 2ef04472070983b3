package secrets_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/protocol"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFileResolve(t *testing.T) {
	t.Parallel()
	const (
		jsonDoc = `{"ci/github": {"username": "bot", "token": "` + canary + `"}, "other": {"x": "y"}}`
		yamlDoc = "ci/github:\n  username: bot\n  token: " + canary + "\nother:\n  x: y\n"
	)
	tests := []struct {
		name         string
		file         string
		content      string
		ref          protocol.SecretRef
		wantUsername string
		wantKeys     []string
	}{
		{name: "json", file: "secrets.json", content: jsonDoc, ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "json without username key", file: "secrets.json", content: jsonDoc, ref: fileRef("ci/github", "", "token"), wantKeys: []string{"password"}},
		{name: "yaml", file: "secrets.yaml", content: yamlDoc, ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "yml", file: "secrets.yml", content: yamlDoc, ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "upper-case extension", file: "secrets.YAML", content: yamlDoc, ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "no extension, json", file: "secrets", content: jsonDoc, ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "no extension, yaml", file: "secrets", content: yamlDoc, ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "json with a byte order mark", file: "secrets.json", content: "\xef\xbb\xbf" + jsonDoc, ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "yaml quoted and anchored", file: "s.yaml", content: "base: &tok \"" + canary + "\"\nci/github:\n  username: 'bot'\n  token: *tok\n", ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "yaml secret as alias", file: "s.yaml", content: "a: &a\n  username: bot\n  token: " + canary + "\nci/github: *a\n", ref: fileRef("ci/github", "username", "token"), wantUsername: "bot", wantKeys: []string{"username", "password"}},
		{name: "yaml explicit string tag", file: "s.yaml", content: "ci/github:\n  token: !!str " + canary + "\n", ref: fileRef("ci/github", "", "token"), wantKeys: []string{"password"}},
		{name: "yaml empty username allowed", file: "s.yaml", content: "ci/github:\n  username: ''\n  token: " + canary + "\n", ref: fileRef("ci/github", "username", "token"), wantUsername: "", wantKeys: []string{"username", "password"}},
		{name: "json escapes in the value", file: "s.json", content: `{"ci/github": {"token": "canary-7f3c9e1d-\u0053ECRET"}}`, ref: fileRef("ci/github", "", "token"), wantKeys: []string{"password"}},
		{name: "json nested value in another key is fine", file: "s.json", content: `{"ci/github": {"token": "` + canary + `", "meta": {"a": [1, 2]}}}`, ref: fileRef("ci/github", "", "token"), wantKeys: []string{"password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeSecrets(t, tt.file, tt.content, 0o600)
			mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
			if err := os.Chtimes(path, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			f, err := secrets.NewFile(path)
			if err != nil {
				t.Fatalf("NewFile: %v", err)
			}
			c, err := f.Resolve(testContext(t), tt.ref)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got := c.Password.Reveal(); got != canary {
				t.Errorf("Password = %q, want %q", got, canary)
			}
			if got := c.Username.Reveal(); got != tt.wantUsername {
				t.Errorf("Username = %q, want %q", got, tt.wantUsername)
			}
			if !slices.Equal(c.KeysFound, tt.wantKeys) {
				t.Errorf("KeysFound = %q, want %q", c.KeysFound, tt.wantKeys)
			}
			if c.VersionID != "" {
				t.Errorf("VersionID = %q, want empty", c.VersionID)
			}
			if c.VersionCreated == nil || !c.VersionCreated.Equal(mtime) {
				t.Errorf("VersionCreated = %v, want the file's mtime %v", c.VersionCreated, mtime)
			}
			if out := fmt.Sprintf("%v %+v", c, c); strings.Contains(out, canary) {
				t.Errorf("printing the Credentials shows the value: %s", out)
			}
		})
	}
}

func TestFileResolveErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string
		content string
		ref     protocol.SecretRef
		code    protocol.ErrorCode
		want    []string
	}{
		{
			name:    "missing password key",
			file:    "s.yaml",
			content: "ci/github:\n  username: bot\n  pat: " + canary + "\n",
			ref:     fileRef("ci/github", "username", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"the secret ci/github has no key 'token'; keys found: pat, username", "password_key"},
		},
		{
			name:    "missing username key",
			file:    "s.json",
			content: `{"ci/github": {"token": "` + canary + `"}}`,
			ref:     fileRef("ci/github", "login", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"has no key 'login'; keys found: token", "username_key"},
		},
		{
			name:    "missing secret",
			file:    "s.yaml",
			content: "ci/gitlab:\n  token: " + canary + "\n",
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretNotFound,
			want:    []string{"the secret ci/github is not in the secrets file", "s.yaml", "secret_name"},
		},
		{
			name:    "empty file has no secrets",
			file:    "s.yaml",
			content: "",
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretNotFound,
			want:    []string{"ci/github"},
		},
		{
			name:    "secret is the value itself",
			file:    "s.yaml",
			content: "ci/github: " + canary + "\n",
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"the secret ci/github", "is a string, not a mapping"},
		},
		{
			name:    "secret is a list",
			file:    "s.json",
			content: `{"ci/github": ["` + canary + `"]}`,
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"is a list"},
		},
		{
			name:    "yaml number",
			file:    "s.yaml",
			content: "ci/github:\n  username: " + canary + "\n  token: 12345\n",
			ref:     fileRef("ci/github", "username", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"the key 'token' of the secret ci/github", "holds a number, not a string; quote the value"},
		},
		{
			name:    "yaml date",
			file:    "s.yaml",
			content: "ci/github:\n  username: " + canary + "\n  token: 2024-01-02\n",
			ref:     fileRef("ci/github", "username", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"'token'", "a date"},
		},
		{
			name:    "yaml explicit int tag on the canary",
			file:    "s.yaml",
			content: "ci/github:\n  token: !!int " + canary + "\n",
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"'token'", "a number"},
		},
		{
			name:    "json nested object",
			file:    "s.json",
			content: `{"ci/github": {"token": {"value": "` + canary + `"}}}`,
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"the key 'token'", "holds an object"},
		},
		{
			name:    "json boolean username",
			file:    "s.json",
			content: `{"ci/github": {"username": true, "token": "` + canary + `"}}`,
			ref:     fileRef("ci/github", "username", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"the key 'username'", "holds a boolean"},
		},
		{
			name:    "json null",
			file:    "s.json",
			content: `{"ci/github": {"token": null, "x": "` + canary + `"}}`,
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"holds null"},
		},
		{
			name:    "empty password",
			file:    "s.json",
			content: `{"ci/github": {"token": "", "username": "` + canary + `"}}`,
			ref:     fileRef("ci/github", "username", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"the key 'token' of the secret ci/github", "is empty"},
		},
		{
			name:    "value typed as a key is not listed",
			file:    "s.yaml",
			content: "ci/github:\n  username: bot\n  " + canary + ":\n",
			ref:     fileRef("ci/github", "username", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"keys found: username (and 1 not shown)"},
		},
		{
			name:    "value typed as a key with an empty value is not listed",
			file:    "s.json",
			content: `{"ci/github": {"` + canary + `": ""}}`,
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"keys found: none (and 1 not shown)"},
		},
		{
			name:    "overlong key name is not listed",
			file:    "s.json",
			content: `{"ci/github": {"` + strings.Repeat("k", 65) + `": "v", "pat": "` + canary + `"}}`,
			ref:     fileRef("ci/github", "", "token"),
			code:    protocol.CodeSecretMalformed,
			want:    []string{"keys found: pat (and 1 not shown)"},
		},
		{
			name:    "reference to another backend",
			file:    "s.json",
			content: `{"ci/github": {"token": "` + canary + `"}}`,
			ref:     protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: "ci/github", PasswordKey: "token"},
			code:    protocol.CodeInvalidParams,
			want:    []string{"cannot resolve aws:ci/github"},
		},
		{
			name:    "version asked of a file",
			file:    "s.json",
			content: `{"ci/github": {"token": "` + canary + `"}}`,
			ref:     protocol.SecretRef{Backend: protocol.BackendFile, SecretName: "ci/github", PasswordKey: "token", VersionStage: "AWSPREVIOUS"},
			code:    protocol.CodeInvalidParams,
			want:    []string{"has no versions", "version_stage"},
		},
		{
			name:    "no password key",
			file:    "s.json",
			content: `{"ci/github": {"token": "` + canary + `"}}`,
			ref:     fileRef("ci/github", "", ""),
			code:    protocol.CodeInvalidParams,
			want:    []string{"password_key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeSecrets(t, tt.file, tt.content, 0o600)
			f, err := secrets.NewFile(path)
			if err != nil {
				t.Fatalf("NewFile: %v", err)
			}
			c, err := f.Resolve(testContext(t), tt.ref)
			checkError(t, err, tt.code, tt.want...)
			if !c.Password.Empty() || !c.Username.Empty() || c.KeysFound != nil {
				t.Errorf("a failed Resolve returned credentials: keys %q", c.KeysFound)
			}
		})
	}
}

func TestNewFileErrors(t *testing.T) {
	t.Parallel()
	type setup func(t *testing.T) string
	file := func(name, content string, mode os.FileMode) setup {
		return func(t *testing.T) string { return writeSecrets(t, name, content, mode) }
	}
	good := `{"ci/github": {"token": "` + canary + `"}}`
	tests := []struct {
		name  string
		setup setup
		code  protocol.ErrorCode
		want  []string // "PATH" stands for the file's path
		unix  bool     // mode checks do not apply on Windows
	}{
		{name: "world readable", setup: file("s.json", good, 0o644), code: protocol.CodeSecretAccessDenied, want: []string{"PATH can be read or written by group or others (mode 0644)", "chmod 600 PATH"}, unix: true},
		{name: "group readable", setup: file("s.json", good, 0o640), code: protocol.CodeSecretAccessDenied, want: []string{"mode 0640", "chmod 600 PATH"}, unix: true},
		{name: "other writable only", setup: file("s.json", good, 0o602), code: protocol.CodeSecretAccessDenied, want: []string{"mode 0602"}, unix: true},
		{name: "group executable", setup: file("s.json", good, 0o610), code: protocol.CodeSecretAccessDenied, want: []string{"mode 0610"}, unix: true},
		{
			name:  "json: canary next to the syntax error",
			setup: file("s.json", "{\"ci/github\": {\n  \"token\": \""+canary+"\"x}}", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"the secrets file PATH is not valid JSON: syntax error at line 2, column 36"},
		},
		{
			name:  "json: unquoted canary",
			setup: file("s.json", `{"ci/github": {"token": `+canary+`}}`, 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"is not valid JSON: syntax error at line 1, column 25"},
		},
		{
			name:  "json: cut short after the canary",
			setup: file("s.json", `{"ci/github": {"token": "`+canary, 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"is not valid JSON: the file ends inside a value"},
		},
		{
			name:  "json: extra data after the object",
			setup: file("s.json", good+"\n"+canary, 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"extra data after the JSON value at line 2, column 1"},
		},
		{
			name:  "json: empty",
			setup: file("s.json", "", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"is not valid JSON: the file is empty"},
		},
		{
			name:  "json: top level list",
			setup: file("s.json", `["`+canary+`"]`, 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"must hold a mapping from secret name to a mapping of keys to strings; it holds a list"},
		},
		{
			name:  "json: duplicate secret",
			setup: file("s.json", `{"a": {"token": "x"},`+"\n"+`"a": {"token": "`+canary+`"}}`, 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"names a secret twice (again at line 2, column 1)"},
		},
		{
			name:  "json: duplicate key",
			setup: file("s.json", `{"a": {"token": "x", "token": "`+canary+`"}}`, 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"names a key of one secret twice (again at line 1, column 22)"},
		},
		{
			name:  "yaml: unterminated quote with the canary",
			setup: file("s.yaml", "ci/github:\n  token: \""+canary+"\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"the secrets file PATH is not valid YAML: syntax error at line"},
		},
		{
			name:  "yaml: mapping value after the canary",
			setup: file("s.yaml", "ci/github:\n  token: "+canary+": x\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"is not valid YAML: syntax error at line 2"},
		},
		{
			name:  "yaml: tab before the canary",
			setup: file("s.yml", "ci/github:\n\ttoken: "+canary+"\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"is not valid YAML: syntax error at line 2"},
		},
		{
			name:  "yaml: unknown anchor named like the canary",
			setup: file("s.yaml", "ci/github:\n  token: *"+canary+"\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"is not valid YAML: syntax error"},
		},
		{
			name:  "yaml: top level scalar",
			setup: file("s.yaml", canary+"\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"it holds a string"},
		},
		{
			name:  "yaml: duplicate secret",
			setup: file("s.yaml", "a:\n  token: x\na:\n  token: "+canary+"\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"names a secret twice, at lines 1 and 3"},
		},
		{
			name:  "yaml: duplicate key",
			setup: file("s.yaml", "a:\n  token: x\n  token: "+canary+"\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"names a key of one secret twice, at lines 2 and 3"},
		},
		{
			name:  "yaml: key that is a list",
			setup: file("s.yaml", "a:\n  ? ["+canary+"]\n  : x\n", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"has a key that is not a string at line 2"},
		},
		{
			name:  "no extension: neither json nor yaml",
			setup: file("secrets", "{\"ci/github\": {\"token\": \""+canary+"\"\n  x: [}", 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"is not valid JSON or YAML: as JSON, syntax error at line 2, column 3; as YAML, syntax error at line"},
		},
		{
			name:  "too large",
			setup: file("s.json", `{"a": {"token": "`+canary+strings.Repeat("x", secrets.MaxFileSize)+`"}}`, 0o600),
			code:  protocol.CodeSecretMalformed,
			want:  []string{"bytes; at most 1048576"},
		},
		{
			name:  "missing file",
			setup: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope.json") },
			code:  protocol.CodeSecretBackendUnavailable,
			want:  []string{"the secrets file PATH does not exist", "secrets.file.path"},
		},
		{
			name:  "a directory",
			setup: func(t *testing.T) string { return t.TempDir() },
			code:  protocol.CodeSecretBackendUnavailable,
			want:  []string{"PATH is not a regular file"},
		},
		{
			name:  "empty path",
			setup: func(*testing.T) string { return "" },
			code:  protocol.CodeSecretBackendUnavailable,
			want:  []string{"secrets.file.path"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.unix && runtime.GOOS == "windows" {
				t.Skip("file modes are not checked on Windows")
			}
			path := tt.setup(t)
			f, err := secrets.NewFile(path)
			if f != nil {
				t.Errorf("NewFile returned a backend along with the error")
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, strings.ReplaceAll(w, "PATH", path))
			}
			checkError(t, err, tt.code, want...)
		})
	}
}

func TestFilePermissionDenied(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("needs a Unix user that file modes apply to (not root)")
	}
	path := writeSecrets(t, "s.json", `{"a": {"token": "`+canary+`"}}`, 0o200)
	_, err := secrets.NewFile(path)
	checkError(t, err, protocol.CodeSecretAccessDenied, "cannot read the secrets file "+path, "chmod 600 "+path)
}

func TestFileModeChecked(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not checked on Windows")
	}
	path := writeSecrets(t, "s.json", `{"a": {"token": "`+canary+`"}}`, 0o600)
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	ref := fileRef("a", "", "token")
	steps := []struct {
		name string
		mode os.FileMode
		code protocol.ErrorCode // empty: success
	}{
		{name: "opened up after start", mode: 0o644, code: protocol.CodeSecretAccessDenied},
		{name: "fixed", mode: 0o600},
		{name: "read only for the owner", mode: 0o400},
		{name: "group writable", mode: 0o620, code: protocol.CodeSecretAccessDenied},
	}
	for _, s := range steps {
		if err := os.Chmod(path, s.mode); err != nil {
			t.Fatal(err)
		}
		c, err := f.Resolve(ctx, ref)
		if s.code == "" {
			if err != nil || c.Password.Reveal() != canary {
				t.Errorf("%s: Resolve = %v, want the value", s.name, err)
			}
			continue
		}
		checkError(t, err, s.code, "chmod 600 "+path)
	}
}

// rewrite replaces the file's content in place and sets its mtime.
func rewrite(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestFileRotation(t *testing.T) {
	t.Parallel()
	doc := func(token string) string { return `{"ci/github": {"username": "bot", "token": "` + token + `"}}` }
	path := writeSecrets(t, "s.json", doc(canary+"-v1"), 0o600)
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(path, t0, t0); err != nil {
		t.Fatal(err)
	}
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	ref := fileRef("ci/github", "username", "token")
	resolve := func(step string, want string, wantTime time.Time) {
		t.Helper()
		c, err := f.Resolve(ctx, ref)
		if err != nil {
			t.Fatalf("%s: Resolve: %v", step, err)
		}
		if got := c.Password.Reveal(); got != want {
			t.Errorf("%s: Password = %q, want %q", step, got, want)
		}
		if c.VersionCreated == nil || !c.VersionCreated.Equal(wantTime) {
			t.Errorf("%s: VersionCreated = %v, want %v", step, c.VersionCreated, wantTime)
		}
	}
	resolve("first read", canary+"-v1", t0)

	// Same size, new mtime: the new value is seen.
	t1 := t0.Add(time.Second)
	rewrite(t, path, doc(canary+"-v2"), t1)
	resolve("rotated in place", canary+"-v2", t1)

	// Same size and the mtime put back: the parsed copy is used, proving
	// the file is not read on every call.
	rewrite(t, path, doc(canary+"-v3"), t1)
	resolve("unchanged mtime and size", canary+"-v2", t1)

	// Another size, same mtime: read again.
	rewrite(t, path, doc(canary+"-v4-longer"), t1)
	resolve("size changed", canary+"-v4-longer", t1)

	// Replaced by rename, as editors and config tools do, with the same
	// size and mtime: a different file, read again.
	tmp := filepath.Join(filepath.Dir(path), "new.json")
	if err := os.WriteFile(tmp, []byte(doc(canary+"-v5-longer")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, t1, t1); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	resolve("replaced by rename", canary+"-v5-longer", t1)

	// Broken, then fixed: the error is reported, and the fix is seen.
	t2 := t1.Add(time.Second)
	rewrite(t, path, `{"ci/github": {"token": "`+canary, t2)
	_, err = f.Resolve(ctx, ref)
	checkError(t, err, protocol.CodeSecretMalformed, "not valid JSON")
	t3 := t2.Add(time.Second)
	rewrite(t, path, doc(canary+"-v6"), t3)
	resolve("fixed", canary+"-v6", t3)

	// Deleted, then back.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, err = f.Resolve(ctx, ref)
	checkError(t, err, protocol.CodeSecretBackendUnavailable, "does not exist")
	rewrite(t, path, doc(canary+"-v7"), t3)
	resolve("recreated", canary+"-v7", t3)
}

func TestFileRecentlyModifiedIsReadAgain(t *testing.T) {
	t.Parallel()
	doc := func(token string) string { return `{"a": {"token": "` + token + `"}}` }
	path := writeSecrets(t, "s.json", doc(canary+"-v1"), 0o600)
	// An mtime of now, and the same mtime again after a same-size rewrite:
	// what a file system with one-second timestamps shows for two writes in
	// the same second.
	now := time.Now().Truncate(time.Second)
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, path, doc(canary+"-v2"), now)
	c, err := f.Resolve(testContext(t), fileRef("a", "", "token"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Password.Reveal(); got != canary+"-v2" {
		t.Errorf("Password = %q after a same-second, same-size rewrite; want %q", got, canary+"-v2")
	}
}

func TestFileContext(t *testing.T) {
	t.Parallel()
	path := writeSecrets(t, "s.json", `{"a": {"token": "`+canary+`"}}`, 0o600)
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := f.Resolve(ctx, fileRef("a", "", "token"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Resolve with a canceled context = %v, want context.Canceled", err)
	}
	if !c.Password.Empty() {
		t.Errorf("Resolve with a canceled context returned a value")
	}
}

func TestFileInfo(t *testing.T) {
	t.Parallel()
	path := writeSecrets(t, "s.json", `{}`, 0o600)
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Name(); got != "file" {
		t.Errorf("Name() = %q, want file", got)
	}
	info := f.Info()
	if info.Name != "file" || len(info.Settings) != 1 || info.Settings["path"] != path {
		t.Errorf("Info() = %+v, want name file and settings {path: %s}", info, path)
	}
	if f.Path() != path {
		t.Errorf("Path() = %q, want %q", f.Path(), path)
	}
}

func TestNewFileRelativePath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{"a": {"token": "`+canary+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	f, err := secrets.NewFile("s.json")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(f.Path()) || filepath.Base(f.Path()) != "s.json" {
		t.Errorf("Path() = %q, want an absolute path to s.json", f.Path())
	}
}

func TestFileConcurrent(t *testing.T) {
	t.Parallel()
	doc := func(v int) string {
		return fmt.Sprintf(`{"ci/github": {"username": "user-%d", "token": "%s-%d"}}`, v, canary, v)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "s.json")
	if err := os.WriteFile(path, []byte(doc(0)), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	ref := fileRef("ci/github", "username", "token")

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 64)
	wg.Add(1)
	go func() { // rotates the file by atomic rename, each time a new mtime
		defer wg.Done()
		base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		for v := 1; ; v++ {
			select {
			case <-stop:
				return
			default:
			}
			tmp := filepath.Join(dir, fmt.Sprintf("tmp-%d", v))
			if err := os.WriteFile(tmp, []byte(doc(v%10)), 0o600); err != nil {
				errs <- err
				return
			}
			mt := base.Add(time.Duration(v) * time.Second)
			if err := os.Chtimes(tmp, mt, mt); err != nil {
				errs <- err
				return
			}
			if err := os.Rename(tmp, path); err != nil {
				errs <- err
				return
			}
		}
	}()
	var readers sync.WaitGroup
	for range 8 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for range 300 {
				c, err := f.Resolve(ctx, ref)
				if err != nil {
					errs <- err
					return
				}
				var v int
				if _, err := fmt.Sscanf(c.Username.Reveal(), "user-%d", &v); err != nil {
					errs <- fmt.Errorf("username %q: %v", c.Username.Reveal(), err)
					return
				}
				if want := fmt.Sprintf("%s-%d", canary, v); c.Password.Reveal() != want {
					errs <- fmt.Errorf("password of version %d is %q, want %q: a torn read", v, c.Password.Reveal(), want)
					return
				}
			}
		}()
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
