package secrets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// MaxFileSize bounds the secrets file the [File] backend reads.
const MaxFileSize = 1 << 20

// File is the file backend: secrets in a local JSON or YAML file that only
// the agent's user may read, for development and for customers without a
// cloud secret manager.
//
// The file holds a mapping from secret name to a mapping of keys to string
// values:
//
//	ci/github:
//	  username: bot
//	  token: ghp_...
//
// or the same in JSON. A .json file is read as JSON, a .yaml or .yml file as
// YAML, any other as JSON and then YAML. A reference {"backend":"file",
// "secret_name":"ci/github","username_key":"username","password_key":"token"}
// resolves to those two values.
//
// The file is checked on every Resolve: it must be a regular file that group
// and others can neither read nor write (on Unix), and it is parsed again
// when its size, modification time or identity changed, so that a rotated
// secret is seen without a restart. A file modified in the last few seconds
// is parsed again on every Resolve, since a coarse file-system clock could
// give a same-length rewrite the same mtime. File is safe for concurrent use.
type File struct {
	path string // absolute

	mu sync.Mutex // guards the fields below
	// loaded describes the file that secrets was parsed from; nil before
	// the first successful parse and after a failed one.
	loaded  os.FileInfo
	secrets map[string]entry
	// settled is whether loaded's mtime was already older than
	// racyWindow when the file was read: only then does an unchanged mtime
	// prove an unchanged file.
	settled bool
}

// racyWindow is how old a file's mtime must be before an unchanged mtime and
// size are trusted to mean unchanged content. File systems with coarse
// timestamps (one second, two for FAT) give a rewrite in the same tick the
// same mtime, and a rotated token usually has the same length; a file
// modified this recently is read again on every Resolve instead.
const racyWindow = 3 * time.Second

// entry is one secret of the file.
type entry struct {
	// kind is empty when the secret is a mapping, else what it is instead
	// ("a string", "a list").
	kind   string
	values map[string]value
}

// value is one key of a secret.
type value struct {
	// kind is empty for a string, else what the value is instead
	// ("a number", "an object").
	kind string
	s    redact.Secret
}

var _ Backend = (*File)(nil)

// NewFile returns the file backend for the secrets file at path, after
// reading it once: an agent whose secrets file is missing, unreadable,
// readable by others or not valid refuses to start with the returned error
// (a *protocol.Error) rather than failing each job.
func NewFile(path string) (*File, error) {
	if path == "" {
		return nil, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the secrets file path is empty; set secrets.file.path in the agent config")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the secrets file path %s cannot be made absolute: %v", path, err)
	}
	f := &File{path: abs}
	if _, _, perr := f.load(); perr != nil {
		return nil, perr
	}
	return f, nil
}

// Name returns "file".
func (f *File) Name() string { return protocol.BackendFile }

// Path returns the absolute path of the secrets file.
func (f *File) Path() string { return f.path }

// Info returns the backend's settings: the file's path.
func (f *File) Info() protocol.BackendInfo {
	return protocol.BackendInfo{Name: protocol.BackendFile, Settings: map[string]string{"path": f.path}}
}

// Resolve reads the secret ref names from the file. See the package doc for
// the errors.
func (f *File) Resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, error) {
	if ref.Backend != protocol.BackendFile {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
			"the file secret backend cannot resolve %s: it names the %s backend", ref, ref.Backend)
	}
	if ref.VersionStage != "" || ref.VersionID != "" {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
			"the file secret backend has no versions; remove version_stage and version_id from the reference to %s", ref.SecretName)
	}
	if ref.SecretName == "" || ref.PasswordKey == "" {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
			"a reference to the file secret backend needs secret_name and password_key")
	}
	if err := ctx.Err(); err != nil {
		return Credentials{}, err
	}
	secrets, modTime, perr := f.load()
	if perr != nil {
		return Credentials{}, perr
	}
	e, ok := secrets[ref.SecretName]
	if !ok {
		return Credentials{}, protocol.Errorf(protocol.CodeSecretNotFound,
			"the secret %s is not in the secrets file %s; add it there or fix secret_name in the reference",
			ref.SecretName, f.path)
	}
	if e.kind != "" {
		return Credentials{}, protocol.Errorf(protocol.CodeSecretMalformed,
			"the secret %s in the secrets file %s is %s, not a mapping of keys to strings",
			ref.SecretName, f.path, e.kind)
	}
	password, perr := f.key(ref.SecretName, e, ref.PasswordKey, "password_key")
	if perr != nil {
		return Credentials{}, perr
	}
	if password.Empty() {
		return Credentials{}, protocol.Errorf(protocol.CodeSecretMalformed,
			"the key '%s' of the secret %s in the secrets file %s is empty", ref.PasswordKey, ref.SecretName, f.path)
	}
	c := Credentials{Password: password, VersionCreated: &modTime}
	if ref.UsernameKey != "" {
		username, perr := f.key(ref.SecretName, e, ref.UsernameKey, "username_key")
		if perr != nil {
			return Credentials{}, perr
		}
		c.Username = username
		c.KeysFound = append(c.KeysFound, KeyUsername)
	}
	c.KeysFound = append(c.KeysFound, KeyPassword)
	return c, nil
}

