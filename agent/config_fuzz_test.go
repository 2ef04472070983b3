package agent

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// configKeys lists every setting of Config by its YAML name, as dotted
// paths and as leaf names ("secrets.aws.region" and "region").
func configKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			keys = append(keys, prefix+name, name)
			walk(f.Type, prefix+name+".")
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}

// FuzzLoadConfig: LoadConfig reads any bytes in a config file without
// panicking; what it refuses it refuses with a message that names the file
// (a YAML error, with its line) or the setting that is wrong, and a
// setting's error never quotes the password of a URL's user info; what it
// accepts validates again. The seed corpus is committed in testdata/fuzz.
func FuzzLoadConfig(f *testing.F) {
	keys := configKeys()
	f.Fuzz(func(t *testing.T, yaml []byte) {
		path := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(path, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path, func(string) string { return "" })
		if err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("LoadConfig accepted a config that Validate refuses: %v", err)
			}
			return
		}
		msg := err.Error()
		named := strings.HasPrefix(msg, "config "+path)
		for _, k := range keys {
			named = named || strings.Contains(msg, k)
		}
		if !named {
			t.Fatalf("the error names neither the file nor a setting: %q", msg)
		}
		if strings.HasPrefix(msg, "config "+path) {
			return // a YAML error: it quotes the file's own text, by line, to its owner
		}
		for _, pw := range urlPasswords(yaml) {
			// (A password that is also written elsewhere in the file may
			// be quoted from there.)
			if bytes.Count(yaml, []byte(pw)) == 1 && strings.Contains(msg, pw) {
				t.Fatalf("the error quotes the password %q of a URL in the config: %q", pw, msg)
			}
		}
	})
}

// urlPasswords returns the passwords (4 bytes or more) of the URLs in b that
// hold user info: as url.Parse reads them, or, for a URL it refuses,
// everything between "://" and the last "@" (what RedactURL masks).
func urlPasswords(b []byte) []string {
	var out []string
	for _, tok := range strings.FieldsFunc(string(b), func(r rune) bool {
		return r <= ' ' || strings.ContainsRune("\"'[]{},", r)
	}) {
		i, at := strings.Index(tok, "://"), strings.LastIndex(tok, "@")
		if i < 0 || at < i {
			continue
		}
		u, err := url.Parse(tok)
		switch {
		case err == nil && u.User != nil:
			if pw, ok := u.User.Password(); ok && len(pw) >= 4 {
				out = append(out, pw)
			}
		case err != nil:
			if _, pw, ok := strings.Cut(tok[i+3:at], ":"); ok && len(pw) >= 4 {
				out = append(out, pw)
			}
		}
	}
	return out
}
