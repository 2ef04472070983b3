package github_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
	"github.com/orchestrator/orchestrator/protocol"
)

// The tests run the real go-github client, through the Service's real HTTP
// client (CA bundle from github.ca_file, redirect policy, proxy), against
// the fake GitHub over HTTPS on 127.0.0.1.

func TestTestConnectionTokenTypes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		mode       githubtest.Mode
		token      string
		login      string
		tokenType  string
		listable   bool
		scopes     []string
		missing    []string
		orgs       []string
		ssoOrgIDs  []int64
		expires    bool
		rateLimit  bool
		warningHas string
	}{
		{
			name: "ghes classic", mode: githubtest.GHES, token: tokClassic, login: "svc-orchestrator", tokenType: github.TokenClassic, listable: true,
			scopes:  []string{"read:org", "read:packages", "repo", "workflow"},
			missing: []string{"write:packages", "delete:packages", "admin:org", "manage_runners:org", "notifications", "user", "delete_repo", "admin:enterprise", "audit_log", "codespace", "project"},
			orgs:    []string{"platform", "payments"}, expires: true,
		},
		{
			name: "ghes classic with every required scope", mode: githubtest.GHES, token: tokFullScopes, login: "svc-admin", tokenType: github.TokenClassic, listable: true,
			scopes: []string{"admin:enterprise", "admin:org", "audit_log", "codespace", "delete:packages", "delete_repo", "notifications", "project", "repo", "user", "workflow", "write:packages"},
			orgs:   []string{"platform", "payments"}, ssoOrgIDs: []int64{1003}, warningHas: "SAML single sign-on",
		},
		{
			name: "ghes fine-grained", mode: githubtest.GHES, token: tokFineGrained, login: "svc-fine", tokenType: github.TokenFineGrained,
			orgs: []string{}, expires: true, warningHas: "fine-grained personal access token has permissions, not OAuth scopes",
		},
		{
			name: "ghes app installation", mode: githubtest.GHES, token: tokApp, tokenType: github.TokenApp,
			orgs: []string{"platform"}, expires: true, warningHas: "GitHub App token has permissions",
		},
		{
			name: "cloud classic", mode: githubtest.Cloud, token: tokClassic, login: "svc-orchestrator", tokenType: github.TokenClassic, listable: true,
			scopes:  []string{"read:org", "read:packages", "repo", "workflow"},
			missing: []string{"write:packages", "delete:packages", "admin:org", "manage_runners:org", "notifications", "user", "delete_repo", "admin:enterprise", "audit_log", "codespace", "project"},
			orgs:    []string{"platform", "payments"}, expires: true, rateLimit: true,
		},
		{
			name: "cloud fine-grained", mode: githubtest.Cloud, token: tokFineGrained, login: "svc-fine", tokenType: github.TokenFineGrained,
			orgs: []string{}, expires: true, rateLimit: true,
		},
		{
			name: "cloud app installation", mode: githubtest.Cloud, token: tokApp, tokenType: github.TokenApp,
			orgs: []string{"platform"}, expires: true, rateLimit: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.mode)
			out, err := f.test(testCtx(t), tt.token, github.TestOptions{})
			if err != nil {
				t.Fatalf("TestConnection: %v", err)
			}
			if out.APIURL != f.fake.APIURL() {
				t.Errorf("APIURL = %q, want %q", out.APIURL, f.fake.APIURL())
			}
			wantVersion := ""
			if tt.mode == githubtest.GHES {
				wantVersion = "3.19.0"
			}
			if out.GHESVersion != wantVersion {
				t.Errorf("GHESVersion = %q, want %q", out.GHESVersion, wantVersion)
			}
			if out.Login != tt.login || out.TokenType != tt.tokenType || out.ScopesListable != tt.listable {
				t.Errorf("login, type, listable = %q, %q, %v; want %q, %q, %v", out.Login, out.TokenType, out.ScopesListable, tt.login, tt.tokenType, tt.listable)
			}
			if !slices.Equal(out.Scopes, tt.scopes) {
				t.Errorf("Scopes = %q, want %q", out.Scopes, tt.scopes)
			}
			if !slices.Equal(out.MissingScopes, tt.missing) {
				t.Errorf("MissingScopes = %q, want %q", out.MissingScopes, tt.missing)
			}
			var logins []string
			for _, o := range out.Organizations {
				logins = append(logins, o.Login)
			}
			if !slices.Equal(logins, tt.orgs) && !(len(logins) == 0 && len(tt.orgs) == 0) {
				t.Errorf("Organizations = %q, want %q", logins, tt.orgs)
			}
			if !slices.Equal(out.SSOOrganizationIDs, tt.ssoOrgIDs) {
				t.Errorf("SSOOrganizationIDs = %v, want %v", out.SSOOrganizationIDs, tt.ssoOrgIDs)
			}
			if tt.expires != (out.TokenExpiresAt != nil) || (tt.expires && !out.TokenExpiresAt.Equal(tokenExpiry)) {
				t.Errorf("TokenExpiresAt = %v, want %v (expires %v)", out.TokenExpiresAt, tokenExpiry, tt.expires)
			}
			if tt.rateLimit {
				if out.RateLimitRemaining <= 0 || out.RateLimitRemaining >= 5000 || out.RateLimitReset == nil {
					t.Errorf("rate limit = %d, reset %v; want what the fake said", out.RateLimitRemaining, out.RateLimitReset)
				}
			} else if out.RateLimitRemaining != -1 || out.RateLimitReset != nil {
				t.Errorf("rate limit = %d, reset %v; want -1 and none (GHES has rate limits off)", out.RateLimitRemaining, out.RateLimitReset)
			}
			if tt.warningHas != "" && !slices.ContainsFunc(out.Warnings, func(w string) bool { return strings.Contains(w, tt.warningHas) }) {
				t.Errorf("Warnings = %q, want one with %q", out.Warnings, tt.warningHas)
			}
			for _, step := range []string{"github"} {
				if _, ok := out.Timings[step]; !ok {
					t.Errorf("Timings = %v, want a %q step", out.Timings, step)
				}
			}
			if tt.tokenType == github.TokenApp {
				if _, ok := out.Timings["installation"]; !ok {
					t.Errorf("Timings = %v, want an installation step", out.Timings)
				}
			} else if _, ok := out.Timings["user"]; !ok {
				t.Errorf("Timings = %v, want a user step", out.Timings)
			}
		})
	}
}

