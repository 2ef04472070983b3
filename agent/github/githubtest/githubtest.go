// Package githubtest is a fake GitHub REST API, for tests only: it is not
// part of the agent and no non-test code imports it.
//
// A [Server] is an HTTPS server on 127.0.0.1 (httptest's certificate, which
// [Server.WriteCAFile] writes out so that a client trusts it the way the
// agent trusts a private CA) that answers like GitHub Enterprise Server
// under /api/v3 ([GHES]) or like github.com at its root ([Cloud]), with
// GitHub's headers (X-OAuth-Scopes, X-Accepted-OAuth-Scopes,
// X-GitHub-Enterprise-Version, X-RateLimit-*, Link pagination,
// GitHub-Authentication-Token-Expiration, X-GitHub-SSO) and bodies shaped as
// GitHub's OpenAPI description says (the required fields of each schema).
//
// Each token the test adds behaves as a classic PAT with given scopes, a
// fine-grained PAT or a GitHub App installation token, and can be given
// [Fault]s: bad credentials, rate limits (403, 429, secondary), SAML SSO,
// slowness, 5xx, redirects (to a second server that records what it got),
// answers that are not JSON. The server records every request (method,
// path, the path's OpenAPI template, whether it carried credentials).
package githubtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mode is which GitHub the server plays.
type Mode int

const (
	// GHES is GitHub Enterprise Server: the API under /api/v3, the version
	// in X-GitHub-Enterprise-Version, rate limits off unless asked.
	GHES Mode = iota
	// Cloud is github.com: the API at the root, rate-limit headers on
	// every answer.
	Cloud
)

// TokenType is what kind of token a [Token] is.
type TokenType int

// Token types.
const (
	// Classic is a classic personal access token: its scopes in
	// X-OAuth-Scopes on every answer.
	Classic TokenType = iota + 1
	// FineGrained is a fine-grained personal access token: no scopes
	// header; /user/orgs answers 200 [].
	FineGrained
	// AppInstallation is a GitHub App installation token: /user and
	// /user/orgs answer 403 "Resource not accessible by integration";
	// /installation/repositories lists the repositories of Orgs[0].
	AppInstallation
)

// Org is an organization.
type Org struct {
	Login       string
	ID          int64
	Description string
	// SSO marks an organization that enforces SAML single sign-on and for
	// which the token is not authorized: /user/orgs leaves it out (with
	// X-GitHub-SSO: partial-results) and /orgs/{org} answers 403 with
	// X-GitHub-SSO: required; url=….
	SSO bool
}

// Token is how the server treats one token.
type Token struct {
	Type   TokenType
	Login  string // the user (Classic, FineGrained)
	UserID int64
	// Scopes of a Classic token.
	Scopes []string
	// Orgs the account is a member of; for AppInstallation, Orgs[0] is the
	// account the App is installed on.
	Orgs []Org
	// ExpiresAt, when set, is sent as GitHub-Authentication-Token-Expiration.
	ExpiresAt time.Time
	// Faults apply in order; the first that matches a request answers it
	// (Slow delays and lets the request go on).
	Faults []Fault
}

// FaultKind is a way of failing.
type FaultKind int

// Faults.
const (
	// BadCredentials answers 401 Bad credentials.
	BadCredentials FaultKind = iota + 1
	// RateLimited answers 403 with X-RateLimit-Remaining: 0 and a reset
	// RetryAfter from now (a primary rate limit).
	RateLimited
	// RateLimited429 answers 429 with Retry-After (and
	// X-RateLimit-Remaining: 0).
	RateLimited429
	// SecondaryRateLimited answers 403 with a documentation_url ending in
	// #about-secondary-rate-limits and Retry-After.
	SecondaryRateLimited
	// SSORequired answers 403 with X-GitHub-SSO: required; url=….
	SSORequired
	// Forbidden answers 403 with a plain message.
	Forbidden
	// NotFound answers 404 Not Found.
	NotFound
	// ServerError answers Status (default 502) with an HTML body, as a
	// failing load balancer does.
	ServerError
	// Slow waits Delay (or until the client goes away), then answers
	// normally.
	Slow
	// RedirectElsewhere answers 302 to the same path on the other server.
	RedirectElsewhere
	// RedirectSameOrigin answers 307 to the same URL on this server.
	RedirectSameOrigin
	// NotJSON answers 200 with an HTML page.
	NotJSON
)

