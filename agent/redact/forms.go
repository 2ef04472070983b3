package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// minFragment is the shortest canary for which [Forms] adds the base64
// fragments that find the canary inside a longer encoded text. Below it the
// fragments are short enough to match unrelated base64 by chance.
const minFragment = 12

// Forms returns the shapes in which canary could appear in output if it
// leaked, without duplicates and without empty strings:
//
//   - the raw value;
//   - base64, standard and URL alphabets, with and without padding;
//   - for canaries of 12 bytes or more, the part of the base64 encoding
//     (both alphabets) that stays the same wherever the canary sits inside a
//     longer encoded value, at each of the three byte alignments. This finds
//     the canary in an HTTP Basic header (base64 of "user:token");
//   - URL query escaping and path escaping;
//   - JSON string escaping (the inside of a JSON string, with and without
//     HTML escaping, and as zap's JSON encoder escapes it) and Go quoting
//     (the inside of a %q string);
//   - hex, lower and upper case.
//
// Use a long, random canary ("canary-7f3c9e1d-SECRET") so that no form can
// match by chance.
func Forms(canary string) []string {
	if canary == "" {
		return nil
	}
	b := []byte(canary)
	forms := []string{
		canary,
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		url.QueryEscape(canary),
		url.PathEscape(canary),
		jsonInside(canary, true),
		jsonInside(canary, false),
		zapInside(canary),
		strings.Trim(strconv.Quote(canary), `"`),
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
	}
	if len(b) >= minFragment {
		for shift := 1; shift < 3; shift++ {
			forms = append(forms,
				base64Fragment(base64.RawStdEncoding, b, shift),
				base64Fragment(base64.RawURLEncoding, b, shift))
		}
		// At shift 0 the stable part is the unpadded encoding without its
		// last, partial character.
		forms = append(forms,
			base64Fragment(base64.RawStdEncoding, b, 0),
			base64Fragment(base64.RawURLEncoding, b, 0))
	}
	seen := make(map[string]bool, len(forms))
	out := forms[:0]
	for _, f := range forms {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		out = append(out, f)
	}
	return out
}

// Contains reports whether haystack holds any of [Forms](canary).
func Contains(haystack []byte, canary string) bool {
	_, ok := Find(haystack, canary)
	return ok
}

// Find returns the first of [Forms](canary) that haystack holds, so that a
// failing test can say how the canary leaked.
func Find(haystack []byte, canary string) (form string, found bool) {
	for _, f := range Forms(canary) {
		if bytes.Contains(haystack, []byte(f)) {
			return f, true
		}
	}
	return "", false
}

// jsonInside returns canary as encoding/json writes it inside a string.
func jsonInside(canary string, escapeHTML bool) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(canary); err != nil {
		return ""
	}
	s := strings.TrimSuffix(buf.String(), "\n")
	return s[1 : len(s)-1]
}

// zapInside returns canary as zap's JSON encoder writes it inside a string:
// unlike encoding/json it writes control characters other than \n, \r and
// \t as \u00XX (a form feed is \u000c, not \f), leaves <, >, & and
// U+2028 alone, and writes invalid UTF-8 as \ufffd.
func zapInside(canary string) string {
	const hexDigits = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(canary); {
		c := canary[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 0x20 && c != '\\' && c != '"':
				b.WriteByte(c)
			case c == '\\' || c == '"':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c == '\n':
				b.WriteString(`\n`)
			case c == '\r':
				b.WriteString(`\r`)
			case c == '\t':
				b.WriteString(`\t`)
			default:
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(canary[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(`\ufffd`)
		} else {
			b.WriteString(canary[i : i+size])
		}
		i += size
	}
	return b.String()
}

// base64Fragment returns the characters of the encoding of canary, placed
// shift bytes into a longer text, that depend only on canary's bytes: the
// characters that mix in bits of the bytes before or after it are dropped.
func base64Fragment(enc *base64.Encoding, canary []byte, shift int) string {
	buf := make([]byte, shift+len(canary))
	copy(buf[shift:], canary)
	s := enc.EncodeToString(buf)
	first := (8*shift + 5) / 6            // first character holding no prefix bit
	last := 8 * (shift + len(canary)) / 6 // characters made only of known bits
	if first >= last || last > len(s) {
		return ""
	}
	return s[first:last]
}