// key returns the value of key in the secret, or secret_malformed naming the
// reference field (setting) that asked for it.
func (f *File) key(secret string, e entry, key, setting string) (redact.Secret, *protocol.Error) {
	return lookupKey(e.values, secret, key, setting,
		"add the key to the secrets file "+f.path, "in the secrets file "+f.path+" ", "; quote the value")
}

// lookupKey returns the string value of key, or secret_malformed: the key
// is missing (listing the key names found, never the values: fix says how
// to add it) or holds something else than a string (where says where the
// secret is, hint how to fix it). setting is the reference field that named
// the key.
func lookupKey(values map[string]value, secret, key, setting, fix, where, hint string) (redact.Secret, *protocol.Error) {
	v, ok := values[key]
	if !ok {
		return redact.Secret{}, protocol.Errorf(protocol.CodeSecretMalformed,
			"the secret %s has no key '%s'; keys found: %s; fix %s in the reference or %s",
			secret, key, keyNames(values), setting, fix)
	}
	if v.kind != "" {
		return redact.Secret{}, protocol.Errorf(protocol.CodeSecretMalformed,
			"the key '%s' of the secret %s %sholds %s, not a string%s",
			key, secret, where, v.kind, hint)
	}
	return v.s, nil
}

// maxListedKeys bounds the key names an error message lists.
const maxListedKeys = 20

// keyNames lists a secret's key names for an error message, sorted. It
// leaves out names that might be a value typed where a key belongs (a key
// with no value, an overlong name or one with unprintable characters) and
// says how many it left out.
func keyNames(values map[string]value) string {
	var names []string
	hidden := 0
	for k, v := range values {
		if v.kind == "null" || (v.kind == "" && v.s.Empty()) || len(k) > 64 ||
			strings.IndexFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			hidden++
			continue
		}
		names = append(names, k)
	}
	slices.Sort(names)
	if len(names) > maxListedKeys {
		hidden += len(names) - maxListedKeys
		names = names[:maxListedKeys]
	}
	text := strings.Join(names, ", ")
	if text == "" {
		text = "none"
	}
	if hidden > 0 {
		text += fmt.Sprintf(" (and %d not shown)", hidden)
	}
	return text
}

// load returns the parsed secrets and the file's modification time, parsing
// the file again if it changed since the last parse. A failure drops the
// parsed copy.
func (f *File) load() (map[string]entry, time.Time, *protocol.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	secrets, modTime, perr := f.loadLocked()
	if perr != nil {
		f.loaded, f.secrets, f.settled = nil, nil, false
	}
	return secrets, modTime, perr
}