// Fault makes matching requests fail.
type Fault struct {
	Kind FaultKind
	// Path is the OpenAPI template it applies to ("/user", "/orgs/{org}");
	// empty: every path.
	Path string
	// Times is how many matching requests fail; 0: all.
	Times int
	// RetryAfter is the Retry-After of rate limits, and the time to the
	// reset of a primary one.
	RetryAfter time.Duration
	// Delay is how long Slow waits.
	Delay time.Duration
	// Status is ServerError's status.
	Status int
}

// Options configure a Server. Zero values mean the defaults.
type Options struct {
	Mode Mode
	// Version is the GHES version sent in X-GitHub-Enterprise-Version and
	// /meta's installed_version; default "3.19.0". GHES mode only.
	Version string
	// NoVersionHeader leaves out X-GitHub-Enterprise-Version (the version is
	// then only in /meta).
	NoVersionHeader bool
	// RateLimitHeaders sends X-RateLimit-* in GHES mode too (always in Cloud
	// mode).
	RateLimitHeaders bool
	// PublicOrgs are organizations that exist (GET /orgs/{org} answers)
	// without any token being a member.
	PublicOrgs []Org
}

// Request is one request the server (or the other server) received.
type Request struct {
	Method string
	// Path is the request's path; Template its OpenAPI path template
	// relative to the API root ("/orgs/{org}"), empty outside the API.
	Path, Template string
	Query          string
	// Authorized is whether it carried an Authorization header.
	Authorized bool
	// Authorization is the header as received; recorded only by the other
	// server (the redirect target), to prove that it got none.
	Authorization string
	Status        int
}

// Server is the fake GitHub. Create it with [New] and Close it.
type Server struct {
	opts Options
	// TLS is the HTTPS server.
	TLS *httptest.Server
	// Elsewhere is the other server, on another port: RedirectElsewhere
	// points there. It answers every request 200 with a user and records
	// it with its Authorization header.
	Elsewhere *httptest.Server

	mu        sync.Mutex // guards the fields below
	tokens    map[string]*Token
	faultHits map[*Fault]int
	used      map[string]int // requests per token, for X-RateLimit-Used
	requests  []Request
	elsewhere []Request
}

// New starts a fake GitHub.
func New(o Options) *Server {
	if o.Version == "" {
		o.Version = "3.19.0"
	}
	s := &Server{opts: o, tokens: map[string]*Token{}, faultHits: map[*Fault]int{}, used: map[string]int{}}
	s.TLS = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.Elsewhere = httptest.NewTLSServer(http.HandlerFunc(s.serveElsewhere))
	return s
}

// Close stops both servers.
func (s *Server) Close() {
	s.TLS.Close()
	s.Elsewhere.Close()
}

// AddToken makes token known with behaviour t.
func (s *Server) AddToken(token string, t Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tc := t
	tc.Faults = slices.Clone(t.Faults)
	s.tokens[token] = &tc
}

// URL is the instance's URL as a person types it: "https://127.0.0.1:PORT".
func (s *Server) URL() string { return s.TLS.URL }

// APIURL is the API's base URL, ending in "/".
func (s *Server) APIURL() string { return s.TLS.URL + s.prefix() + "/" }

func (s *Server) prefix() string {
	if s.opts.Mode == GHES {
		return "/api/v3"
	}
	return ""
}

// CertPEM is the servers' certificate (both use httptest's), PEM encoded.
func (s *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.TLS.Certificate().Raw})
}

