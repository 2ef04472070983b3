package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	gh "github.com/google/go-github/v62/github"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// Token types of [protocol.ConnectionOutput.TokenType].
const (
	// TokenClassic is a token with OAuth scopes (GitHub answers with an
	// X-OAuth-Scopes header): a classic personal access token, or an OAuth
	// app's token.
	TokenClassic = "classic_pat"
	// TokenFineGrained is a fine-grained personal access token: /user
	// answers, without X-OAuth-Scopes.
	TokenFineGrained = "fine_grained_pat"
	// TokenApp is a GitHub App token: an installation token (/user answers
	// 403 "Resource not accessible by integration" and
	// /installation/repositories answers) or an App's user-to-server token
	// (ghu_, without scopes).
	TokenApp = "github_app"
)

// Bounds of the organizations listing, so that a result fits in one
// protocol frame.
const (
	// MaxOrgPages bounds the pages of /user/orgs read (100 per page).
	MaxOrgPages = 50
	// maxOrgBytes bounds the JSON of the organizations of one result.
	maxOrgBytes = 160 << 10
	// maxDescription bounds one organization's description, in bytes.
	maxDescription = 512
)

// Header names GitHub answers with.
const (
	headerScopes         = "X-OAuth-Scopes"
	headerAcceptedScopes = "X-Accepted-OAuth-Scopes"
	headerGHESVersion    = "X-GitHub-Enterprise-Version"
	headerSSO            = "X-GitHub-SSO"
	headerRetryAfter     = "Retry-After"
)

// integrationMessage is GitHub's answer to /user for an installation token.
const integrationMessage = "Resource not accessible by integration"

// TestOptions are test_connection's options.
type TestOptions struct {
	// RequiredScopes are checked against a classic token's scopes; empty
	// means [DefaultRequiredScopes].
	RequiredScopes []string
	// Organization, when set, must be visible to the account (a member of
	// it, or the App installed on it).
	Organization string
}

// session is one job's calls to GitHub.
type session struct {
	s       *Service
	ep      Endpoint
	c       *gh.Client
	log     *zap.Logger
	token   redact.Secret
	timings map[string]int64

	rate     gh.Rate // the last one GitHub reported (Limit > 0)
	tokenExp time.Time
	version  string
	retried  bool // a Retry-After was honoured; never twice per job
}

func (s *Service) session(ep Endpoint, token redact.Secret, log *zap.Logger) (*session, error) {
	if log == nil {
		log = zap.NewNop()
	}
	c, err := s.newClient(ep, &token, log)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInvalidParams, "the GitHub API URL %s cannot be used: %v", ep.APIURL, err)
	}
	return &session{s: s, ep: ep, c: c, log: log, token: token, timings: map[string]int64{}}, nil
}

// identity is who the token is.
type identity struct {
	login     string
	tokenType string
	scopes    []string // classic tokens
	// account is the account an App installation is on, when it can see a
	// repository.
	account *gh.User
}

