package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"github.com/orchestrator/orchestrator/agent/redact"
)

// This file holds what the backends share to read a secret value that is a
// JSON object of keys (the file backend's secrets, an AWS secret's value):
// parsing without ever quoting the content, and listing key names safely.

// readJSONObject reads the members of a JSON object whose opening '{' d has
// just returned, up to and including its closing '}'. String members keep
// their value; any other member keeps only what it is ("a number"). A key
// that appears twice gives problem dupProblem with the place of the second
// one. err is a syntax error (the caller has checked the syntax before, so
// it is not expected).
func readJSONObject(d *json.Decoder, data []byte, dupProblem string) (values map[string]value, problem string, err error) {
	values = map[string]value{}
	for d.More() {
		at := skipSpace(data, d.InputOffset(), " \t\r\n,")
		key, err := jsonKey(d)
		if err != nil {
			return nil, "", err
		}
		if _, dup := values[key]; dup && problem == "" {
			problem = dupProblem + " (again at " + position(data, at) + ")"
		}
		tok, err := d.Token()
		if err != nil {
			return nil, "", err
		}
		if s, ok := tok.(string); ok {
			values[key] = value{s: redact.New(s)}
			continue
		}
		if err := skipJSON(d, tok); err != nil {
			return nil, "", err
		}
		values[key] = value{kind: jsonKind(tok)}
	}
	if _, err := d.Token(); err != nil { // the closing '}'
		return nil, "", err
	}
	if problem != "" {
		return nil, problem, nil
	}
	return values, "", nil
}

// parseJSONObject parses a secret value that must be one JSON object. On
// failure it returns the rest of a sentence that starts with "the value of
// the secret NAME": what is wrong and where (line and column), never any
// part of the value. encoding/json's own error texts can quote the input, so
// they are never passed on.
func parseJSONObject(data []byte) (map[string]value, string) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	// First pass: validity, with a position but not the parser's text.
	var v any
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return nil, "is not valid JSON: syntax error at " + position(data, se.Offset-1)
		case errors.Is(err, io.EOF):
			return nil, "is empty, not a JSON object"
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, "is not valid JSON: it ends inside a value"
		default:
			return nil, "is not valid JSON"
		}
	}
	v = nil
	if rest := d.InputOffset(); len(bytes.TrimSpace(data[rest:])) > 0 {
		return nil, "is not valid JSON: extra data after the JSON value at " + position(data, skipSpace(data, rest, " \t\r\n"))
	}

	// Second pass: the members, catching duplicate keys that encoding/json
	// would silently merge.
	d = json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	tok, err := d.Token()
	if err != nil {
		return nil, "is not valid JSON"
	}
	if tok != json.Delim('{') {
		if err := skipJSON(d, tok); err != nil {
			return nil, "is not valid JSON"
		}
		return nil, "is " + jsonKind(tok) + ", not a JSON object of keys to strings"
	}
	values, problem, err := readJSONObject(d, data, "names a key twice")
	if err != nil {
		return nil, "is not valid JSON"
	}
	if problem != "" {
		return nil, problem
	}
	return values, ""
}