func (f *File) loadLocked() (map[string]entry, time.Time, *protocol.Error) {
	fh, err := os.Open(f.path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"the secrets file %s does not exist; create it (chmod 600) or fix secrets.file.path in the agent config", f.path)
		case errors.Is(err, fs.ErrPermission):
			return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretAccessDenied,
				"the agent's user cannot read the secrets file %s (permission denied); make that user its owner and run chmod 600 %s", f.path, f.path)
		default:
			return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"the secrets file %s cannot be opened: %v", f.path, osReason(err))
		}
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the secrets file %s cannot be examined: %v", f.path, osReason(err))
	}
	if !st.Mode().IsRegular() {
		return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the secrets file %s is not a regular file; fix secrets.file.path in the agent config", f.path)
	}
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretAccessDenied,
			"the secrets file %s can be read or written by group or others (mode %04o); run chmod 600 %s", f.path, perm, f.path)
	}
	if f.loaded != nil && f.settled && os.SameFile(f.loaded, st) && st.ModTime().Equal(f.loaded.ModTime()) && st.Size() == f.loaded.Size() {
		return f.secrets, f.loaded.ModTime().UTC(), nil
	}
	if st.Size() > MaxFileSize {
		return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretMalformed,
			"the secrets file %s is %d bytes; at most %d", f.path, st.Size(), MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the secrets file %s cannot be read: %v", f.path, osReason(err))
	}
	defer clear(data) // the parsed copy holds the values from now on
	if len(data) > MaxFileSize {
		return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretMalformed,
			"the secrets file %s is over %d bytes", f.path, MaxFileSize)
	}
	secrets, problem := parse(f.path, data)
	if problem != "" {
		return nil, time.Time{}, protocol.Errorf(protocol.CodeSecretMalformed, "the secrets file %s %s", f.path, problem)
	}
	f.loaded, f.secrets = st, secrets
	f.settled = time.Since(st.ModTime()) > racyWindow
	return secrets, st.ModTime().UTC(), nil
}

// osReason returns the system's reason from an os error, without the
// operation and path that the message names already.
func osReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parse reads the file's data by its extension. On failure it returns the
// rest of a sentence that starts with "the secrets file PATH": a problem
// that names lines, columns and kinds, never the file's content. The JSON and
// YAML parsers' own error texts can quote the content, so they are never
// passed on.
func parse(path string, data []byte) (map[string]entry, string) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a BOM from a Windows editor
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		secrets, syntax, problem := parseJSON(data)
		if syntax != "" {
			return nil, "is not valid JSON: " + syntax
		}
		return secrets, problem
	case ".yaml", ".yml":
		secrets, syntax, problem := parseYAML(data)
		if syntax != "" {
			return nil, "is not valid YAML: " + syntax
		}
		return secrets, problem
	default:
		secrets, jsonSyntax, problem := parseJSON(data)
		if jsonSyntax == "" {
			return secrets, problem
		}
		secrets, yamlSyntax, problem := parseYAML(data)
		if yamlSyntax == "" {
			return secrets, problem
		}
		return nil, "is not valid JSON or YAML: as JSON, " + jsonSyntax + "; as YAML, " + yamlSyntax
	}
}

// shapeProblem is the problem for a file whose top level is not a mapping.
func shapeProblem(kind string) string {
	return "must hold a mapping from secret name to a mapping of keys to strings; it holds " + kind
}

// parseJSON parses data as JSON. syntax says where the JSON is invalid;
// problem says what is wrong with valid JSON of the wrong shape.
func parseJSON(data []byte) (secrets map[string]entry, syntax, problem string) {
	// First pass: validity, with a position but not the parser's text.
	var v any
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return nil, "syntax error at " + position(data, se.Offset-1), ""
		case errors.Is(err, io.EOF):
			return nil, "the file is empty", ""
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, "the file ends inside a value", ""
		default:
			return nil, "syntax error", ""
		}
	}
	if rest := d.InputOffset(); len(bytes.TrimSpace(data[rest:])) > 0 {
		return nil, "extra data after the JSON value at " + position(data, skipSpace(data, rest, " \t\r\n")), ""
	}

	// Second pass: the shape, key by key, catching duplicate names that
	// encoding/json would silently merge.
	d = json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	tok, err := d.Token()
	if err != nil {
		return nil, "syntax error", ""
	}
	if tok != json.Delim('{') {
		return nil, "", shapeProblem(jsonKind(tok))
	}
	secrets = map[string]entry{}
	for d.More() {
		at := skipSpace(data, d.InputOffset(), " \t\r\n,")
		name, err := jsonKey(d)
		if err != nil {
			return nil, "syntax error", ""
		}
		if _, dup := secrets[name]; dup {
			return nil, "", "names a secret twice (again at " + position(data, at) + ")"
		}
		tok, err := d.Token()
		if err != nil {
			return nil, "syntax error", ""
		}
		if tok != json.Delim('{') {
			if err := skipJSON(d, tok); err != nil {
				return nil, "syntax error", ""
			}
			secrets[name] = entry{kind: jsonKind(tok)}
			continue
		}
		values, problem, err := readJSONObject(d, data, "names a key of one secret twice")
		if err != nil {
			return nil, "syntax error", ""
		}
		if problem != "" {
			return nil, "", problem
		}
		secrets[name] = entry{values: values}
	}
	return secrets, "", ""
}

