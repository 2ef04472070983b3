package protocol

import "fmt"

// ErrorCode is one of the closed list of codes shared by the agent protocol
// and the HTTP API. Each comes with a message that a person can act on.
type ErrorCode string

// The closed list of error codes.
const (
	// Secret backends.
	CodeSecretNotFound           ErrorCode = "secret_not_found"
	CodeSecretAccessDenied       ErrorCode = "secret_access_denied"
	CodeSecretMalformed          ErrorCode = "secret_malformed"
	CodeSecretBackendUnavailable ErrorCode = "secret_backend_unavailable"

	// The agent's local policy.
	CodeHostNotAllowed   ErrorCode = "host_not_allowed"
	CodeSecretNotAllowed ErrorCode = "secret_not_allowed"
	CodeKindNotAllowed   ErrorCode = "kind_not_allowed"

	// GitHub.
	CodeGitHubUnreachable    ErrorCode = "github_unreachable"
	CodeGitHubTLS            ErrorCode = "github_tls"
	CodeGitHubBadCredentials ErrorCode = "github_bad_credentials"
	CodeGitHubForbidden      ErrorCode = "github_forbidden"
	CodeGitHubSSORequired    ErrorCode = "github_sso_required"
	CodeGitHubRateLimited    ErrorCode = "github_rate_limited"
	CodeGitHubNotFound       ErrorCode = "github_not_found"

	// Jobs and agents.
	CodeTimeout       ErrorCode = "timeout"
	CodeCanceled      ErrorCode = "canceled"
	CodeAgentOffline  ErrorCode = "agent_offline"
	CodeAgentBusy     ErrorCode = "agent_busy"
	CodeInvalidParams ErrorCode = "invalid_params"
	CodeInternal      ErrorCode = "internal"

	// Protocol and API.
	CodeNotImplemented    ErrorCode = "not_implemented"
	CodeUnknownType       ErrorCode = "unknown_type"
	CodeMalformedMessage  ErrorCode = "malformed_message"
	CodeFrameTooLarge     ErrorCode = "frame_too_large"
	CodeUnauthorized      ErrorCode = "unauthorized"
	CodeNotFound          ErrorCode = "not_found"
	CodeConflict          ErrorCode = "conflict"
	CodeTokenInvalid      ErrorCode = "enrollment_token_invalid"
	CodeAgentRevoked      ErrorCode = "agent_revoked"
	CodeVersionMismatch   ErrorCode = "incompatible_version"
	CodeUnavailable       ErrorCode = "unavailable"
	CodeMethodNotAllowed  ErrorCode = "method_not_allowed"
	CodeRequestTooLarge   ErrorCode = "request_too_large"
	CodeJobNotCancellable ErrorCode = "job_not_cancellable"

	// Saved connections protected by a password (the header
	// X-Connection-Password).
	CodePasswordRequired ErrorCode = "password_required"
	CodePasswordInvalid  ErrorCode = "password_invalid"
	CodeTooManyAttempts  ErrorCode = "too_many_attempts"
)

// ErrorCodes lists every code, in the order of the documentation.
var ErrorCodes = []ErrorCode{
	CodeSecretNotFound, CodeSecretAccessDenied, CodeSecretMalformed, CodeSecretBackendUnavailable,
	CodeHostNotAllowed, CodeSecretNotAllowed, CodeKindNotAllowed,
	CodeGitHubUnreachable, CodeGitHubTLS, CodeGitHubBadCredentials, CodeGitHubForbidden,
	CodeGitHubSSORequired, CodeGitHubRateLimited, CodeGitHubNotFound,
	CodeTimeout, CodeCanceled, CodeAgentOffline, CodeAgentBusy, CodeInvalidParams, CodeInternal,
	CodeNotImplemented, CodeUnknownType, CodeMalformedMessage, CodeFrameTooLarge,
	CodeUnauthorized, CodeNotFound, CodeConflict, CodeTokenInvalid, CodeAgentRevoked,
	CodeVersionMismatch, CodeUnavailable, CodeMethodNotAllowed, CodeRequestTooLarge,
	CodeJobNotCancellable,
	CodePasswordRequired, CodePasswordInvalid, CodeTooManyAttempts,
}

var knownCodes = func() map[ErrorCode]bool {
	m := make(map[ErrorCode]bool, len(ErrorCodes))
	for _, c := range ErrorCodes {
		m[c] = true
	}
	return m
}()

// Known reports whether c is in the closed list.
func (c ErrorCode) Known() bool { return knownCodes[c] }

// Error is a coded error: the code for programs, the message for people.
// It is the body of an error message, the error of a failed job, and the
// payload of an HTTP API error. The message never holds a secret value.
type Error struct {
	// Code is one of [ErrorCodes].
	Code ErrorCode `json:"code"`
	// Message says what went wrong and what to change, for a person.
	Message string `json:"message"`
}

// Errorf builds an *Error with a formatted message.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Validate checks a received error body.
func (e *Error) Validate() error {
	if !e.Code.Known() {
		return fmt.Errorf("error code %q is not one of the protocol's codes", e.Code)
	}
	if len(e.Message) > MaxMessageText {
		return fmt.Errorf("error message is %d bytes; at most %d", len(e.Message), MaxMessageText)
	}
	return nil
}

// APIError is the body of every HTTP API error: {"error":{"code":…,"message":…}}.
type APIError struct {
	Error Error `json:"error"`
}
