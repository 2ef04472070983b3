package redact_test

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/redact"
)

const canary = "canary-7f3c9e1d-SECRET"

// Interface guards: the ways a Secret reaches an encoder.
var (
	_ fmt.Stringer           = redact.Secret{}
	_ fmt.GoStringer         = redact.Secret{}
	_ fmt.Formatter          = redact.Secret{}
	_ json.Marshaler         = redact.Secret{}
	_ encoding.TextMarshaler = redact.Secret{}
	_ slog.LogValuer         = redact.Secret{}
)

func TestReveal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		s         redact.Secret
		want      string
		wantEmpty bool
	}{
		{name: "value", s: redact.New(canary), want: canary},
		{name: "new empty", s: redact.New(""), want: "", wantEmpty: true},
		{name: "zero value", s: redact.Secret{}, want: "", wantEmpty: true},
		{name: "multibyte", s: redact.New("pässwörd"), want: "pässwörd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.s.Reveal(); got != tt.want {
				t.Errorf("Reveal() = %q, want %q", got, tt.want)
			}
			if got := tt.s.Empty(); got != tt.wantEmpty {
				t.Errorf("Empty() = %v, want %v", got, tt.wantEmpty)
			}
			if got := tt.s.Len(); got != len(tt.want) {
				t.Errorf("Len() = %d, want %d", got, len(tt.want))
			}
		})
	}
}

func TestEqual(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b redact.Secret
		want bool
	}{
		{name: "same value, different secrets", a: redact.New("abc"), b: redact.New("abc"), want: true},
		{name: "different values", a: redact.New("abc"), b: redact.New("abd"), want: false},
		{name: "prefix", a: redact.New("abc"), b: redact.New("abcd"), want: false},
		{name: "zero and new empty", a: redact.Secret{}, b: redact.New(""), want: true},
		{name: "zero and value", a: redact.Secret{}, b: redact.New("x"), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.a.Equal(tt.b); got != tt.want {
				t.Errorf("Equal() = %v, want %v", got, tt.want)
			}
			if got := tt.b.Equal(tt.a); got != tt.want {
				t.Errorf("Equal() reversed = %v, want %v", got, tt.want)
			}
		})
	}
}

// holder has a Secret in each position a printer reaches it by.
type holder struct {
	Exported   redact.Secret
	unexported redact.Secret
	Pointer    *redact.Secret
	Slice      []redact.Secret
	Map        map[string]redact.Secret
	Any        any
}

func newHolder(v string) holder {
	s := redact.New(v)
	return holder{
		Exported:   s,
		unexported: s,
		Pointer:    &s,
		Slice:      []redact.Secret{s},
		Map:        map[string]redact.Secret{"k": s},
		Any:        s,
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	s := redact.New(canary)
	tests := []struct {
		name   string
		format string
		arg    any
		want   string // exact output; empty means "check only for leaks"
	}{
		{name: "v", format: "%v", arg: s, want: "[REDACTED]"},
		{name: "plus v", format: "%+v", arg: s, want: "[REDACTED]"},
		{name: "sharp v", format: "%#v", arg: s, want: "[REDACTED]"},
		{name: "s", format: "%s", arg: s, want: "[REDACTED]"},
		{name: "q", format: "%q", arg: s, want: `"[REDACTED]"`},
		{name: "x", format: "%x", arg: s, want: "[REDACTED]"},
		{name: "X", format: "%X", arg: s, want: "[REDACTED]"},
		{name: "d", format: "%d", arg: s, want: "[REDACTED]"},
		{name: "t", format: "%t", arg: s, want: "[REDACTED]"},
		{name: "width", format: "%12s|", arg: s, want: "  [REDACTED]|"},
		{name: "minus width", format: "%-12s|", arg: s, want: "[REDACTED]  |"},
		{name: "wide width", format: "%50s", arg: s, want: strings.Repeat(" ", 40) + "[REDACTED]"},
		{name: "precision ignored", format: "%.3s", arg: s, want: "[REDACTED]"},
		{name: "pointer v", format: "%v", arg: &s, want: "[REDACTED]"},
		{name: "T", format: "%T", arg: s, want: "redact.Secret"},
		{name: "empty secret", format: "%v", arg: redact.New(""), want: "[REDACTED]"},
		{name: "zero secret", format: "%v", arg: redact.Secret{}, want: "[REDACTED]"},
		{name: "slice", format: "%v", arg: []redact.Secret{s, s}, want: "[[REDACTED] [REDACTED]]"},
		{name: "wrapped error", format: "%v", arg: fmt.Errorf("token %v: %w", s, errors.New("bad")), want: "token [REDACTED]: bad"},
		{name: "p", format: "%p", arg: s},
		{name: "pointer p", format: "%p", arg: &s},
		{name: "struct v", format: "%v", arg: newHolder(canary)},
		{name: "struct plus v", format: "%+v", arg: newHolder(canary)},
		{name: "struct sharp v", format: "%#v", arg: newHolder(canary)},
		{name: "struct s", format: "%s", arg: newHolder(canary)},
		{name: "struct x", format: "%x", arg: newHolder(canary)},
		{name: "struct q", format: "%q", arg: newHolder(canary)},
		{name: "struct pointer", format: "%+v", arg: func() *holder { h := newHolder(canary); return &h }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fmt.Sprintf(tt.format, tt.arg)
			if form, leaked := redact.Find([]byte(got), canary); leaked {
				t.Fatalf("Sprintf(%q) = %q leaks the value as %q", tt.format, got, form)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("Sprintf(%q) = %q, want %q", tt.format, got, tt.want)
			}
		})
	}
}