func TestGHESVersionFromMeta(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES, withFake(func(o *githubtest.Options) { o.NoVersionHeader = true; o.Version = "3.19.4" }))
	out, err := f.test(testCtx(t), tokClassic, github.TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if out.GHESVersion != "3.19.4" {
		t.Errorf("GHESVersion = %q, want 3.19.4 from /meta", out.GHESVersion)
	}
}

func TestRequiredScopesOfTheJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES)
	out, err := f.test(testCtx(t), tokClassic, github.TestOptions{RequiredScopes: []string{"repo:status", "public_repo", "read:org", "admin:org", "workflow"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.MissingScopes, []string{"admin:org"}) {
		t.Errorf("MissingScopes = %q, want [admin:org] (repo covers repo:status and public_repo)", out.MissingScopes)
	}
}

func TestListOrganizationsPages(t *testing.T) {
	t.Parallel()
	for _, mode := range []githubtest.Mode{githubtest.GHES, githubtest.Cloud} {
		t.Run(map[githubtest.Mode]string{githubtest.GHES: "ghes", githubtest.Cloud: "cloud"}[mode], func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, mode)
			var orgs []githubtest.Org
			for i := range 250 {
				orgs = append(orgs, githubtest.Org{Login: "org-" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + "-" + itoa(i), ID: int64(10000 + i), Description: "team " + itoa(i)})
			}
			orgs = append(orgs, githubtest.Org{Login: "sso-a", ID: 9001, SSO: true}, githubtest.Org{Login: "sso-b", ID: 9002, SSO: true})
			const tok = "ghp_canaryMANYORGS7f3c9e1dSECRET08"
			f.fake.AddToken(tok, githubtest.Token{Type: githubtest.Classic, Login: "many", UserID: 9, Scopes: []string{"read:org"}, Orgs: orgs})
			out, err := f.list(testCtx(t), tok)
			f.checkNoCanary("output", []byte(itoa(len(out.Organizations))))
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Organizations) != 250 || out.Truncated {
				t.Fatalf("got %d organizations (truncated %v), want 250", len(out.Organizations), out.Truncated)
			}
			for i, o := range out.Organizations {
				if o.ID != int64(10000+i) || o.Description != "team "+itoa(i) {
					t.Fatalf("organization %d = %+v", i, o)
				}
			}
			if !slices.Equal(out.SSOOrganizationIDs, []int64{9001, 9002}) {
				t.Errorf("SSOOrganizationIDs = %v, want [9001 9002]", out.SSOOrganizationIDs)
			}
			var pages []string
			for _, r := range f.fake.Requests() {
				if r.Template == "/user/orgs" {
					pages = append(pages, r.Query)
				}
			}
			if want := []string{"page=1&per_page=100", "page=2&per_page=100", "page=3&per_page=100"}; !slices.Equal(pages, want) {
				t.Errorf("/user/orgs queries = %q, want %q", pages, want)
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestListOrganizationsTokenTypes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES)
	ctx := testCtx(t)
	for _, tc := range []struct {
		token string
		want  []string
	}{
		{tokClassic, []string{"platform", "payments"}},
		{tokFineGrained, nil},
		{tokApp, []string{"platform"}},
	} {
		out, err := f.list(ctx, tc.token)
		if err != nil {
			t.Fatalf("%s: %v", tc.token[:4], err)
		}
		var got []string
		for _, o := range out.Organizations {
			got = append(got, o.Login)
		}
		if !slices.Equal(got, tc.want) || out.Organizations == nil {
			t.Errorf("%s: organizations = %q, want %q (and never null)", tc.token[:4], got, tc.want)
		}
	}
	_, err := f.list(ctx, tokNoOrgScope)
	wantCode(t, err, protocol.CodeGitHubForbidden, "403", "read:org")
}

func TestOrganizationOption(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES)
	ctx := testCtx(t)
	tests := []struct {
		name  string
		token string
		org   string
		code  protocol.ErrorCode // empty: ok
		want  []string
	}{
		{name: "member", token: tokClassic, org: "Platform"},
		{name: "fine-grained sees the organization", token: tokFineGrained, org: "payments"},
		{name: "app installed on it", token: tokApp, org: "platform"},
		{name: "app not installed on it", token: tokApp, org: "payments", code: protocol.CodeGitHubNotFound, want: []string{"installation of this token is on platform, not on organization payments"}},
		{name: "public but not a member", token: tokClassic, org: "public-org", code: protocol.CodeGitHubNotFound, want: []string{"svc-orchestrator cannot see organization public-org", "as a member", "platform, payments"}},
		{name: "does not exist", token: tokClassic, org: "nowhere", code: protocol.CodeGitHubNotFound, want: []string{"svc-orchestrator cannot see organization nowhere on " + f.fake.URL()}},
		{name: "saml sso", token: tokFullScopes, org: "octo-sso", code: protocol.CodeGitHubSSORequired, want: []string{"organization octo-sso enforces SAML single sign-on", "authorize the token at " + f.fake.URL() + "/orgs/octo-sso/sso?authorization_request="}},
	}
	for _, tt := range tests {
		out, err := f.test(ctx, tt.token, github.TestOptions{Organization: tt.org})
		if tt.code == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else if _, ok := out.Timings["organization"]; !ok {
				t.Errorf("%s: no organization step in %v", tt.name, out.Timings)
			}
			continue
		}
		t.Run(tt.name, func(t *testing.T) { wantCode(t, err, tt.code, tt.want...) })
	}
}

