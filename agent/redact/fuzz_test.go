package redact_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
)

// render prints s in every way the agent might print it: fmt verbs on the
// Secret and on structs holding it (exported and unexported fields),
// encoding/json, encoding.TextMarshaler, log/slog and wrapped errors.
func render(t testing.TB, s redact.Secret) []string {
	t.Helper()
	h := holder{Exported: s, unexported: s, Pointer: &s, Slice: []redact.Secret{s}, Map: map[string]redact.Secret{"k": s}, Any: s}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%p", "%10.2s", "%-12v"} {
		out = append(out,
			fmt.Sprintf(verb, s),
			fmt.Sprintf(verb, &s),
			fmt.Sprintf(verb, h),
			fmt.Sprintf(verb, &h))
	}
	out = append(out, fmt.Sprint(s, h), fmt.Sprintln(s, h), s.String(), s.GoString())
	out = append(out, fmt.Errorf("resolve %v: %w", s, fmt.Errorf("inner %s", s)).Error())
	for _, v := range []any{s, &s, h, &h} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		out = append(out, string(b))
	}
	text, err := s.MarshalText()
	if err != nil {
		t.Fatalf("MarshalText: %v", err)
	}
	out = append(out, string(text))
	noTime := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	var buf bytes.Buffer
	for _, log := range []*slog.Logger{slog.New(slog.NewTextHandler(&buf, noTime)), slog.New(slog.NewJSONHandler(&buf, noTime))} {
		log.Info("resolved", "token", s, "holder", h)
	}
	out = append(out, buf.String())
	return out
}

// addresses matches what fmt prints for the function inside a Secret held in
// an unexported field: a hex or decimal address, which differs between runs.
var addresses = regexp.MustCompile(`(0[xX])?[0-9a-fA-F]{6,}`)

// FuzzSecretNeverPrints checks that what any printer makes of a Secret does
// not depend on its value (memory addresses aside), so the value cannot
// show, and that the value is not in the output unless the output of a
// different secret holds it too (a value such as "RED", "{" or "22").
func FuzzSecretNeverPrints(f *testing.F) {
	for _, seed := range []string{canary, "", "[REDACTED]", "REDACTED", "ghp_0123456789abcdefABCDEF0123456789abcd", "p\"a\\s\ns\x00w", "pässwörd", "%v%s%!"} {
		f.Add(seed)
	}
	ref := render(f, redact.New("reference-value-0000"))
	f.Fuzz(func(t *testing.T, v string) {
		got := render(t, redact.New(v))
		if len(got) != len(ref) {
			t.Fatalf("render made %d outputs; the reference %d", len(got), len(ref))
		}
		for i := range got {
			// Addresses are masked on both sides: a leak in place of the
			// placeholder still differs from the reference, masked or not.
			g, r := addresses.ReplaceAllString(got[i], "ADDR"), addresses.ReplaceAllString(ref[i], "ADDR")
			if g != r {
				t.Fatalf("output %d depends on the value %q:\n got %q\nwant %q", i, v, g, r)
			}
			if v != "" && strings.Contains(g, v) && !strings.Contains(r, v) {
				t.Fatalf("output %d holds the value %q: %q", i, v, got[i])
			}
		}
	})
}