func TestStructPrintsPlaceholder(t *testing.T) {
	t.Parallel()
	// Fields that fmt can call methods on print the placeholder; the
	// unexported one prints as an address, which shows nothing either.
	got := fmt.Sprintf("%+v", newHolder(canary))
	for _, want := range []string{
		"Exported:[REDACTED]",
		"Slice:[[REDACTED]]",
		"Map:map[k:[REDACTED]]",
		"Any:[REDACTED]",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("%%+v = %q, want it to contain %q", got, want)
		}
	}
}

func TestMethods(t *testing.T) {
	t.Parallel()
	s := redact.New(canary)
	text, err := s.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	js, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  string
		want string
	}{
		{name: "String", got: s.String(), want: "[REDACTED]"},
		{name: "GoString", got: s.GoString(), want: "[REDACTED]"},
		{name: "MarshalText", got: string(text), want: "[REDACTED]"},
		{name: "MarshalJSON", got: string(js), want: `"[REDACTED]"`},
		{name: "LogValue", got: s.LogValue().String(), want: "[REDACTED]"},
		{name: "LogValue kind", got: s.LogValue().Kind().String(), want: "String"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.got != tt.want {
				t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	s := redact.New(canary)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{name: "bare", v: s, want: `"[REDACTED]"`},
		{name: "pointer", v: &s, want: `"[REDACTED]"`},
		{name: "struct", v: newHolder(canary), want: `{"Exported":"[REDACTED]","Pointer":"[REDACTED]","Slice":["[REDACTED]"],"Map":{"k":"[REDACTED]"},"Any":"[REDACTED]"}`},
		{name: "in any slice", v: []any{s, "x"}, want: `["[REDACTED]","x"]`},
		{name: "tagged", v: struct {
			Token redact.Secret `json:"token,omitempty"`
		}{s}, want: `{"token":"[REDACTED]"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if redact.Contains(b, canary) {
				t.Fatalf("json.Marshal = %s leaks the value", b)
			}
			if string(b) != tt.want {
				t.Errorf("json.Marshal = %s, want %s", b, tt.want)
			}
		})
	}
}

func TestJSONCannotDecodeIntoSecret(t *testing.T) {
	t.Parallel()
	var s redact.Secret
	if err := json.Unmarshal([]byte(`"`+canary+`"`), &s); err == nil {
		t.Fatalf("json.Unmarshal into a Secret succeeded (Reveal = %q); want an error", s.Reveal())
	}
	if !s.Empty() {
		t.Errorf("after a failed decode the Secret holds %d bytes; want empty", s.Len())
	}
}

func TestSlog(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler func(*bytes.Buffer) slog.Handler
		want    string
	}{
		{name: "text", handler: func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }, want: `token=[REDACTED]`},
		{name: "json", handler: func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }, want: `"token":"[REDACTED]"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(tt.handler(&buf))
			s := redact.New(canary)
			log.Info("resolved", "token", s)
			log.Info("resolved", slog.Any("token", s), slog.Group("g", "token", s))
			log.Info("resolved", "holder", newHolder(canary))
			if form, leaked := redact.Find(buf.Bytes(), canary); leaked {
				t.Fatalf("slog output leaks the value as %q:\n%s", form, buf.String())
			}
			if !strings.Contains(buf.String(), tt.want) {
				t.Errorf("slog output = %s; want it to contain %s", buf.String(), tt.want)
			}
		})
	}
}