func TestClassicWithoutOrgScope(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES)
	out, err := f.test(testCtx(t), tokNoOrgScope, github.TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Organizations) != 0 || len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "could not list organizations") ||
		!strings.Contains(out.Warnings[0], "read:org") {
		t.Errorf("organizations %v, warnings %q; want none and a warning naming read:org", out.Organizations, out.Warnings)
	}
	if !slices.Contains(out.MissingScopes, "admin:org") {
		t.Errorf("MissingScopes = %q, want admin:org among them", out.MissingScopes)
	}
}

// TestErrors makes the fake fail in every way the agent maps, and checks
// the code and the message a person reads.
func TestErrors(t *testing.T) {
	t.Parallel()
	hour := time.Hour
	tests := []struct {
		name   string
		mode   githubtest.Mode
		fault  githubtest.Fault
		token  string // default tokFault
		config func(*github.Config)
		code   protocol.ErrorCode
		want   []string
	}{
		{name: "unknown token", token: tokUnknown, code: protocol.CodeGitHubBadCredentials, want: []string{"rejected the token (401 Bad credentials)", "wrong, expired or revoked"}},
		{name: "401", fault: githubtest.Fault{Kind: githubtest.BadCredentials}, code: protocol.CodeGitHubBadCredentials, want: []string{"401"}},
		{name: "primary 403", fault: githubtest.Fault{Kind: githubtest.RateLimited, RetryAfter: hour}, code: protocol.CodeGitHubRateLimited, want: []string{"its API rate limit", "resets at"}},
		{name: "primary 403 cloud", mode: githubtest.Cloud, fault: githubtest.Fault{Kind: githubtest.RateLimited, RetryAfter: hour}, code: protocol.CodeGitHubRateLimited, want: []string{"GET /user", "resets at"}},
		{name: "429", fault: githubtest.Fault{Kind: githubtest.RateLimited429, RetryAfter: hour}, code: protocol.CodeGitHubRateLimited, want: []string{"its rate limit", "resets at"}},
		{name: "secondary", fault: githubtest.Fault{Kind: githubtest.SecondaryRateLimited, RetryAfter: hour}, code: protocol.CodeGitHubRateLimited, want: []string{"secondary rate limit", "resets at"}},
		{name: "secondary on orgs", fault: githubtest.Fault{Kind: githubtest.SecondaryRateLimited, Path: "/user/orgs", RetryAfter: hour}, code: protocol.CodeGitHubRateLimited, want: []string{"GET /api/v3/user/orgs"}},
		{name: "sso on user", fault: githubtest.Fault{Kind: githubtest.SSORequired}, code: protocol.CodeGitHubSSORequired, want: []string{"SAML single sign-on", "authorize the token at https://127.0.0.1:"}},
		{name: "403", fault: githubtest.Fault{Kind: githubtest.Forbidden}, code: protocol.CodeGitHubForbidden, want: []string{"refused GET /api/v3/user (403 Although", "IP allow list"}},
		{name: "404 with the API answering", fault: githubtest.Fault{Kind: githubtest.NotFound}, code: protocol.CodeGitHubNotFound, want: []string{"answered 404 to GET /api/v3/user", "/api/v3 answered as a GitHub API (GitHub Enterprise Server 3.19.0), so the host is right"}},
		{name: "404 cloud", mode: githubtest.Cloud, fault: githubtest.Fault{Kind: githubtest.NotFound}, code: protocol.CodeGitHubNotFound, want: []string{"answered 404 to GET /user", "answered as a GitHub API, so the host is right"}},
		{name: "502", fault: githubtest.Fault{Kind: githubtest.ServerError}, code: protocol.CodeGitHubUnreachable, want: []string{"answered 502 Bad Gateway to GET /api/v3/user", "try again later", "connecting directly"}},
		{name: "503 on orgs", fault: githubtest.Fault{Kind: githubtest.ServerError, Status: 503, Path: "/user/orgs"}, code: protocol.CodeGitHubUnreachable, want: []string{"503 Service Unavailable"}},
		{name: "not json", fault: githubtest.Fault{Kind: githubtest.NotJSON}, code: protocol.CodeGitHubNotFound, want: []string{"not GitHub's REST API"}},
		{name: "redirect to another host", fault: githubtest.Fault{Kind: githubtest.RedirectElsewhere}, code: protocol.CodeGitHubNotFound, want: []string{"redirect to https://127.0.0.1:", "never follows a redirect to another host with credentials"}},
		{name: "slow beyond github.timeout", fault: githubtest.Fault{Kind: githubtest.Slow, Delay: 5 * time.Second}, config: func(c *github.Config) { c.Timeout = time.Second },
			code: protocol.CodeGitHubUnreachable, want: []string{"did not answer within 1s (github.timeout)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := []fixtureOpt{withFaults(tt.fault)}
			if tt.config != nil {
				opts = append(opts, withConfig(tt.config))
			}
			f := newFixture(t, tt.mode, opts...)
			tok := tt.token
			if tok == "" {
				tok = tokFault
			}
			_, err := f.test(testCtx(t), tok, github.TestOptions{})
			wantCode(t, err, tt.code, tt.want...)
			if tt.code != protocol.CodeGitHubUnreachable || tt.fault.Kind != githubtest.Slow {
				// list_organizations maps the same way.
				_, lerr := f.list(testCtx(t), tok)
				if tt.fault.Path == "" || tt.fault.Path == "/user/orgs" {
					wantCode(t, lerr, tt.code)
				}
			}
			for _, r := range f.fake.ElsewhereRequests() {
				t.Errorf("the other server got %s %s (Authorization %q)", r.Method, r.Path, r.Authorization)
			}
		})
	}
}

