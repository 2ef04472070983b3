package controlplane

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/controlplane/web"
	"github.com/orchestrator/orchestrator/protocol"
)

// The web console's serving and sessions (console.go, controlplane/web).
// The browser test in e2e/console_test.go drives the screens.

// consoleRequest sends a request with the given headers (and a JSON body)
// to the server at base, through client.
func consoleRequest(t *testing.T, client *http.Client, base, method, path string, body any, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(testCtx(t), method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, raw
}

// signIn signs in to the console and returns the session cookie and the
// session.
func signIn(t *testing.T, client *http.Client, base string) (*http.Cookie, protocol.ConsoleSession) {
	t.Helper()
	resp, raw := consoleRequest(t, client, base, "POST", "/api/v1/session", protocol.SignInRequest{Token: testAdminToken}, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign in: %d %s", resp.StatusCode, raw)
	}
	var s protocol.ConsoleSession
	if err := json.Unmarshal(raw, &s); err != nil || s.CSRFToken == "" {
		t.Fatalf("sign in: %v: %s", err, raw)
	}
	for _, c := range resp.Cookies() {
		if c.Name == protocol.SessionCookie {
			return c, s
		}
	}
	t.Fatalf("sign in set no %s cookie: %v", protocol.SessionCookie, resp.Header.Values("Set-Cookie"))
	return nil, s
}

func TestConsoleSession(t *testing.T) {
	t.Parallel()
	clock := &offsetClock{}
	c := newCP(t, withOptions(func(o *Options) { o.Now = clock.now }))
	client, base := c.ts.Client(), c.ts.URL

	// A wrong token signs nobody in.
	for _, body := range []any{protocol.SignInRequest{Token: "not-the-admin-token-at-all"}, protocol.SignInRequest{}} {
		resp, raw := consoleRequest(t, client, base, "POST", "/api/v1/session", body, nil)
		checkAPIError(t, "sign in with a wrong token", resp.StatusCode, resp.Header, raw, http.StatusUnauthorized, protocol.CodeUnauthorized)
		if len(resp.Cookies()) != 0 {
			t.Errorf("a refused sign-in set cookies: %v", resp.Cookies())
		}
	}
	// Nor a sign-in from another site.
	resp, raw := consoleRequest(t, client, base, "POST", "/api/v1/session", protocol.SignInRequest{Token: testAdminToken},
		map[string]string{"Sec-Fetch-Site": "cross-site"})
	checkAPIError(t, "sign in from another site", resp.StatusCode, resp.Header, raw, http.StatusForbidden, protocol.CodeUnauthorized)

	cookie, sess := signIn(t, client, base)
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Secure {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain http", cookie)
	}
	if cookie.MaxAge != int((12*time.Hour).Seconds()) || len(cookie.Value) < 40 {
		t.Errorf("cookie Max-Age %d, value of %d characters: want 12h and a random id", cookie.MaxAge, len(cookie.Value))
	}
	if d := time.Until(sess.ExpiresAt); d < 11*time.Hour || d > 13*time.Hour {
		t.Errorf("expires_at %s: want in 12h", sess.ExpiresAt)
	}
	withCookie := func(h map[string]string) map[string]string {
		out := map[string]string{"Cookie": protocol.SessionCookie + "=" + cookie.Value}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	csrf := map[string]string{protocol.CSRFHeader: sess.CSRFToken}

	// The page reads its CSRF token back.
	resp, raw = consoleRequest(t, client, base, "GET", "/api/v1/session", nil, withCookie(nil))
	var again protocol.ConsoleSession
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &again) != nil || again.CSRFToken != sess.CSRFToken {
		t.Errorf("GET /api/v1/session: %d %s", resp.StatusCode, raw)
	}

	// The cookie authorizes reads; state changes need the CSRF token and
	// the console's own origin.
	resp, raw = consoleRequest(t, client, base, "GET", "/api/v1/agents", nil, withCookie(nil))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET with the cookie: %d %s", resp.StatusCode, raw)
	}
	register := protocol.RegisterAgentRequest{Name: "from-console"}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
	}{
		{"no CSRF token", nil},
		{"a wrong CSRF token", map[string]string{protocol.CSRFHeader: "x" + sess.CSRFToken}},
		{"another site (Sec-Fetch-Site)", map[string]string{protocol.CSRFHeader: sess.CSRFToken, "Sec-Fetch-Site": "cross-site"}},
		{"a sibling site (Sec-Fetch-Site)", map[string]string{protocol.CSRFHeader: sess.CSRFToken, "Sec-Fetch-Site": "same-site"}},
		{"another origin (Origin)", map[string]string{protocol.CSRFHeader: sess.CSRFToken, "Origin": "http://evil.example"}},
	} {
		resp, raw := consoleRequest(t, client, base, "POST", "/api/v1/agents", register, withCookie(tc.hdr))
		checkAPIError(t, "POST with the cookie and "+tc.name, resp.StatusCode, resp.Header, raw, http.StatusForbidden, protocol.CodeUnauthorized)
	}
	resp, raw = consoleRequest(t, client, base, "POST", "/api/v1/agents", register,
		withCookie(map[string]string{protocol.CSRFHeader: sess.CSRFToken, "Sec-Fetch-Site": "same-origin", "Origin": base}))
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("POST with the cookie and the CSRF token: %d %s", resp.StatusCode, raw)
	}

	// Bearer clients are judged by their token alone.
	resp, raw = consoleRequest(t, client, base, "POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "bearer"},
		map[string]string{"Authorization": "Bearer " + testAdminToken, "Cookie": protocol.SessionCookie + "=stale"})
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("Bearer with a stale cookie: %d %s", resp.StatusCode, raw)
	}
	resp, raw = consoleRequest(t, client, base, "GET", "/api/v1/agents", nil, withCookie(map[string]string{"Authorization": "Bearer wrong-token"}))
	checkAPIError(t, "a wrong Bearer token with a valid cookie", resp.StatusCode, resp.Header, raw, http.StatusUnauthorized, protocol.CodeUnauthorized)

	// Sign out needs the CSRF token too; then the cookie is worthless.
	resp, raw = consoleRequest(t, client, base, "DELETE", "/api/v1/session", nil, withCookie(nil))
	checkAPIError(t, "sign out without the CSRF token", resp.StatusCode, resp.Header, raw, http.StatusForbidden, protocol.CodeUnauthorized)
	resp, raw = consoleRequest(t, client, base, "DELETE", "/api/v1/session", nil, withCookie(csrf))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign out: %d %s", resp.StatusCode, raw)
	}
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].Name != protocol.SessionCookie || cs[0].MaxAge >= 0 {
		t.Errorf("sign out cookies %v: want the session cookie deleted", cs)
	}
	resp, raw = consoleRequest(t, client, base, "GET", "/api/v1/agents", nil, withCookie(nil))
	checkAPIError(t, "GET after sign out", resp.StatusCode, resp.Header, raw, http.StatusUnauthorized, protocol.CodeUnauthorized, "sign in again")
	resp, raw = consoleRequest(t, client, base, "GET", "/api/v1/session", nil, withCookie(nil))
	checkAPIError(t, "GET /api/v1/session after sign out", resp.StatusCode, resp.Header, raw, http.StatusUnauthorized, protocol.CodeUnauthorized)

	// A session ends at its expiry.
	cookie, _ = signIn(t, client, base)
	resp, _ = consoleRequest(t, client, base, "GET", "/api/v1/jobs", nil, withCookie(nil))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET with a new session: %d", resp.StatusCode)
	}
	clock.advance(12*time.Hour + time.Second)
	resp, raw = consoleRequest(t, client, base, "GET", "/api/v1/jobs", nil, withCookie(nil))
	checkAPIError(t, "GET with an expired session", resp.StatusCode, resp.Header, raw, http.StatusUnauthorized, protocol.CodeUnauthorized, "sign in again")
}

