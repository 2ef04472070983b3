package controlplane

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/controlplane/web"
	"github.com/orchestrator/orchestrator/protocol"
)

// The web console (controlplane/web): its page and files at "/" and
// /ui/..., and its sessions. A person signs in with the admin token
// (POST /api/v1/session); the answer sets an HttpOnly, SameSite=Strict
// cookie (Secure when served over TLS) that then authorizes the API in
// place of the Bearer token, until it expires or the person signs out
// (DELETE /api/v1/session). A state-changing request authorized by the
// cookie must also carry the session's CSRF token (protocol.CSRFHeader) and
// must not come from another origin (Sec-Fetch-Site, else Origin against
// Host). Requests with an Authorization header are judged by it alone.

// unauthorizedMessage is the answer to an API request without credentials.
const unauthorizedMessage = "this route needs the header Authorization: Bearer <admin token>"

// consoleRoutes registers the console's pages (not API: listed in s.pages,
// left out of the OpenAPI document) and its session API.
func (s *Server) consoleRoutes(handle func(string, http.HandlerFunc)) {
	s.sessions = web.NewSessions(web.SessionOptions{Now: s.now})
	s.crossOrigin = http.NewCrossOriginProtection()
	s.pages = map[string]bool{}
	page := func(pattern string, h http.HandlerFunc) {
		s.pages[pattern] = true
		handle(pattern, h)
	}
	page("GET /{$}", web.ServeIndex)
	page("GET "+web.AssetPrefix+"{file...}", web.ServeAsset)

	handle("POST /api/v1/session", s.signIn)
	handle("GET /api/v1/session", s.getSession)
	handle("DELETE /api/v1/session", s.signOut)
}

// adminTokenMatches compares a candidate admin token in constant time.
func (s *Server) adminTokenMatches(token string) bool {
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], s.adminHash[:]) == 1
}

// consoleSession returns the request's live console session and its id.
func (s *Server) consoleSession(r *http.Request) (string, web.Session, bool) {
	c, err := r.Cookie(protocol.SessionCookie)
	if err != nil {
		return "", web.Session{}, false
	}
	sess, ok := s.sessions.Get(c.Value)
	return c.Value, sess, ok
}

// sessionAuthorized judges an API request that has no valid Bearer token by
// its console session: 200 when the session authorizes it, else the status
// and error to answer.
func (s *Server) sessionAuthorized(r *http.Request) (int, *protocol.Error) {
	if r.Header.Get("Authorization") != "" {
		// A wrong Bearer token is not rescued by a cookie.
		return http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized, unauthorizedMessage)
	}
	if _, err := r.Cookie(protocol.SessionCookie); err != nil {
		return http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized, unauthorizedMessage)
	}
	_, sess, ok := s.consoleSession(r)
	if !ok {
		return http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized,
			"the console session has ended or is unknown; sign in again")
	}
	if e := s.checkStateChange(r, sess); e != nil {
		return http.StatusForbidden, e
	}
	return http.StatusOK, nil
}

// checkStateChange refuses a state-changing request made with the session
// cookie that comes from another origin or lacks the session's CSRF token.
func (s *Server) checkStateChange(r *http.Request, sess web.Session) *protocol.Error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if err := s.crossOrigin.Check(r); err != nil {
		s.log.Warn("console request refused", zap.String("reason", "cross_origin"), zap.String("method", r.Method),
			zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
		return protocol.Errorf(protocol.CodeUnauthorized, "a request from another site may not use the console session")
	}
	if !sess.CheckCSRF(r.Header.Get(protocol.CSRFHeader)) {
		s.log.Warn("console request refused", zap.String("reason", "csrf"), zap.String("method", r.Method),
			zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
		return protocol.Errorf(protocol.CodeUnauthorized,
			"a %s with the console session needs the session's CSRF token in the %s header (GET /api/v1/session)", r.Method, protocol.CSRFHeader)
	}
	return nil
}

// sessionCookie is the console's cookie with value, ending at maxAge
// seconds (negative: delete it).
func sessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: protocol.SessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	}
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	if err := s.crossOrigin.Check(r); err != nil {
		writeError(w, http.StatusForbidden, protocol.Errorf(protocol.CodeUnauthorized, "sign in from the console's own page"))
		return
	}
	var req protocol.SignInRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Token == "" || !s.adminTokenMatches(req.Token) {
		s.refusedToken(r, "console sign-in") // logged, at most once a minute per address
		writeError(w, http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized,
			"this is not the control plane's admin token"))
		return
	}
	// A session signed in before on this browser ends now.
	if old, err := r.Cookie(protocol.SessionCookie); err == nil {
		s.sessions.Delete(old.Value)
	}
	id, sess := s.sessions.Create()
	http.SetCookie(w, sessionCookie(r, id, int(s.sessions.TTL().Seconds())))
	s.log.Info("console signed in", zap.String("remote", r.RemoteAddr), zap.Time("expires_at", sess.ExpiresAt))
	writeJSON(w, http.StatusOK, protocol.ConsoleSession{CSRFToken: sess.CSRF, ExpiresAt: sess.ExpiresAt})
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.consoleSession(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, protocol.Errorf(protocol.CodeUnauthorized, "not signed in to the console"))
		return
	}
	writeJSON(w, http.StatusOK, protocol.ConsoleSession{CSRFToken: sess.CSRF, ExpiresAt: sess.ExpiresAt})
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.consoleSession(r)
	if ok {
		if e := s.checkStateChange(r, sess); e != nil {
			writeError(w, http.StatusForbidden, e)
			return
		}
		s.sessions.Delete(id)
		s.log.Info("console signed out", zap.String("remote", r.RemoteAddr))
	}
	http.SetCookie(w, sessionCookie(r, "", -1))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