func TestWrongKindOrHost(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cloudFake := newFixture(t, githubtest.Cloud)
	_, err := cloudFake.testAt(ctx, cloudFake.endpointFor(protocol.GitHubEnterpriseServer, cloudFake.fake.URL()), tokClassic, github.TestOptions{})
	wantCode(t, err, protocol.CodeGitHubNotFound, "answered 404 to GET /api/v3/user", "/api/v3 did not answer as a GitHub API (HTTP 404)", "is not a GitHub Enterprise Server")

	ghesFake := newFixture(t, githubtest.GHES)
	_, err = ghesFake.testAt(ctx, ghesFake.endpointFor(protocol.GitHubCloud, ghesFake.fake.URL()), tokClassic, github.TestOptions{})
	wantCode(t, err, protocol.CodeGitHubNotFound, "answered 404 to GET /user", "/api/v3 answers: this is a GitHub Enterprise Server 3.19.0; use github_kind \"ghes\"")
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	f := newFixture(t, githubtest.GHES)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = f.testAt(ctx, f.endpointFor(protocol.GitHubEnterpriseServer, "https://"+addr), tokClassic, github.TestOptions{})
	wantCode(t, err, protocol.CodeGitHubUnreachable, "127.0.0.1 refused the connection on port", "connecting directly")
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)

	t.Run("no CA", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, githubtest.GHES, withoutCA())
		_, err := f.test(ctx, tokClassic, github.TestOptions{})
		wantCode(t, err, protocol.CodeGitHubTLS, "issued by", "which this agent does not trust", "add that CA's certificate (PEM) to github.ca_file in the agent config")
		if n := len(f.fake.Requests()); n != 0 {
			t.Errorf("the fake got %d requests over an untrusted connection", n)
		}
	})
	t.Run("wrong CA in ca_file", func(t *testing.T) {
		t.Parallel()
		// A CA bundle that holds a certificate, but not the fake's.
		ca := writeOtherCA(t)
		f := newFixture(t, githubtest.GHES, withConfig(func(c *github.Config) { c.CAFile = ca }))
		_, err := f.test(ctx, tokClassic, github.TestOptions{})
		wantCode(t, err, protocol.CodeGitHubTLS, "github.ca_file ("+ca+") does not hold it")
	})
	t.Run("name not in the certificate", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, githubtest.GHES)
		u := strings.Replace(f.fake.URL(), "127.0.0.1", "localhost", 1)
		_, err := f.testAt(ctx, f.endpointFor(protocol.GitHubEnterpriseServer, u), tokClassic, github.TestOptions{})
		wantCode(t, err, protocol.CodeGitHubTLS, "is not valid for localhost", "example.com")
	})
	t.Run("not TLS", func(t *testing.T) {
		t.Parallel()
		plain := httptest.NewServer(http.NotFoundHandler())
		defer plain.Close()
		f := newFixture(t, githubtest.GHES)
		u := strings.Replace(plain.URL, "http://", "https://", 1)
		_, err := f.testAt(ctx, f.endpointFor(protocol.GitHubEnterpriseServer, u), tokClassic, github.TestOptions{})
		wantCode(t, err, protocol.CodeGitHubTLS, "does not speak TLS")
	})
}