// TestConsoleSecureCookie: over TLS the cookie is Secure.
func TestConsoleSecureCookie(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	ts := httptest.NewTLSServer(c.srv.Handler())
	t.Cleanup(ts.Close)
	cookie, _ := signIn(t, ts.Client(), ts.URL)
	if !cookie.Secure || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie over TLS %+v: want Secure, HttpOnly, SameSite=Strict", cookie)
	}
}

// absoluteURL finds absolute http(s) URLs, and relativeToScheme URLs that
// start with "//" in an attribute, a string or url(): anything a page could
// load from another server.
var (
	absoluteURL      = regexp.MustCompile(`(?i)\bhttps?://[^\s"'<>()\x60]+`)
	relativeToScheme = regexp.MustCompile(`(?i)["'(=\x60]\s*//[a-z0-9\[][^\s"'<>()\x60]*`)
)

// notLoaded are the absolute URLs the console's files may hold because
// nothing loads them, each with where and why.
var notLoaded = map[string]struct{ file, why string }{
	"https://github.com":         {"/ui/app.js", "the GitHub URL prefilled for GitHub Actions Cloud: a form value the agent calls, never the browser"},
	"http://www.w3.org/2000/svg": {"/ui/icon.svg", "the SVG namespace name of the standalone icon, which an SVG file must declare; not fetched"},
}