// WriteCAFile writes CertPEM to dir/github-ca.pem and returns the path.
func (s *Server) WriteCAFile(dir string) (string, error) {
	p := filepath.Join(dir, "github-ca.pem")
	return p, os.WriteFile(p, s.CertPEM(), 0o600)
}

// Requests returns what the server received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ElsewhereRequests returns what the other server received, in order.
func (s *Server) ElsewhereRequests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.elsewhere)
}

// template maps an API path (relative to the API root) to its OpenAPI
// template, or "" when the fake does not serve it.
func template(rel string) string {
	switch rel {
	case "/user", "/user/orgs", "/installation/repositories", "/meta", "/rate_limit":
		return rel
	}
	if name, ok := strings.CutPrefix(rel, "/orgs/"); ok && name != "" && !strings.Contains(name, "/") {
		return "/orgs/{org}"
	}
	return ""
}

// statusWriter records the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) serve(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	rel, inAPI := strings.CutPrefix(r.URL.Path, s.prefix())
	tmpl := ""
	if inAPI {
		tmpl = template(rel)
	}
	// Recorded on arrival, so that a client that has its answer finds its
	// request listed; the status is filled in when the answer is written.
	s.mu.Lock()
	idx := len(s.requests)
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Template: tmpl, Query: r.URL.RawQuery,
		Authorized: r.Header.Get("Authorization") != "",
	})
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.requests[idx].Status = w.status
		s.mu.Unlock()
	}()
	if tmpl == "" {
		if !inAPI || s.opts.Mode == GHES && !strings.HasPrefix(r.URL.Path, "/api/v3/") {
			// The web interface, not the API.
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, "<!DOCTYPE html><html><body><h1>Page not found</h1></body></html>")
			return
		}
		s.apiError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest")
		return
	}
	if r.Method != http.MethodGet {
		s.apiError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest")
		return
	}
	s.commonHeaders(w, nil, "")
	if tmpl == "/meta" {
		s.writeJSON(w, http.StatusOK, s.meta())
		return
	}

	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		s.apiError(w, http.StatusUnauthorized, "Requires authentication", "https://docs.github.com/rest/users/users#get-the-authenticated-user")
		return
	}
	s.mu.Lock()
	t := s.tokens[token]
	var fault *Fault
	if t != nil {
		s.used[token]++
		for i := range t.Faults {
			f := &t.Faults[i]
			if (f.Path == "" || f.Path == tmpl) && (f.Times == 0 || s.faultHits[f] < f.Times) {
				s.faultHits[f]++
				fault = f
				break
			}
		}
	}
	used := s.used[token]
	s.mu.Unlock()
	if t == nil {
		s.apiError(w, http.StatusUnauthorized, "Bad credentials", "https://docs.github.com/rest")
		return
	}
	s.tokenHeaders(w, t, tmpl, used)
	if fault != nil && s.fail(w, r, t, fault, tmpl) {
		return
	}

	switch tmpl {
	case "/user":
		if t.Type == AppInstallation {
			s.apiError(w, http.StatusForbidden, "Resource not accessible by integration", "https://docs.github.com/rest/users/users#get-the-authenticated-user")
			return
		}
		s.writeJSON(w, http.StatusOK, s.user(t))
	case "/user/orgs":
		s.userOrgs(w, r, t)
	case "/installation/repositories":
		if t.Type != AppInstallation {
			s.apiError(w, http.StatusForbidden, "You must authenticate with an installation access token in order to list repositories for an installation.", "https://docs.github.com/rest/apps/installations#list-repositories-accessible-to-the-app-installation")
			return
		}
		s.installationRepos(w, t)
	case "/orgs/{org}":
		s.org(w, t, strings.TrimPrefix(rel, "/orgs/"))
	case "/rate_limit":
		s.writeJSON(w, http.StatusOK, map[string]any{
			"resources": map[string]any{"core": s.rate(used), "search": map[string]any{"limit": 30, "remaining": 30, "reset": rateWindow.Unix(), "used": 0}},
			"rate":      s.rate(used),
		})
	}
}

