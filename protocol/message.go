package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on what either side reads from the network.
const (
	// MaxFrameSize bounds one websocket frame, in bytes. Larger frames are
	// refused by the reader (the connection is closed with
	// CloseMessageTooBig) and never decoded.
	MaxFrameSize = 256 << 10
	// MaxDepth bounds the nesting of JSON objects and arrays in a frame.
	MaxDepth = 16
	// MaxIDLength bounds message, job, agent and session ids.
	MaxIDLength = 128
	// MaxMessageText bounds human-readable texts (error messages, reasons).
	MaxMessageText = 4096
	// MaxListLength bounds lists carried in a message (job ids, scopes,
	// organizations, backends).
	MaxListLength = 10000
)

// Type names a message and the one body field it carries.
type Type string

// Message types of protocol v1. The arrow says who sends it.
const (
	TypeChallenge Type = "challenge"  // control plane → agent, first frame
	TypeHello     Type = "hello"      // agent → control plane, signed answer
	TypeWelcome   Type = "welcome"    // control plane → agent, session open
	TypeHeartbeat Type = "heartbeat"  // agent → control plane, every interval
	TypeJob       Type = "job"        // control plane → agent
	TypeAccepted  Type = "accepted"   // agent → control plane
	TypeRejected  Type = "rejected"   // agent → control plane
	TypeResult    Type = "result"     // agent → control plane
	TypeResultAck Type = "result_ack" // control plane → agent
	TypeCancel    Type = "cancel"     // control plane → agent
	TypeDraining  Type = "draining"   // agent → control plane
	TypeError     Type = "error"      // either way, about a message received
)

// Message is the envelope of every frame. Type says which one body field is
// set; the others are nil. Decoding fills the typed body in one pass.
type Message struct {
	// Type names the message; see the Type constants.
	Type Type `json:"type"`
	// ID identifies this message, so that an error reply can name it.
	// Optional; at most MaxIDLength bytes.
	ID string `json:"id,omitempty"`

	Challenge *Challenge `json:"challenge,omitempty"`
	Hello     *Hello     `json:"hello,omitempty"`
	Welcome   *Welcome   `json:"welcome,omitempty"`
	Heartbeat *Heartbeat `json:"heartbeat,omitempty"`
	Job       *Job       `json:"job,omitempty"`
	Accepted  *Accepted  `json:"accepted,omitempty"`
	Rejected  *Rejected  `json:"rejected,omitempty"`
	Result    *Result    `json:"result,omitempty"`
	ResultAck *ResultAck `json:"result_ack,omitempty"`
	Cancel    *Cancel    `json:"cancel,omitempty"`
	Draining  *Draining  `json:"draining,omitempty"`
	Error     *ErrorBody `json:"error,omitempty"`
}

// ErrorBody answers a message that could not be handled: an unknown type, a
// malformed body. The connection stays open.
type ErrorBody struct {
	Error
	// RefID is the ID of the message this answers, when it had one.
	RefID string `json:"ref_id,omitempty"`
	// RefType is the type of the message this answers, when it was read.
	RefType Type `json:"ref_type,omitempty"`
}

// Validate checks a received error body.
func (b *ErrorBody) Validate() error {
	if err := b.Error.Validate(); err != nil {
		return err
	}
	if err := checkID("ref_id", b.RefID, false); err != nil {
		return err
	}
	return checkLen("ref_type", string(b.RefType), MaxIDLength)
}

// Sentinel errors of Decode, for callers that branch on them. The error
// returned wraps one of them.
var (
	ErrFrameTooLarge = errors.New("frame too large")
	ErrMalformed     = errors.New("malformed message")
	ErrUnknownType   = errors.New("unknown message type")
)

// DecodeError is returned by Decode. It names the error code to answer with
// and, when the envelope could be read, the message's type and id so the
// reply can refer to it.
type DecodeError struct {
	Code ErrorCode
	Type Type
	ID   string
	Err  error
}

func (e *DecodeError) Error() string {
	if e.Type != "" {
		return fmt.Sprintf("decode %s message: %v", e.Type, e.Err)
	}
	return "decode message: " + e.Err.Error()
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Reply builds the error message that answers the frame that failed. It
// is always a valid message: the text is cut to MaxMessageText at a rune
// boundary, and a type or id that could not travel is left out.
func (e *DecodeError) Reply() *Message {
	msg := truncate(strings.ToValidUTF8(e.Err.Error(), "\uFFFD"), MaxMessageText)
	b := &ErrorBody{Error: Error{Code: e.Code, Message: msg}, RefType: e.Type}
	if len(b.RefType) > MaxIDLength || !utf8.ValidString(string(b.RefType)) {
		b.RefType = ""
	}
	if checkID("ref_id", e.ID, false) == nil {
		b.RefID = e.ID
	}
	return &Message{Type: TypeError, Error: b}
}

// Encode marshals m after validating it, so that neither side sends what the
// other would refuse.
func Encode(m *Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("encode %s message: %w", m.Type, err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s message: %w", m.Type, err)
	}
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("encode %s message: %d bytes: %w (limit %d)", m.Type, len(b), ErrFrameTooLarge, MaxFrameSize)
	}
	return b, nil
}