func TestProxy(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	t.Run("through github.proxy", func(t *testing.T) {
		t.Parallel()
		p := newConnectProxy(t)
		f := newFixture(t, githubtest.GHES, withConfig(func(c *github.Config) { c.Proxy = p.URL() }))
		out, err := f.test(ctx, tokClassic, github.TestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if out.Login != "svc-orchestrator" {
			t.Errorf("Login = %q", out.Login)
		}
		host := strings.TrimPrefix(f.fake.URL(), "https://")
		if got := p.Targets(); len(got) == 0 || got[0] != host {
			t.Errorf("the proxy was asked for %q, want %q", got, host)
		}
	})
	t.Run("proxy down", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		proxy := "http://user:canary-proxy-password@" + ln.Addr().String()
		ln.Close()
		f := newFixture(t, githubtest.GHES, withConfig(func(c *github.Config) { c.Proxy = proxy }))
		_, err = f.test(ctx, tokClassic, github.TestOptions{})
		pe := wantCode(t, err, protocol.CodeGitHubUnreachable, "cannot reach the proxy", "through the proxy http://"+ln.Addr().String()+", from github.proxy")
		if strings.Contains(pe.Message, "canary-proxy-password") || strings.Contains(pe.Message, "user:") {
			t.Errorf("the message shows the proxy's credentials: %s", pe.Message)
		}
	})
}