// TestConnection checks the connection to ep with token and reports what
// GitHub says: login, token type, scopes, organizations, version, rate
// limit. It returns a *protocol.Error with a github_* code, or ctx.Err()
// when the job's context ended.
func (s *Service) TestConnection(ctx context.Context, log *zap.Logger, ep Endpoint, token redact.Secret, o TestOptions) (out *protocol.ConnectionOutput, err error) {
	ss, err := s.session(ep, token, log)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	defer func() {
		out, err = ss.finish(out, err)
		if out != nil {
			out.Timings["github"] = time.Since(start).Milliseconds()
		}
	}()

	id, err := ss.identify(ctx)
	if err != nil {
		return nil, err
	}
	out = &protocol.ConnectionOutput{APIURL: ep.APIURL, Login: id.login, TokenType: id.tokenType}
	switch id.tokenType {
	case TokenClassic:
		required := o.RequiredScopes
		if len(required) == 0 {
			required = DefaultRequiredScopes
		}
		out.ScopesListable = true
		out.Scopes = id.scopes
		out.MissingScopes = MissingScopes(id.scopes, required)
	default:
		out.Warnings = append(out.Warnings, fmt.Sprintf(
			"a %s has permissions, not OAuth scopes: GitHub does not list them, so the required scopes were not checked; check the token's permissions on GitHub",
			tokenTypeText(id.tokenType)))
	}

	orgs, err := ss.organizations(ctx, id)
	var pe *protocol.Error
	switch {
	case err == nil:
		out.Organizations, out.OrganizationsTruncated, out.SSOOrganizationIDs = orgs.list, orgs.truncated, orgs.ssoIDs
		if orgs.truncated {
			out.Warnings = append(out.Warnings, fmt.Sprintf("the account sees more organizations than one result holds; the first %d are listed", len(orgs.list)))
		}
		if len(orgs.ssoIDs) > 0 {
			out.Warnings = append(out.Warnings, fmt.Sprintf(
				"GitHub left out %d organization(s) that enforce SAML single sign-on and for which the token is not authorized (ids in sso_organization_ids); authorize the token for them on GitHub (token settings, Configure SSO)",
				len(orgs.ssoIDs)))
		}
	case errors.As(err, &pe) && pe.Code == protocol.CodeGitHubForbidden:
		// The token works but may not list organizations (a classic token
		// without read:org or user): report it, do not fail the test.
		orgs = nil
		out.Warnings = append(out.Warnings, "could not list organizations: "+pe.Message)
	default:
		return nil, err
	}

	if o.Organization != "" {
		if err := ss.checkOrganization(ctx, id, orgs, o.Organization); err != nil {
			return nil, err
		}
	}
	if ep.Kind == protocol.GitHubEnterpriseServer && ss.version == "" {
		ss.metaVersion(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// ListOrganizations lists the organizations the token's account can see
// (for an App installation token: the organization it is installed on).
func (s *Service) ListOrganizations(ctx context.Context, log *zap.Logger, ep Endpoint, token redact.Secret) (out *protocol.OrganizationsOutput, err error) {
	ss, err := s.session(ep, token, log)
	if err != nil {
		return nil, err
	}
	defer func() { out, err = ss.finishOrgs(out, err) }()
	orgs, err := ss.organizations(ctx, identity{})
	if err != nil {
		return nil, err
	}
	return &protocol.OrganizationsOutput{
		Organizations: orgs.list, Truncated: orgs.truncated, SSOOrganizationIDs: orgs.ssoIDs,
	}, nil
}

func tokenTypeText(t string) string {
	switch t {
	case TokenFineGrained:
		return "fine-grained personal access token"
	case TokenApp:
		return "GitHub App token"
	}
	return "classic personal access token"
}

// identify asks GitHub who the token is.
func (ss *session) identify(ctx context.Context) (identity, error) {
	var user *gh.User
	resp, err := ss.call(ctx, "user", func() (*gh.Response, error) {
		var resp *gh.Response
		var err error
		user, resp, err = ss.c.Users.Get(ctx, "")
		return resp, err
	})
	if err != nil {
		if isIntegrationError(err) {
			return ss.identifyInstallation(ctx)
		}
		return identity{}, ss.classify(ctx, err)
	}
	id := identity{login: user.GetLogin()}
	if vals, ok := resp.Header[http.CanonicalHeaderKey(headerScopes)]; ok {
		id.tokenType = TokenClassic
		id.scopes = ParseScopes(strings.Join(vals, ","))
	} else if strings.HasPrefix(ss.token.Reveal(), "ghu_") {
		// A GitHub App's user-to-server token: it has a login but no scopes.
		id.tokenType = TokenApp
	} else {
		id.tokenType = TokenFineGrained
	}
	return id, nil
}

// isIntegrationError reports whether err is GitHub's 403 for an App
// installation token on a user endpoint.
func isIntegrationError(err error) bool {
	var er *gh.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusForbidden &&
		strings.Contains(er.Message, integrationMessage)
}

// identifyInstallation confirms an App installation token: it can list the
// installation's repositories. The owner of the first is the account the
// App is installed on.
func (ss *session) identifyInstallation(ctx context.Context) (identity, error) {
	var repos *gh.ListRepositories
	_, err := ss.call(ctx, "installation", func() (*gh.Response, error) {
		var resp *gh.Response
		var err error
		repos, resp, err = ss.c.Apps.ListRepos(ctx, &gh.ListOptions{PerPage: 1})
		return resp, err
	})
	if err != nil {
		return identity{}, ss.classify(ctx, err)
	}
	id := identity{tokenType: TokenApp}
	if repos != nil && len(repos.Repositories) > 0 && repos.Repositories[0].GetOwner().GetLogin() != "" {
		id.account = repos.Repositories[0].GetOwner()
	}
	return id, nil
}

// orgList is what organizations found.
type orgList struct {
	list      []protocol.Organization
	truncated bool
	ssoIDs    []int64
	// listed is false when the list comes from an App installation rather
	// than /user/orgs.
	listed bool
}

// organizations lists the account's organizations: /user/orgs, every page
// up to MaxOrgPages and maxOrgBytes. An App installation token (known from
// id, or from /user/orgs answering as for an integration) gets the account
// it is installed on when that is an organization.
func (ss *session) organizations(ctx context.Context, id identity) (*orgList, error) {
	if id.tokenType == TokenApp && id.login == "" {
		return ss.installationOrgs(id), nil
	}
	out := &orgList{listed: true, list: []protocol.Organization{}}
	budget := maxOrgBytes
	for page := 1; page <= MaxOrgPages; page++ {
		var orgs []*gh.Organization
		resp, err := ss.call(ctx, "orgs", func() (*gh.Response, error) {
			var resp *gh.Response
			var err error
			orgs, resp, err = ss.c.Organizations.List(ctx, "", &gh.ListOptions{PerPage: 100, Page: page})
			return resp, err
		})
		if err != nil {
			if page == 1 && id.tokenType == "" && isIntegrationError(err) {
				inst, ierr := ss.identifyInstallation(ctx)
				if ierr != nil {
					return nil, ierr
				}
				return ss.installationOrgs(inst), nil
			}
			return nil, ss.classify(ctx, err)
		}
		if sso := parseSSO(resp.Header.Get(headerSSO)); len(sso.orgIDs) > 0 {
			for _, oid := range sso.orgIDs {
				if !slices.Contains(out.ssoIDs, oid) && len(out.ssoIDs) < protocol.MaxListLength {
					out.ssoIDs = append(out.ssoIDs, oid)
				}
			}
		}
		for _, o := range orgs {
			org := protocol.Organization{Login: o.GetLogin(), ID: o.GetID(), Description: truncate(o.GetDescription(), maxDescription)}
			b, _ := json.Marshal(org)
			if len(b)+1 > budget {
				out.truncated = true
				return out, nil
			}
			budget -= len(b) + 1
			out.list = append(out.list, org)
		}
		if resp.NextPage == 0 {
			return out, nil
		}
	}
	out.truncated = true
	return out, nil
}

// installationOrgs is the organization an App installation is on.
func (ss *session) installationOrgs(id identity) *orgList {
	out := &orgList{list: []protocol.Organization{}}
	if a := id.account; a != nil && a.GetType() == "Organization" {
		out.list = append(out.list, protocol.Organization{Login: a.GetLogin(), ID: a.GetID()})
	}
	return out
}

// checkOrganization checks that the account can see org.
func (ss *session) checkOrganization(ctx context.Context, id identity, orgs *orgList, org string) error {
	var got *gh.Organization
	_, err := ss.call(ctx, "organization", func() (*gh.Response, error) {
		var resp *gh.Response
		var err error
		got, resp, err = ss.c.Organizations.Get(ctx, org)
		return resp, err
	})
	who := "the account " + id.login
	if id.login == "" {
		who = "this " + tokenTypeText(id.tokenType)
	}
	if err != nil {
		var er *gh.ErrorResponse
		if errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotFound &&
			!strings.HasPrefix(er.Response.Header.Get(headerSSO), "required") {
			return protocol.Errorf(protocol.CodeGitHubNotFound,
				"%s cannot see organization %s on %s: it does not exist there, or is hidden from this account; check params.organization",
				who, org, ss.ep.Instance)
		}
		pe := ss.classify(ctx, err)
		var perr *protocol.Error
		if errors.As(pe, &perr) && perr.Code == protocol.CodeGitHubSSORequired {
			perr.Message = fmt.Sprintf("organization %s enforces SAML single sign-on and the token is not authorized for it: %s", org, perr.Message)
		}
		return pe
	}
	switch {
	case id.tokenType == TokenApp && id.account != nil:
		if !strings.EqualFold(id.account.GetLogin(), org) {
			return protocol.Errorf(protocol.CodeGitHubNotFound,
				"the GitHub App installation of this token is on %s, not on organization %s; install the App on %s or use a token of its installation there",
				id.account.GetLogin(), org, org)
		}
	case id.tokenType == TokenClassic && orgs != nil && orgs.listed:
		for _, o := range orgs.list {
			if strings.EqualFold(o.Login, org) {
				return nil
			}
		}
		if slices.Contains(orgs.ssoIDs, got.GetID()) {
			return protocol.Errorf(protocol.CodeGitHubSSORequired,
				"organization %s enforces SAML single sign-on and the token is not authorized for it; authorize the token for %s on GitHub (token settings, Configure SSO)",
				org, org)
		}
		if orgs.truncated {
			return nil // it may be past the end of the list
		}
		return protocol.Errorf(protocol.CodeGitHubNotFound,
			"%s cannot see organization %s on %s as a member (it sees %s); add the account to %s, or check params.organization",
			who, org, ss.ep.Instance, orgNames(orgs.list, 10), org)
	}
	return nil
}

func orgNames(orgs []protocol.Organization, n int) string {
	if len(orgs) == 0 {
		return "no organization"
	}
	names := make([]string, 0, n)
	for i, o := range orgs {
		if i == n {
			names = append(names, fmt.Sprintf("and %d more", len(orgs)-n))
			break
		}
		names = append(names, o.Login)
	}
	return strings.Join(names, ", ")
}

// metaVersion reads the GHES version from /meta's installed_version, when
// no answer carried X-GitHub-Enterprise-Version. Failures are ignored.
func (ss *session) metaVersion(ctx context.Context) {
	var meta struct {
		InstalledVersion string `json:"installed_version"`
	}
	_, _ = ss.call(ctx, "meta", func() (*gh.Response, error) {
		req, err := ss.c.NewRequest(http.MethodGet, "meta", nil)
		if err != nil {
			return nil, err
		}
		return ss.c.Do(ctx, req, &meta)
	})
	if ss.version == "" && validVersion(meta.InstalledVersion) {
		ss.version = meta.InstalledVersion
	}
}

// validVersion accepts a short version string ("3.19.0").
func validVersion(v string) bool {
	return v != "" && len(v) <= 32 && !strings.ContainsFunc(v, func(r rune) bool {
		return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '.' || r == '-' || r == '+')
	})
}

// call runs one GitHub call, times it under step, notes what the answer
// says about the connection, and honours a rate limit's wait once per job
// when it ends before the job's deadline.
func (ss *session) call(ctx context.Context, step string, f func() (*gh.Response, error)) (*gh.Response, error) {
	start := time.Now()
	defer func() { ss.timings[step] += time.Since(start).Milliseconds() }()
	resp, err := f()
	ss.note(resp)
	if wait, ok := ss.retryWait(ctx, err); ok {
		ss.retried = true
		ss.log.Info("github rate limited; waiting once before retrying", zap.Int64("wait_ms", wait.Milliseconds()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, ctx.Err()
		case <-t.C:
		}
		resp, err = f()
		ss.note(resp)
	}
	return resp, err
}

// note keeps what an answer says: rate limit, token expiry, GHES version.
func (ss *session) note(resp *gh.Response) {
	if resp == nil || resp.Response == nil || resp.Header == nil {
		return
	}
	if resp.Rate.Limit > 0 {
		ss.rate = resp.Rate
	}
	if !resp.TokenExpiration.IsZero() {
		ss.tokenExp = resp.TokenExpiration.Time
	}
	if v := resp.Header.Get(headerGHESVersion); validVersion(v) {
		ss.version = v
	}
}

// retryWait says how long to wait before retrying a rate-limited call, and
// whether to: once per job, at most MaxRetryWait, and only when the wait
// ends (with a second to spare) before the job's deadline.
func (ss *session) retryWait(ctx context.Context, err error) (time.Duration, bool) {
	if err == nil || ss.retried || ctx.Err() != nil {
		return 0, false
	}
	wait, ok := rateLimitWait(err)
	if !ok {
		return 0, false
	}
	wait = max(wait, 0) + 100*time.Millisecond
	if wait > MaxRetryWait {
		return 0, false
	}
	if dl, has := ctx.Deadline(); has && time.Until(dl) < wait+time.Second {
		return 0, false
	}
	return wait, true
}

// rateLimitWait is how long GitHub asks to wait, for a rate-limit error:
// its Retry-After, and at least until the reset when it says no requests
// remain (go-github refuses to call before that reset anyway).
func rateLimitWait(err error) (time.Duration, bool) {
	var rle *gh.RateLimitError
	var are *gh.AbuseRateLimitError
	var er *gh.ErrorResponse
	var resp *http.Response
	wait, ok := time.Duration(0), false
	switch {
	case errors.As(err, &rle):
		resp = rle.Response
		if !rle.Rate.Reset.IsZero() {
			wait, ok = time.Until(rle.Rate.Reset.Time), true
		}
	case errors.As(err, &are):
		resp = are.Response
		if are.RetryAfter != nil {
			wait, ok = *are.RetryAfter, true
		}
	case errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusTooManyRequests:
		resp = er.Response
	default:
		return 0, false
	}
	if resp == nil {
		return wait, ok
	}
	if d, has := retryAfter(resp.Header); has {
		wait, ok = max(wait, d), true
	}
	if resp.Header.Get("X-RateLimit-Remaining") == "0" {
		if reset, has := rateReset(resp.Header); has {
			wait, ok = max(wait, time.Until(reset)), true
		}
	}
	return wait, ok
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(h http.Header) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get(headerRetryAfter))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && n < 1<<31 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t), true
	}
	return 0, false
}

