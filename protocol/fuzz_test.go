package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"
)

// The seed corpus of each target is committed in testdata/fuzz/<Target>;
// `go test` runs every seed as a test. The FuzzDecode seeds named golden-*
// are the golden frames (TestFuzzSeedsMatchGolden keeps them current); the
// others are hostile frames and inputs that the fuzzer once found.
//
// Run a target with, for example:
//
//	go test ./protocol -run='^$' -fuzz='^FuzzDecode$' -fuzztime=1m

// fuzzSeedFile returns a corpus file holding one []byte argument.
func fuzzSeedFile(b []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n")
}

// FuzzDecode checks what every reader of the websocket relies on: Decode
// never panics; what it accepts can be sent on unchanged (Encode succeeds,
// and the encoding is a fixpoint); what it refuses gets an error reply that
// is itself a valid message the peer can read.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Decode(frame)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned both a message and %v", err)
			}
			de, ok := err.(*DecodeError)
			if !ok {
				t.Fatalf("Decode error is a %T, not a *DecodeError: %v", err, err)
			}
			if !de.Code.Known() {
				t.Fatalf("DecodeError code %q is not known", de.Code)
			}
			reply := de.Reply()
			b, err := Encode(reply)
			if err != nil {
				t.Fatalf("Encode(Reply()) = %v\nreply: %+v", err, reply.Error)
			}
			if _, err := Decode(b); err != nil {
				t.Fatalf("the peer cannot read the reply: %v\nreply: %q", err, b)
			}
			return
		}
		b1, err := Encode(m)
		if err != nil {
			// The canonical form can be longer than the frame (encoding/json
			// escapes <, > and & as \u003c, fields left out are written with
			// their zero value), so a frame near the limit may not re-encode
			// under it. Anything else is a bug.
			if errors.Is(err, ErrFrameTooLarge) && len(frame) > MaxFrameSize/8 {
				t.Skipf("a %d-byte frame re-encodes over the limit", len(frame))
			}
			t.Fatalf("Encode of a decoded message: %v\nframe: %q", err, frame)
		}
		m2, err := Decode(b1)
		if err != nil {
			t.Fatalf("Decode(Encode(m)): %v\nframe: %q\nencoded: %q", err, frame, b1)
		}
		b2, err := Encode(m2)
		if err != nil {
			t.Fatalf("Encode(Decode(Encode(m))): %v", err)
		}
		if !bytes.Equal(b1, b2) {
			t.Fatalf("encoding is not a fixpoint:\nfirst:  %q\nsecond: %q", b1, b2)
		}
	})
}

// FuzzDurationUnmarshal: UnmarshalText never panics, and what it reads
// writes back to a text that reads as the same value.
func FuzzDurationUnmarshal(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err != nil {
			return
		}
		out, err := d.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText(%d): %v", d, err)
		}
		var back Duration
		if err := back.UnmarshalText(out); err != nil {
			t.Fatalf("UnmarshalText(%q) (from %q): %v", out, s, err)
		}
		if back != d {
			t.Fatalf("%q reads as %d, writes as %q, reads back as %d", s, d, out, back)
		}
		// And the same through JSON, as it travels.
		j, err := json.Marshal(struct{ D Duration }{d})
		if err != nil {
			t.Fatal(err)
		}
		var w struct{ D Duration }
		if err := json.Unmarshal(j, &w); err != nil || w.D != d {
			t.Fatalf("JSON round trip of %d: %s → %d, %v", d, j, w.D, err)
		}
	})
}

// FuzzParsePublicKey: ParsePublicKey never panics, and a key it accepts is
// 32 bytes that EncodePublicKey writes back to a text that reads as the
// same key. (It also accepts a few other texts for the same key: CR and LF
// inside, non-zero trailing bits. The control plane stores the key's bytes,
// not the text, so that is harmless.)
func FuzzParsePublicKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err != nil {
			if k != nil {
				t.Fatalf("ParsePublicKey returned a key with its error")
			}
			return
		}
		if len(k) != 32 {
			t.Fatalf("ParsePublicKey(%q) returned %d bytes", s, len(k))
		}
		enc := EncodePublicKey(k)
		back, err := ParsePublicKey(enc)
		if err != nil || !back.Equal(k) {
			t.Fatalf("ParsePublicKey(%q) = %x; EncodePublicKey writes %q, which reads as %x, %v", s, k, enc, back, err)
		}
	})
}

// FuzzEnrollRequest: reading an enrollment body and validating it never
// panics, and a valid request survives a JSON round trip unchanged and
// still valid.
func FuzzEnrollRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		var r EnrollRequest
		if err := json.Unmarshal(body, &r); err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("Marshal of a valid request: %v", err)
		}
		var back EnrollRequest
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r, back)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("round trip made the request invalid: %v", err)
		}
	})
}