func TestRedirects(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	t.Run("same origin is followed", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, githubtest.GHES, withFaults(githubtest.Fault{Kind: githubtest.RedirectSameOrigin, Path: "/user", Times: 1}))
		out, err := f.test(ctx, tokFault, github.TestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if out.Login != "svc-fault" {
			t.Errorf("Login = %q", out.Login)
		}
	})
	t.Run("another host never gets the token", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, githubtest.GHES, withFaults(githubtest.Fault{Kind: githubtest.RedirectElsewhere, Path: "/user/orgs"}))
		_, err := f.test(ctx, tokFault, github.TestOptions{})
		wantCode(t, err, protocol.CodeGitHubNotFound, "redirect to "+f.fake.Elsewhere.URL)
		_, err = f.list(ctx, tokFault)
		wantCode(t, err, protocol.CodeGitHubNotFound, "redirect to "+f.fake.Elsewhere.URL)
		for _, r := range f.fake.ElsewhereRequests() {
			if r.Authorization != "" {
				t.Errorf("the other server got an Authorization header on %s %s", r.Method, r.Path)
			}
			t.Errorf("the other server got %s %s: the redirect was followed", r.Method, r.Path)
		}
	})
}

// TestRetryAfter: a rate limit whose wait fits in the job's deadline is
// waited out once; a second limit, or a wait past the deadline, is reported
// at once.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault githubtest.Fault
		ok    bool
		want  []string
	}{
		{name: "429 once", fault: githubtest.Fault{Kind: githubtest.RateLimited429, Path: "/user", Times: 1, RetryAfter: time.Second}, ok: true},
		{name: "secondary once", fault: githubtest.Fault{Kind: githubtest.SecondaryRateLimited, Path: "/user", Times: 1, RetryAfter: time.Second}, ok: true},
		{name: "primary once", fault: githubtest.Fault{Kind: githubtest.RateLimited, Path: "/user", Times: 1, RetryAfter: 0}, ok: true},
		{name: "429 twice", fault: githubtest.Fault{Kind: githubtest.RateLimited429, Path: "/user", Times: 2, RetryAfter: time.Second},
			want: []string{"the agent waited once, as GitHub asked, and was limited again"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, githubtest.Cloud, withFaults(tt.fault))
			out, err := f.test(testCtx(t), tokFault, github.TestOptions{})
			if tt.ok {
				if err != nil {
					t.Fatalf("want success after one wait: %v", err)
				}
				if out.Login != "svc-fault" {
					t.Errorf("Login = %q", out.Login)
				}
			} else {
				wantCode(t, err, protocol.CodeGitHubRateLimited, tt.want...)
			}
			n := 0
			for _, r := range f.fake.Requests() {
				if r.Template == "/user" {
					n++
				}
			}
			if n != 2 {
				t.Errorf("/user was called %d times, want 2 (one retry)", n)
			}
		})
	}
	t.Run("wait past the deadline", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, githubtest.Cloud, withFaults(githubtest.Fault{Kind: githubtest.RateLimited429, RetryAfter: 30 * time.Second}))
		ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := f.test(ctx, tokFault, github.TestOptions{})
		wantCode(t, err, protocol.CodeGitHubRateLimited, "resets at")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s; a wait past the deadline must not be waited", d)
		}
	})
}