// TestConsoleAssets: nothing in the console loads from outside the control
// plane. Every file it serves is searched for absolute URLs (none but the
// listed values that nothing loads), the page's own references are to the
// control plane's files, no script or style is inline, and every file
// carries the strict Content-Security-Policy.
func TestConsoleAssets(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	paths := web.Assets()
	for _, want := range []string{"/", "/ui/app.js", "/ui/app.css", "/ui/icon.svg"} {
		if !slices.Contains(paths, want) {
			t.Errorf("the console does not serve %s (it serves %v)", want, paths)
		}
	}
	found := map[string]bool{}
	for _, p := range paths {
		status, hdr, body := c.request("GET", p, nil, "")
		if status != http.StatusOK {
			t.Errorf("GET %s: %d", p, status)
			continue
		}
		if got := hdr.Get("Content-Security-Policy"); got != web.CSP {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", p, got, web.CSP)
		}
		for _, directive := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(hdr.Get("Content-Security-Policy"), directive) {
				t.Errorf("GET %s: the CSP lacks %s", p, directive)
			}
		}
		if strings.Contains(hdr.Get("Content-Security-Policy"), "unsafe-") {
			t.Errorf("GET %s: the CSP allows something unsafe: %s", p, hdr.Get("Content-Security-Policy"))
		}
		if hdr.Get("X-Content-Type-Options") != "nosniff" || hdr.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", p, hdr)
		}
		ct := hdr.Get("Content-Type")
		wantType := "text/html"
		if p != "/" {
			wantType = map[string]string{".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}[path.Ext(p)]
		}
		if !strings.HasPrefix(ct, wantType) {
			t.Errorf("GET %s: Content-Type %q, want %s", p, ct, wantType)
		}
		for _, u := range relativeToScheme.FindAllString(string(body), -1) {
			t.Errorf("%s holds the scheme-relative URL %q: the console must load everything from the control plane", p, u)
		}
		for _, u := range absoluteURL.FindAllString(string(body), -1) {
			u = strings.TrimRight(u, ".,;:")
			if ok, exists := notLoaded[u]; exists && ok.file == p {
				found[u] = true
				continue
			}
			t.Errorf("%s holds the absolute URL %q: the console must load everything from the control plane", p, u)
		}
		if p == "/" {
			checkPage(t, c, string(body))
		}
	}
	for u, where := range notLoaded {
		if !found[u] {
			t.Errorf("%s no longer holds %q: drop it from notLoaded", where.file, u)
		}
	}

	// A file that is not there is a plain 404, with the same headers.
	status, hdr, _ := c.request("GET", "/ui/nothing.js", nil, "")
	if status != http.StatusNotFound || hdr.Get("Content-Security-Policy") != web.CSP {
		t.Errorf("GET /ui/nothing.js: %d, CSP %q", status, hdr.Get("Content-Security-Policy"))
	}
	// The page answers only GET; other paths stay JSON API errors.
	status, hdr, raw := c.request("POST", "/", nil, "")
	checkAPIError(t, "POST /", status, hdr, raw, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed)
}

var (
	srcRef      = regexp.MustCompile(`(?i)\s(?:src|href|action|srcset|poster|data)\s*=\s*"([^"]*)"`)
	inlineEvent = regexp.MustCompile(`(?i)<[^>]*\son[a-z]+\s*=`)
)

// checkPage checks the console's HTML: every reference is to one of its own
// files (or to the page itself), no inline script, style or event handler.
func checkPage(t *testing.T, c *testCP, html string) {
	t.Helper()
	for _, m := range srcRef.FindAllStringSubmatch(html, -1) {
		ref := m[1]
		if strings.HasPrefix(ref, "#") {
			continue
		}
		if !strings.HasPrefix(ref, web.AssetPrefix) {
			t.Errorf("the page refers to %q: only files under %s", ref, web.AssetPrefix)
			continue
		}
		if status, _, _ := c.request("GET", ref, nil, ""); status != http.StatusOK {
			t.Errorf("the page refers to %s, which answers %d", ref, status)
		}
	}
	for _, s := range regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if !strings.Contains(s[1], "src=") || strings.TrimSpace(s[2]) != "" {
			t.Errorf("inline script in the page: %.80s", s[0])
		}
	}
	if strings.Contains(strings.ToLower(html), "<style") || regexp.MustCompile(`(?i)\sstyle\s*=`).MatchString(html) {
		t.Error("inline style in the page")
	}
	if m := inlineEvent.FindString(html); m != "" {
		t.Errorf("inline event handler in the page: %.80s", m)
	}
}
