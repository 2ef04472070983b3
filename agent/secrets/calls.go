package secrets

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orchestrator/orchestrator/protocol"
)

// This file holds what the cloud backends share around their calls to a
// secret manager: the debug log line of each call, and making text from a
// server or an SDK safe and short enough for a message.

// maxNameText bounds a secret or vault name quoted in a message; maxServerText
// bounds text quoted from a server or an SDK. Both keep a message well under
// protocol.MaxMessageText.
const (
	maxNameText   = 512
	maxServerText = 400
)

// clip bounds s for a message: one line of printable characters, at most
// n bytes (cut at a rune boundary, marked with an ellipsis).
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// outcome names how a call ended for the log: "ok", the error code,
// "timeout" or "canceled".
func outcome(err error) string {
	var pe *protocol.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &pe):
		return string(pe.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return string(protocol.CodeTimeout)
	case errors.Is(err, context.Canceled):
		return string(protocol.CodeCanceled)
	}
	return string(protocol.CodeInternal)
}

// logCall writes the debug line of one call to a secret manager: which
// backend, which reference, how long, how it ended. Never a value: err is a
// *protocol.Error (whose message holds none) or a context error, and detail
// is text from the SDK about a failure, which holds no value either (values
// come only in successful answers).
func logCall(log *zap.Logger, backend string, ref protocol.SecretRef, start time.Time, err error, detail string) {
	ce := log.Check(zapcore.DebugLevel, "secret manager call")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("backend", backend),
		zap.Stringer("secret_ref", ref),
		zap.Int64("duration_ms", time.Since(start).Milliseconds()),
		zap.String("outcome", outcome(err)),
	}
	if err != nil {
		fields = append(fields, zap.String("error", err.Error()))
	}
	if detail != "" {
		fields = append(fields, zap.String("sdk_error", clip(detail, 2*maxServerText)))
	}
	ce.Write(fields...)
}