func TestJobDeadline(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES, withFaults(githubtest.Fault{Kind: githubtest.Slow, Delay: 10 * time.Second}))
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	_, err := f.test(ctx, tokFault, github.TestOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's deadline (the runner reports timeout)", err)
	}
}

// TestLogLines: one debug line per GitHub call, with method, path, status
// and duration, and nothing else from the request.
func TestLogLines(t *testing.T) {
	t.Parallel()
	f := newFixture(t, githubtest.GHES)
	if _, err := f.test(testCtx(t), tokClassic, github.TestOptions{Organization: "platform"}); err != nil {
		t.Fatal(err)
	}
	logs := string(f.logs.Bytes())
	for _, want := range []string{
		`"msg":"github call","method":"GET","path":"/api/v3/user","duration_ms":`,
		`"status":200`,
		`"path":"/api/v3/user/orgs"`,
		`"path":"/api/v3/orgs/platform"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s:\n%s", want, logs)
		}
	}
	for _, banned := range []string{"Authorization", "Bearer", "X-OAuth-Scopes"} {
		if strings.Contains(logs, banned) {
			t.Errorf("the log holds %q:\n%s", banned, logs)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		c    github.Config
		want string // empty: valid
	}{
		{c: github.Config{}},
		{c: github.Config{Proxy: "direct", Timeout: 5 * time.Second}},
		{c: github.Config{Proxy: "http://proxy.example.com:3128"}},
		{c: github.Config{Proxy: "socks5://127.0.0.1:1080"}},
		{c: github.Config{Timeout: time.Millisecond}, want: "github.timeout"},
		{c: github.Config{Proxy: "proxy.example.com:3128"}, want: "github.proxy"},
		{c: github.Config{Proxy: "ftp://proxy.example.com"}, want: "github.proxy"},
		{c: github.Config{Proxy: "http://u:canary-pw@proxy/x"}, want: "github.proxy"},
		{c: github.Config{CAFile: filepath.Join(dir, "missing.pem")}, want: "github.ca_file"},
		{c: github.Config{CAFile: notPEM}, want: "github.ca_file: " + notPEM + " holds no PEM certificate"},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v", tt.c, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: err = %v, want %q", tt.c, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "canary-pw"):
			t.Errorf("the error shows the proxy password: %v", err)
		}
	}
}

// writeOtherCA writes a self-signed CA certificate that is not the fake's
// and returns its path.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "some other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