func jsonKey(d *json.Decoder) (string, error) {
	tok, err := d.Token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", errors.New("object key is not a string")
	}
	return s, nil
}

// skipJSON skips the rest of a value whose first token was tok.
func skipJSON(d *json.Decoder, tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		t, err := d.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// jsonKind describes what a JSON value is, for messages.
func jsonKind(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			return "a list"
		}
		return "an object"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	default:
		return "a value that is not a string"
	}
}

// skipSpace returns the offset of the first byte at or after off that is
// not in cutset.
func skipSpace(data []byte, off int64, cutset string) int64 {
	rest := data[min(off, int64(len(data))):]
	return off + int64(len(rest)-len(bytes.TrimLeft(rest, cutset)))
}

// position returns "line L, column C" (1-based, columns in bytes) for a byte
// offset into data.
func position(data []byte, offset int64) string {
	offset = max(0, min(offset, int64(len(data))))
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, col)
}

// yamlLine finds the line number in a yaml.v3 error. The rest of that error
// can quote the file (an anchor name, a value), so only the number is kept.
var yamlLine = regexp.MustCompile(`\bline (\d+)\b`)

// maxAliasHops bounds how many aliases parseYAML follows for one node.
const maxAliasHops = 8

// parseYAML parses data as YAML, like parseJSON.
func parseYAML(data []byte) (secrets map[string]entry, syntax, problem string) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			if n, convErr := strconv.Atoi(m[1]); convErr == nil {
				return nil, fmt.Sprintf("syntax error at line %d", n), ""
			}
		}
		return nil, "syntax error", ""
	}
	secrets = map[string]entry{}
	if doc.Kind == 0 || len(doc.Content) == 0 { // an empty file: no secrets
		return secrets, "", ""
	}
	root := unalias(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, "", shapeProblem(yamlKind(root))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], unalias(root.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return nil, "", fmt.Sprintf("has a secret name that is not a string at line %d", k.Line)
		}
		if first, dup := seen[k.Value]; dup {
			return nil, "", fmt.Sprintf("names a secret twice, at lines %d and %d", first, k.Line)
		}
		seen[k.Value] = k.Line
		if v.Kind != yaml.MappingNode {
			secrets[k.Value] = entry{kind: yamlKind(v)}
			continue
		}
		e := entry{values: map[string]value{}}
		keyLines := map[string]int{}
		for j := 0; j+1 < len(v.Content); j += 2 {
			kk, vv := v.Content[j], unalias(v.Content[j+1])
			if kk.Kind != yaml.ScalarNode {
				return nil, "", fmt.Sprintf("has a key that is not a string at line %d", kk.Line)
			}
			if first, dup := keyLines[kk.Value]; dup {
				return nil, "", fmt.Sprintf("names a key of one secret twice, at lines %d and %d", first, kk.Line)
			}
			keyLines[kk.Value] = kk.Line
			if vv.Kind == yaml.ScalarNode && vv.ShortTag() == "!!str" {
				e.values[kk.Value] = value{s: redact.New(vv.Value)}
			} else {
				e.values[kk.Value] = value{kind: yamlKind(vv)}
			}
		}
		secrets[k.Value] = e
	}
	return secrets, "", ""
}

// unalias follows an alias to the node it names.
func unalias(n *yaml.Node) *yaml.Node {
	for range maxAliasHops {
		if n.Kind != yaml.AliasNode || n.Alias == nil {
			return n
		}
		n = n.Alias
	}
	return n
}

// yamlKind describes what a YAML node is, for messages. It never quotes the
// node's value or tag.
func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		case "!!timestamp":
			return "a date"
		case "!!binary":
			return "binary data"
		}
	}
	return "a value that is not a string"
}