func bearer(h string) (string, bool) {
	for _, p := range []string{"Bearer ", "bearer ", "token "} {
		if t, ok := strings.CutPrefix(h, p); ok && t != "" {
			return t, true
		}
	}
	return "", false
}

// fail answers with fault f; false for Slow, which lets the request go on.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, t *Token, f *Fault, tmpl string) bool {
	reset := strconv.FormatInt(time.Now().Add(f.RetryAfter).Unix()+1, 10)
	retry := strconv.Itoa(int(f.RetryAfter / time.Second))
	switch f.Kind {
	case BadCredentials:
		s.apiError(w, http.StatusUnauthorized, "Bad credentials", "https://docs.github.com/rest")
	case RateLimited:
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Used", "5000")
		w.Header().Set("X-RateLimit-Reset", reset)
		w.Header().Set("X-RateLimit-Resource", "core")
		s.apiError(w, http.StatusForbidden, fmt.Sprintf("API rate limit exceeded for user ID %d.", t.UserID),
			"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-primary-rate-limits")
	case RateLimited429:
		w.Header().Set("Retry-After", retry)
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", reset)
		s.apiError(w, http.StatusTooManyRequests, fmt.Sprintf("API rate limit exceeded for user ID %d.", t.UserID),
			"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api")
	case SecondaryRateLimited:
		w.Header().Set("Retry-After", retry)
		s.apiError(w, http.StatusForbidden, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
			"https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits")
	case SSORequired:
		w.Header().Set("X-GitHub-SSO", "required; url="+s.TLS.URL+"/orgs/octo-sso/sso?authorization_request="+randomHex(10))
		s.apiError(w, http.StatusForbidden, "Resource protected by organization SAML enforcement. You must grant your Personal Access token access to this organization.",
			"https://docs.github.com/articles/authenticating-to-a-github-organization-with-saml-single-sign-on/")
	case Forbidden:
		s.apiError(w, http.StatusForbidden, "Although you appear to have the correct authorization credentials, this request is blocked by the organization's IP allow list.", "https://docs.github.com/rest")
	case NotFound:
		s.apiError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest")
	case ServerError:
		code := f.Status
		if code == 0 {
			code = http.StatusBadGateway
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(code)
		fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>", code, http.StatusText(code))
	case Slow:
		tm := time.NewTimer(f.Delay)
		defer tm.Stop()
		select {
		case <-r.Context().Done():
			return true
		case <-tm.C:
		}
		return false
	case RedirectElsewhere:
		http.Redirect(w, r, s.Elsewhere.URL+r.URL.RequestURI(), http.StatusFound)
	case RedirectSameOrigin:
		http.Redirect(w, r, r.URL.RequestURI(), http.StatusTemporaryRedirect)
	case NotJSON:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "<!DOCTYPE html><html><body>Sign in to continue</body></html>")
	default:
		return false
	}
	return true
}

func (s *Server) serveElsewhere(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.elsewhere = append(s.elsewhere, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Authorized: r.Header.Get("Authorization") != "", Authorization: r.Header.Get("Authorization"), Status: http.StatusOK,
	})
	s.mu.Unlock()
	s.writeJSON(w, http.StatusOK, s.user(&Token{Type: Classic, Login: "elsewhere", UserID: 666}))
}

// commonHeaders are on every API answer.
func (s *Server) commonHeaders(w http.ResponseWriter, _ *Token, _ string) {
	h := w.Header()
	h.Set("X-GitHub-Request-Id", strings.ToUpper(randomHex(8)))
	h.Set("X-GitHub-Media-Type", "github.v3; format=json")
	h.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	if s.opts.Mode == GHES && !s.opts.NoVersionHeader {
		h.Set("X-GitHub-Enterprise-Version", s.opts.Version)
	}
}

