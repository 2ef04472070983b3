package redact_test

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
)

func TestFormsFindEachEncoding(t *testing.T) {
	t.Parallel()
	// A canary with characters that each escaping changes.
	const c = `canary-7f3c9e1d-SECRET/+?&<>"é`
	b := []byte(c)
	jsonString := func(s string) string {
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	tests := []struct {
		name string
		text string
	}{
		{name: "raw", text: "token=" + c + "\n"},
		{name: "base64 std", text: base64.StdEncoding.EncodeToString(b)},
		{name: "base64 std raw", text: base64.RawStdEncoding.EncodeToString(b)},
		{name: "base64 url", text: base64.URLEncoding.EncodeToString(b)},
		{name: "base64 url raw", text: base64.RawURLEncoding.EncodeToString(b)},
		{name: "basic auth header", text: "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("bot:"+c))},
		{name: "base64 shift 1", text: base64.StdEncoding.EncodeToString([]byte("x" + c + "tail"))},
		{name: "base64 shift 2", text: base64.StdEncoding.EncodeToString([]byte("xy" + c + "t"))},
		{name: "base64 shift 0 with tail", text: base64.StdEncoding.EncodeToString([]byte("xyz" + c + "?"))},
		{name: "base64url shift 1", text: base64.RawURLEncoding.EncodeToString([]byte("x" + c + "zz"))},
		{name: "query escaped", text: "https://x.example/?t=" + url.QueryEscape(c)},
		{name: "path escaped", text: "https://x.example/" + url.PathEscape(c)},
		{name: "json", text: `{"t":` + jsonString(c) + `}`},
		{name: "go quoted", text: fmt.Sprintf("%q", c)},
		{name: "hex", text: hex.EncodeToString(b)},
		{name: "hex upper", text: fmt.Sprintf("%X", c)},
		{name: "hex via fmt", text: fmt.Sprintf("%x", c)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !redact.Contains([]byte(tt.text), c) {
				t.Errorf("Contains(%q) = false; want true", tt.text)
			}
		})
	}
}

func TestFormsCleanText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
	}{
		{name: "empty", text: ""},
		{name: "placeholder", text: `{"token":"[REDACTED]"}`},
		{name: "near miss", text: "canary-7f3c9e1d-SECRE canary-7f3c9e1d-secret"},
		{name: "other base64", text: base64.StdEncoding.EncodeToString([]byte("bot:ghp_0000000000000000000000"))},
		{name: "error message", text: "secret_malformed: the secret ci/github has no key 'token'; keys found: pat, username"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if form, found := redact.Find([]byte(tt.text), canary); found {
				t.Errorf("Find(%q) found %q; want nothing", tt.text, form)
			}
		})
	}
}

func TestFormsList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		canary    string
		wantLen   int // 0: only check the properties below
		wantForms []string
	}{
		{name: "empty canary", canary: "", wantLen: 0},
		{name: "short canary has no fragments", canary: "ab<", wantForms: []string{"ab<", "YWI8", "6162" + "3c", "ab%3C", `ab\u003c`}},
		{name: "long canary", canary: canary, wantForms: []string{canary, hex.EncodeToString([]byte(canary))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			forms := redact.Forms(tt.canary)
			if tt.canary == "" && len(forms) != 0 {
				t.Fatalf("Forms(\"\") = %q; want none (an empty canary would match everything)", forms)
			}
			seen := map[string]bool{}
			for _, f := range forms {
				if f == "" {
					t.Errorf("Forms(%q) holds an empty form", tt.canary)
				}
				if seen[f] {
					t.Errorf("Forms(%q) holds %q twice", tt.canary, f)
				}
				seen[f] = true
			}
			for _, w := range tt.wantForms {
				if !seen[w] {
					t.Errorf("Forms(%q) = %q; want it to hold %q", tt.canary, forms, w)
				}
			}
			if len(tt.canary) < 12 {
				for _, f := range forms {
					if len(f) < len(tt.canary) {
						t.Errorf("Forms(%q) holds %q, shorter than the canary", tt.canary, f)
					}
				}
			}
		})
	}
}

func TestFormsFragmentsAreStable(t *testing.T) {
	t.Parallel()
	// Every base64 encoding of a text holding the canary, at any offset and
	// with any neighbours, must contain one of the forms.
	for pre := 0; pre < 6; pre++ {
		for post := 0; post < 4; post++ {
			for _, fill := range []byte{0x00, 'A', 0xff} {
				text := strings.Repeat(string(fill), pre) + canary + strings.Repeat(string(fill), post)
				for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
					out := enc.EncodeToString([]byte(text))
					if !redact.Contains([]byte(out), canary) {
						t.Errorf("pre=%d post=%d fill=%#x: %q not found", pre, post, fill, out)
					}
				}
			}
		}
	}
}
