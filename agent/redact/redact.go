// Package redact carries secret values through the agent so that they cannot
// be printed by accident.
//
// A [Secret] holds its value out of reach of fmt, encoding/json,
// encoding.TextMarshaler users, log/slog and reflection-based printers: every one of them
// prints [Placeholder] instead. The only way to get the value is
// [Secret.Reveal], which a reviewer can grep for.
//
// [Forms] and [Contains] are for tests: they list the shapes a leaked value
// could take in captured output (raw, base64, hex, URL- and JSON-escaped) so
// that a test can prove, with a canary value, that no shape of it got out.
package redact

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Placeholder is what a [Secret] prints as, whatever the verb or encoder.
const Placeholder = "[REDACTED]"

// Secret is a string value that prints as [Placeholder] everywhere.
//
// The value is held by a closure, not by a string or pointer field: a
// printer that cannot call Secret's methods (fmt printing a struct whose
// Secret field is unexported, fmt's error text for a wrong verb, or a
// reflection-based dumper that follows pointers) finds only a function and
// shows at most its address, never the value.
//
// A Secret is not comparable with == and cannot be a map key, on purpose.
// The zero Secret is empty and prints as [Placeholder] too: output never
// tells an empty secret from a set one. Secrets compare with [Secret.Equal]
// (go-cmp uses it too); reflect.DeepEqual sees any two non-zero Secrets as
// different, even copies of one. A Secret cannot be decoded from JSON or
// text: values come from secret backends through [New], never from the
// wire.
//
// zap needs no marshaller of its own: zap.Any and zap.Stringer use String,
// and zap.Reflect uses MarshalJSON.
type Secret struct {
	get func() string
}

// New wraps v.
func New(v string) Secret { return Secret{get: func() string { return v }} }

// Reveal returns the value. It is the only way to get it: call it where the
// value is handed to the one place that needs it (an HTTP Authorization
// header, an HMAC), never to log or return it.
func (s Secret) Reveal() string {
	if s.get == nil {
		return ""
	}
	return s.get()
}

// Empty reports whether the value is the empty string.
func (s Secret) Empty() bool { return s.Reveal() == "" }

// Len returns the length of the value in bytes.
func (s Secret) Len() int { return len(s.Reveal()) }

// Equal reports whether s and o hold the same value, in time that does not
// depend on where they differ.
func (s Secret) Equal(o Secret) bool {
	a, b := s.Reveal(), o.Reveal()
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// String returns [Placeholder].
func (s Secret) String() string { return Placeholder }

// GoString returns [Placeholder], for %#v.
func (s Secret) GoString() string { return Placeholder }

// Format writes [Placeholder] for every verb (%v %+v %#v %s %q %x %X %d ...).
// %q quotes it; a width pads it (right-aligned, or left with the '-' flag) so
// that tables stay aligned. Precision is ignored: it would cut the
// placeholder, not reveal anything, but a cut placeholder is harder to spot.
func (s Secret) Format(f fmt.State, verb rune) {
	text := Placeholder
	if verb == 'q' {
		text = `"` + Placeholder + `"`
	}
	pad := 0
	if w, ok := f.Width(); ok && w > len(text) {
		pad = w - len(text)
	}
	if pad > 0 && !f.Flag('-') {
		writeSpaces(f, pad)
	}
	_, _ = f.Write([]byte(text))
	if pad > 0 && f.Flag('-') {
		writeSpaces(f, pad)
	}
}

func writeSpaces(f fmt.State, n int) {
	const spaces = "                                "
	for n > 0 {
		k := min(n, len(spaces))
		_, _ = f.Write([]byte(spaces[:k]))
		n -= k
	}
}

// MarshalJSON returns the JSON string "[REDACTED]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Placeholder + `"`), nil }

// MarshalText returns [Placeholder]. It covers encoders that use
// encoding.TextMarshaler, such as YAML or TOML encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(Placeholder), nil }

// LogValue returns [Placeholder] as a slog string value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Placeholder) }
