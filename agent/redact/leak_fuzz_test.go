package redact_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/agent/redact"
)

// zapRender logs s through zap, as the agent does (JSON and console
// encoders), in each kind of field a Secret could end up in.
func zapRender(s redact.Secret) string {
	var buf bytes.Buffer
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = ""
	for _, enc := range []zapcore.Encoder{zapcore.NewJSONEncoder(ec), zapcore.NewConsoleEncoder(ec)} {
		log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.DebugLevel))
		h := struct {
			Token redact.Secret
			Ptr   *redact.Secret
		}{s, &s}
		log.Info("resolved", zap.Any("any", s), zap.Stringer("stringer", s), zap.Reflect("reflect", s),
			zap.Any("holder", h), zap.Reflect("holder_reflect", h), zap.Any("list", []redact.Secret{s}),
			zap.Error(&wrapErr{s}))
	}
	return buf.String()
}

type wrapErr struct{ s redact.Secret }

func (e *wrapErr) Error() string { return "resolve: " + e.s.String() }

// FuzzSecretNeverLogs is FuzzSecretNeverPrints for the agent's logger: what
// zap writes for a Secret, in any kind of field, does not depend on its
// value.
func FuzzSecretNeverLogs(f *testing.F) {
	ref := zapRender(redact.New("reference-value-0000"))
	f.Fuzz(func(t *testing.T, v string) {
		got := zapRender(redact.New(v))
		if got != ref {
			t.Fatalf("zap's output depends on the value %q:\n got %q\nwant %q", v, got, ref)
		}
		if v != "" && strings.Contains(got, v) && !strings.Contains(ref, v) {
			t.Fatalf("zap's output holds the value %q: %q", v, got)
		}
	})
}

// FuzzFindFindsEveryLeak checks the check: the canary search that every
// end-to-end test runs (redact.Find) finds a secret of 12 bytes or more
// leaked inside any text, in each way the agent and the control plane
// write text: as it is, JSON (encoding/json, with and without HTML
// escaping, and zap), Go-quoted, URL query and path escaped, hex, and
// base64 of the whole text in either alphabet, padded or not (an HTTP Basic
// header, a token inside an encoded blob). A leak the search missed would
// let a test pass that should fail.
func FuzzFindFindsEveryLeak(f *testing.F) {
	f.Fuzz(func(t *testing.T, secret, before, after string) {
		if len(secret) < 12 || !utf8.ValidString(secret) || !utf8.ValidString(before) || !utf8.ValidString(after) {
			return
		}
		text := before + secret + after
		leaks := map[string][]byte{
			"raw":        []byte(text),
			"go-quoted":  []byte(strconv.Quote(text)),
			"query":      []byte(url.QueryEscape(text)),
			"path":       []byte(url.PathEscape(text)),
			"hex":        []byte(hex.EncodeToString([]byte(text))),
			"HEX":        []byte(strings.ToUpper(hex.EncodeToString([]byte(text)))),
			"base64":     []byte(base64.StdEncoding.EncodeToString([]byte(text))),
			"base64-raw": []byte(base64.RawStdEncoding.EncodeToString([]byte(text))),
			"base64-url": []byte(base64.URLEncoding.EncodeToString([]byte(text))),
			"basic-auth": []byte("Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("bot:"+text))),
		}
		j, _ := json.Marshal(text)
		leaks["json"] = j
		var nohtml bytes.Buffer
		enc := json.NewEncoder(&nohtml)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(text)
		leaks["json-no-html"] = nohtml.Bytes()
		var zb bytes.Buffer
		zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&zb), zapcore.DebugLevel)).
			Info("leak", zap.String("value", text))
		leaks["zap-json"] = zb.Bytes()
		for name, b := range leaks {
			if !redact.Contains(b, secret) {
				t.Errorf("the search misses %q leaked as %s inside %q: %q", secret, name, text, b)
			}
		}
	})
}