// rateReset reads X-RateLimit-Reset (Unix seconds).
func rateReset(h http.Header) (time.Time, bool) {
	n, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil || n <= 0 || n > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

// ssoHeader is a parsed X-GitHub-SSO header: "required; url=https://…"
// for a resource of an organization that enforces SAML single sign-on, or
// "partial-results; organizations=21955855,20582480" for a listing that left
// those organizations out.
type ssoHeader struct {
	required bool
	url      string
	orgIDs   []int64
}

func parseSSO(v string) ssoHeader {
	var h ssoHeader
	for i, part := range strings.Split(v, ";") {
		part = strings.TrimSpace(part)
		if i == 0 {
			h.required = part == "required"
			continue
		}
		key, val, _ := strings.Cut(part, "=")
		switch strings.TrimSpace(key) {
		case "url":
			val = strings.TrimSpace(val)
			if strings.HasPrefix(val, "https://") && len(val) <= 1024 {
				h.url = val
			}
		case "organizations":
			for _, s := range strings.Split(val, ",") {
				if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil && len(h.orgIDs) < 1000 {
					h.orgIDs = append(h.orgIDs, n)
				}
			}
		}
	}
	return h
}

// finish completes a test_connection output and makes sure that neither it
// nor the error holds the token.
func (ss *session) finish(out *protocol.ConnectionOutput, err error) (*protocol.ConnectionOutput, error) {
	if err != nil {
		return nil, ss.scrubError(err)
	}
	if out == nil {
		return nil, nil
	}
	out.GHESVersion = ss.version
	out.RateLimitRemaining = -1
	if ss.rate.Limit > 0 {
		out.RateLimitRemaining = ss.rate.Remaining
		if !ss.rate.Reset.IsZero() {
			t := ss.rate.Reset.UTC()
			out.RateLimitReset = &t
		}
	}
	if !ss.tokenExp.IsZero() {
		t := ss.tokenExp.UTC()
		out.TokenExpiresAt = &t
	}
	out.Timings = ss.timings
	tok := ss.token.Reveal()
	scrub := func(s *string) { *s = scrubText(*s, tok) }
	scrub(&out.Login)
	scrub(&out.GHESVersion)
	for i := range out.Scopes {
		scrub(&out.Scopes[i])
	}
	for i := range out.MissingScopes {
		scrub(&out.MissingScopes[i])
	}
	for i := range out.Warnings {
		scrub(&out.Warnings[i])
		out.Warnings[i] = truncate(out.Warnings[i], 1024)
	}
	scrubOrgs(out.Organizations, tok)
	return out, nil
}

func (ss *session) finishOrgs(out *protocol.OrganizationsOutput, err error) (*protocol.OrganizationsOutput, error) {
	if err != nil {
		return nil, ss.scrubError(err)
	}
	if out != nil {
		scrubOrgs(out.Organizations, ss.token.Reveal())
	}
	return out, nil
}

func scrubOrgs(orgs []protocol.Organization, tok string) {
	for i := range orgs {
		orgs[i].Login = scrubText(orgs[i].Login, tok)
		orgs[i].Description = scrubText(orgs[i].Description, tok)
	}
}

// scrubError bounds a *protocol.Error's message and masks the token in it,
// should a server have echoed it; context errors pass unchanged for the
// runner.
func (ss *session) scrubError(err error) error {
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return protocol.Errorf(protocol.CodeInternal, "%s", truncate(scrubText(err.Error(), ss.token.Reveal()), 1024))
	}
	return &protocol.Error{Code: pe.Code, Message: truncate(scrubText(pe.Message, ss.token.Reveal()), 2048)}
}

// scrubText replaces every occurrence of the token in s.
func scrubText(s, token string) string {
	if len(token) < 4 || !strings.Contains(s, token) {
		return s
	}
	return strings.ReplaceAll(s, token, redact.Placeholder)
}