// tokenHeaders are on every authenticated answer.
func (s *Server) tokenHeaders(w http.ResponseWriter, t *Token, tmpl string, used int) {
	h := w.Header()
	switch t.Type {
	case Classic:
		h.Set("X-OAuth-Scopes", strings.Join(t.Scopes, ", "))
		accepted := ""
		switch tmpl {
		case "/user/orgs", "/orgs/{org}":
			accepted = "admin:org, read:org, repo, user, write:org"
		}
		h.Set("X-Accepted-OAuth-Scopes", accepted)
	default:
		switch tmpl {
		case "/installation/repositories":
			h.Set("X-Accepted-GitHub-Permissions", "metadata=read")
		case "/orgs/{org}":
			h.Set("X-Accepted-GitHub-Permissions", "allows_permissionless_access=true")
		}
	}
	if !t.ExpiresAt.IsZero() {
		h.Set("GitHub-Authentication-Token-Expiration", t.ExpiresAt.UTC().Format("2006-01-02 15:04:05 MST"))
	}
	if s.opts.Mode == Cloud || s.opts.RateLimitHeaders {
		r := s.rate(used)
		h.Set("X-RateLimit-Limit", strconv.Itoa(r["limit"].(int)))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(r["remaining"].(int)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(r["reset"].(int64), 10))
		h.Set("X-RateLimit-Used", strconv.Itoa(r["used"].(int)))
		h.Set("X-RateLimit-Resource", "core")
	}
}

// rateWindow is the fake's fixed rate-limit reset, an hour after start.
var rateWindow = time.Now().Add(time.Hour).Truncate(time.Second)

func (s *Server) rate(used int) map[string]any {
	return map[string]any{"limit": 5000, "remaining": max(5000-used, 0), "reset": rateWindow.Unix(), "used": used}
}

func (s *Server) apiError(w http.ResponseWriter, code int, msg, doc string) {
	s.writeJSON(w, code, map[string]any{"message": msg, "documentation_url": doc, "status": strconv.Itoa(code)})
}

func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) meta() map[string]any {
	m := map[string]any{"verifiable_password_authentication": true}
	if s.opts.Mode == GHES {
		m["installed_version"] = s.opts.Version
		m["packages"] = []string{"192.0.2.1"}
	} else {
		m["verifiable_password_authentication"] = false
		m["domains"] = map[string]any{"website": []string{"*.github.com"}}
	}
	return m
}

// web is the web URL of the instance; api of the API.
func (s *Server) web() string { return s.TLS.URL }
func (s *Server) api() string { return s.TLS.URL + s.prefix() }

// user is a "Private User" (GET /user of the account itself).
func (s *Server) user(t *Token) map[string]any {
	login, api := t.Login, s.api()
	u := map[string]any{
		"login": login, "id": t.UserID, "node_id": "U_" + strconv.FormatInt(t.UserID, 10),
		"avatar_url": s.web() + "/avatars/u/" + strconv.FormatInt(t.UserID, 10), "gravatar_id": "",
		"url": api + "/users/" + login, "html_url": s.web() + "/" + login,
		"followers_url": api + "/users/" + login + "/followers", "following_url": api + "/users/" + login + "/following{/other_user}",
		"gists_url": api + "/users/" + login + "/gists{/gist_id}", "starred_url": api + "/users/" + login + "/starred{/owner}{/repo}",
		"subscriptions_url": api + "/users/" + login + "/subscriptions", "organizations_url": api + "/users/" + login + "/orgs",
		"repos_url": api + "/users/" + login + "/repos", "events_url": api + "/users/" + login + "/events{/privacy}",
		"received_events_url": api + "/users/" + login + "/received_events", "type": "User", "site_admin": false,
		"name": "Service account " + login, "company": nil, "blog": "", "location": nil, "email": nil, "hireable": nil,
		"bio": nil, "public_repos": 2, "public_gists": 0, "followers": 0, "following": 0,
		"created_at": "2024-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z",
		"private_gists": 0, "total_private_repos": 3, "owned_private_repos": 3, "disk_usage": 1024,
		"collaborators": 0, "two_factor_authentication": true,
	}
	return u
}