// Decode reads one frame: it refuses frames over MaxFrameSize or nested
// deeper than MaxDepth, decodes the envelope and its typed body in one pass,
// and validates the result. Unknown fields are ignored. Every error is a
// *DecodeError.
func Decode(frame []byte) (*Message, error) {
	if len(frame) > MaxFrameSize {
		return nil, &DecodeError{Code: CodeFrameTooLarge, Err: fmt.Errorf("%d bytes: %w (limit %d)", len(frame), ErrFrameTooLarge, MaxFrameSize)}
	}
	if err := checkDepth(frame, MaxDepth); err != nil {
		return nil, &DecodeError{Code: CodeMalformedMessage, Err: fmt.Errorf("%w: %v", ErrMalformed, err)}
	}
	var m Message
	if err := json.Unmarshal(frame, &m); err != nil {
		de := &DecodeError{Code: CodeMalformedMessage, Err: fmt.Errorf("%w: %v", ErrMalformed, err)}
		// Name the message in the reply when at least the envelope reads.
		var env struct {
			Type Type   `json:"type"`
			ID   string `json:"id"`
		}
		if json.Unmarshal(frame, &env) == nil {
			de.Type, de.ID = env.Type, env.ID
		}
		return nil, de
	}
	if err := m.Validate(); err != nil {
		code := CodeMalformedMessage
		if errors.Is(err, ErrUnknownType) {
			code = CodeUnknownType
		}
		return nil, &DecodeError{Code: code, Type: m.Type, ID: m.ID, Err: err}
	}
	return &m, nil
}

// Validate checks that exactly the body named by Type is set and valid.
func (m *Message) Validate() error {
	if m.Type == "" {
		return fmt.Errorf("%w: the type field is missing", ErrMalformed)
	}
	if err := checkID("id", m.ID, false); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	bodies := 0
	for _, set := range []bool{
		m.Challenge != nil, m.Hello != nil, m.Welcome != nil, m.Heartbeat != nil,
		m.Job != nil, m.Accepted != nil, m.Rejected != nil, m.Result != nil,
		m.ResultAck != nil, m.Cancel != nil, m.Draining != nil, m.Error != nil,
	} {
		if set {
			bodies++
		}
	}
	var body validator
	switch m.Type {
	case TypeChallenge:
		body = nilable(m.Challenge)
	case TypeHello:
		body = nilable(m.Hello)
	case TypeWelcome:
		body = nilable(m.Welcome)
	case TypeHeartbeat:
		body = nilable(m.Heartbeat)
	case TypeJob:
		body = nilable(m.Job)
	case TypeAccepted:
		body = nilable(m.Accepted)
	case TypeRejected:
		body = nilable(m.Rejected)
	case TypeResult:
		body = nilable(m.Result)
	case TypeResultAck:
		body = nilable(m.ResultAck)
	case TypeCancel:
		body = nilable(m.Cancel)
	case TypeDraining:
		body = nilable(m.Draining)
	case TypeError:
		body = nilable(m.Error)
	default:
		return fmt.Errorf("%w %q", ErrUnknownType, truncate(string(m.Type), 64))
	}
	if body == nil {
		return fmt.Errorf("%w: a %s message needs its %q body", ErrMalformed, m.Type, m.Type)
	}
	if bodies != 1 {
		return fmt.Errorf("%w: a %s message carries %d bodies; exactly one is allowed", ErrMalformed, m.Type, bodies)
	}
	if err := body.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

type validator interface{ Validate() error }

// nilable turns a typed nil pointer into a nil interface.
func nilable[T any, P interface {
	*T
	validator
}](p P) validator {
	if p == nil {
		return nil
	}
	return p
}

// checkDepth scans JSON text and fails when objects and arrays nest deeper
// than max. It tracks strings so brackets inside them do not count; the
// full syntax check is left to encoding/json.
func checkDepth(b []byte, max int) error {
	depth := 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > max {
				return fmt.Errorf("JSON nested deeper than %d levels", max)
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}

func checkID(field, id string, required bool) error {
	if id == "" {
		if required {
			return fmt.Errorf("%s is required", field)
		}
		return nil
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%s is %d bytes; at most %d", field, len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("%s holds a space, control or non-ASCII character", field)
		}
	}
	return nil
}

func checkLen(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes; at most %d", field, len(s), max)
	}
	return nil
}

func checkList[T any](field string, l []T) error {
	if len(l) > MaxListLength {
		return fmt.Errorf("%s has %d entries; at most %d", field, len(l), MaxListLength)
	}
	return nil
}

// truncate cuts s to at most n bytes, backing off to the start of a rune so
// that a valid UTF-8 text stays valid (JSON would turn a cut rune into
// U+FFFD, longer than the limit).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n]
}
