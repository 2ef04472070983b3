package protocol

import "time"

// The web console's session (GET, POST and DELETE /api/v1/session): a
// person signs in with the admin token and the browser keeps an HttpOnly
// session cookie; the API then accepts the cookie in place of the Bearer
// token, and every state-changing request made with it must carry the
// session's CSRF token in CSRFHeader.

// CSRFHeader carries the console session's CSRF token on every
// state-changing request authorized by the session cookie.
const CSRFHeader = "X-CSRF-Token"

// SessionCookie is the name of the console's session cookie.
const SessionCookie = "orchestrator_session"

// SignInRequest is the body of POST /api/v1/session.
type SignInRequest struct {
	// Token is the control plane's admin token.
	Token string `json:"token"`
}

// ConsoleSession answers POST and GET /api/v1/session.
type ConsoleSession struct {
	// CSRFToken must be sent in CSRFHeader with every POST, PUT, PATCH and
	// DELETE that the session cookie authorizes.
	CSRFToken string `json:"csrf_token"`
	// ExpiresAt is when the session ends; sign in again then.
	ExpiresAt time.Time `json:"expires_at"`
}