// orgSimple is an "Organization Simple".
func (s *Server) orgSimple(o Org) map[string]any {
	api := s.api() + "/orgs/" + o.Login
	return map[string]any{
		"login": o.Login, "id": o.ID, "node_id": "O_" + strconv.FormatInt(o.ID, 10), "url": api,
		"repos_url": api + "/repos", "events_url": api + "/events", "hooks_url": api + "/hooks",
		"issues_url": api + "/issues", "members_url": api + "/members{/member}",
		"public_members_url": api + "/public_members{/member}",
		"avatar_url":         s.web() + "/avatars/o/" + strconv.FormatInt(o.ID, 10), "description": nullable(o.Description),
	}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (s *Server) userOrgs(w http.ResponseWriter, r *http.Request, t *Token) {
	switch t.Type {
	case AppInstallation:
		s.apiError(w, http.StatusForbidden, "Resource not accessible by integration", "https://docs.github.com/rest/orgs/orgs#list-organizations-for-the-authenticated-user")
		return
	case FineGrained:
		// GitHub's description: a fine-grained token gets 200 and an empty list.
		s.writeJSON(w, http.StatusOK, []any{})
		return
	}
	if !slices.ContainsFunc(t.Scopes, func(sc string) bool {
		return sc == "user" || sc == "read:org" || sc == "write:org" || sc == "admin:org"
	}) {
		s.apiError(w, http.StatusForbidden, "You need at least read:org scope or user scope to list your organizations.", "https://docs.github.com/rest/orgs/orgs#list-organizations-for-the-authenticated-user")
		return
	}
	var visible []Org
	var hidden []string
	for _, o := range t.Orgs {
		if o.SSO {
			hidden = append(hidden, strconv.FormatInt(o.ID, 10))
			continue
		}
		visible = append(visible, o)
	}
	perPage, page := 30, 1
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		page = v
	}
	last := max((len(visible)+perPage-1)/perPage, 1)
	link := func(p int, rel string) string {
		return fmt.Sprintf(`<%s/user/orgs?per_page=%d&page=%d>; rel="%s"`, s.api(), perPage, p, rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	if len(hidden) > 0 {
		w.Header().Set("X-GitHub-SSO", "partial-results; organizations="+strings.Join(hidden, ","))
	}
	out := []any{}
	for i := (page - 1) * perPage; i < len(visible) && i < page*perPage; i++ {
		out = append(out, s.orgSimple(visible[i]))
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) org(w http.ResponseWriter, t *Token, name string) {
	var found *Org
	s.mu.Lock()
	for i := range t.Orgs {
		if strings.EqualFold(t.Orgs[i].Login, name) {
			o := t.Orgs[i]
			found = &o
		}
	}
	for _, tok := range s.tokens {
		for i := range tok.Orgs {
			if found == nil && strings.EqualFold(tok.Orgs[i].Login, name) {
				// Another account's organization: it exists; SSO is about
				// this token's authorization, which it does not need to
				// see public data.
				o := tok.Orgs[i]
				o.SSO = false
				found = &o
			}
		}
	}
	s.mu.Unlock()
	for i := range s.opts.PublicOrgs {
		if found == nil && strings.EqualFold(s.opts.PublicOrgs[i].Login, name) {
			o := s.opts.PublicOrgs[i]
			found = &o
		}
	}
	if found == nil {
		s.apiError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/orgs/orgs#get-an-organization")
		return
	}
	if found.SSO {
		w.Header().Set("X-GitHub-SSO", "required; url="+s.web()+"/orgs/"+found.Login+"/sso?authorization_request="+randomHex(10))
		s.apiError(w, http.StatusForbidden, "Resource protected by organization SAML enforcement. You must grant your Personal Access token access to this organization.",
			"https://docs.github.com/articles/authenticating-to-a-github-organization-with-saml-single-sign-on/")
		return
	}
	o := s.orgSimple(*found)
	for k, v := range map[string]any{
		"html_url": s.web() + "/" + found.Login, "has_organization_projects": true, "has_repository_projects": true,
		"public_repos": 1, "public_gists": 0, "followers": 0, "following": 0, "type": "Organization",
		"created_at": "2024-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z", "archived_at": nil,
	} {
		o[k] = v
	}
	s.writeJSON(w, http.StatusOK, o)
}

// installationRepos lists two repositories of the installation's account.
func (s *Server) installationRepos(w http.ResponseWriter, t *Token) {
	owner := Org{Login: "app-owner", ID: 4242}
	if len(t.Orgs) > 0 {
		owner = t.Orgs[0]
	}
	repos := []any{s.repo(owner, "platform", 1001), s.repo(owner, "pipelines", 1002)}
	s.writeJSON(w, http.StatusOK, map[string]any{"total_count": len(repos), "repositories": repos})
}

// repo is a "Repository" with every required field.
func (s *Server) repo(owner Org, name string, id int64) map[string]any {
	full := owner.Login + "/" + name
	api := s.api() + "/repos/" + full
	r := map[string]any{
		"id": id, "node_id": "R_" + strconv.FormatInt(id, 10), "name": name, "full_name": full,
		"owner": s.simpleOwner(owner), "private": true, "html_url": s.web() + "/" + full, "description": nil,
		"fork": false, "url": api, "clone_url": s.web() + "/" + full + ".git", "git_url": "git://" + strings.TrimPrefix(s.web(), "https://") + "/" + full + ".git",
		"ssh_url": "git@example.com:" + full + ".git", "svn_url": s.web() + "/" + full, "mirror_url": nil, "homepage": nil,
		"language": "Go", "forks": 0, "forks_count": 0, "stargazers_count": 0, "watchers": 0, "watchers_count": 0,
		"size": 10, "default_branch": "main", "open_issues": 0, "open_issues_count": 0,
		"has_issues": true, "has_projects": true, "has_wiki": false, "has_pages": false, "has_downloads": true,
		"archived": false, "disabled": false, "license": nil,
		"pushed_at": "2026-01-02T03:04:05Z", "created_at": "2024-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z",
	}
	for _, k := range []string{"archive", "assignees", "blobs", "branches", "collaborators", "comments", "commits", "compare",
		"contents", "contributors", "deployments", "downloads", "events", "forks", "git_commits", "git_refs", "git_tags", "hooks",
		"issue_comment", "issue_events", "issues", "keys", "labels", "languages", "merges", "milestones", "notifications", "pulls",
		"releases", "stargazers", "statuses", "subscribers", "subscription", "tags", "teams", "trees"} {
		r[k+"_url"] = api + "/" + strings.ReplaceAll(k, "_", "/")
	}
	return r
}

// simpleOwner is a "Simple User" for an organization account.
func (s *Server) simpleOwner(o Org) map[string]any {
	api := s.api() + "/users/" + o.Login
	return map[string]any{
		"login": o.Login, "id": o.ID, "node_id": "O_" + strconv.FormatInt(o.ID, 10),
		"avatar_url": s.web() + "/avatars/o/" + strconv.FormatInt(o.ID, 10), "gravatar_id": "",
		"url": api, "html_url": s.web() + "/" + o.Login, "followers_url": api + "/followers",
		"following_url": api + "/following{/other_user}", "gists_url": api + "/gists{/gist_id}",
		"starred_url": api + "/starred{/owner}{/repo}", "subscriptions_url": api + "/subscriptions",
		"organizations_url": api + "/orgs", "repos_url": api + "/repos", "events_url": api + "/events{/privacy}",
		"received_events_url": api + "/received_events", "type": "Organization", "site_admin": false,
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
