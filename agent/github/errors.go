package github

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	gh "github.com/google/go-github/v62/github"

	"github.com/orchestrator/orchestrator/protocol"
)

// classify turns an error of a GitHub call into a *protocol.Error with a
// github_* code and a message a person can act on, or returns ctx.Err()
// when the job's context ended (the runner reports timeout or canceled).
func (ss *session) classify(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var (
		pe   *protocol.Error
		rle  *gh.RateLimitError
		are  *gh.AbuseRateLimitError
		tfa  *gh.TwoFactorAuthError
		er   *gh.ErrorResponse
		rde  *redirectError
		synt *json.SyntaxError
		typ  *json.UnmarshalTypeError
	)
	host := ss.ep.Instance
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.As(err, &rle):
		return ss.rateLimited(rle.Response, "its API rate limit", rle.Rate.Reset.Time)
	case errors.As(err, &are):
		var until time.Time
		if are.RetryAfter != nil {
			until = time.Now().Add(*are.RetryAfter)
		}
		return ss.rateLimited(are.Response, "a secondary rate limit (too many requests at once or too fast)", until)
	case errors.As(err, &tfa):
		return protocol.Errorf(protocol.CodeGitHubBadCredentials,
			"GitHub at %s asks for a two-factor code (401): the secret holds a password, not a token; store a personal access token or an App token in it", host)
	case errors.As(err, &er) && er.Response != nil:
		return ss.classifyStatus(ctx, er)
	case errors.As(err, &rde):
		if rde.tooMany {
			return protocol.Errorf(protocol.CodeGitHubUnreachable,
				"GitHub at %s redirected more than %d times; check the GitHub URL and any proxy in between", host, maxRedirects)
		}
		return protocol.Errorf(protocol.CodeGitHubNotFound,
			"GitHub at %s answered with a redirect to %s; the agent never follows a redirect to another host with credentials. If %s is the right server, make it the connection's GitHub URL and allow it in policy.secrets[].hosts of the agent config",
			host, rde.to, rde.to)
	case errors.Is(err, errOtherOrigin):
		return protocol.Errorf(protocol.CodeHostNotAllowed, "a call to GitHub left %s; refused", ss.ep.Origin)
	case errors.Is(err, errTooLarge):
		return protocol.Errorf(protocol.CodeGitHubUnreachable, "GitHub at %s sent an answer larger than %d MiB; check the GitHub URL", host, maxBody>>20)
	case errors.As(err, &synt), errors.As(err, &typ), errors.Is(err, io.ErrUnexpectedEOF) && !isNetError(err):
		return protocol.Errorf(protocol.CodeGitHubNotFound,
			"%s answered with something that is not GitHub's REST API (%s); %s",
			host, "not the JSON GitHub sends", ss.probe(ctx))
	}
	return ss.classifyNet(err)
}

func isNetError(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

// classifyStatus maps an HTTP error answer.
func (ss *session) classifyStatus(ctx context.Context, er *gh.ErrorResponse) error {
	resp := er.Response
	host := ss.ep.Instance
	call := callText(resp)
	msg := ghMessage(er.Message)
	if sso := parseSSO(resp.Header.Get(headerSSO)); sso.required {
		where := "authorize the token for the organization on GitHub (token settings, Configure SSO)"
		if sso.url != "" {
			where = "authorize the token at " + sso.url + " (the link is valid for an hour; run the test again for a new one)"
		}
		return protocol.Errorf(protocol.CodeGitHubSSORequired,
			"GitHub at %s refused %s because the organization enforces SAML single sign-on and the token is not authorized for it; %s",
			host, call, where)
	}
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized:
		return protocol.Errorf(protocol.CodeGitHubBadCredentials,
			"GitHub at %s rejected the token (401%s): it is wrong, expired or revoked; put a valid token in the secret",
			host, msg)
	case code == http.StatusTooManyRequests || (code == http.StatusForbidden && resp.Header.Get("X-RateLimit-Remaining") == "0"):
		until := time.Time{}
		if d, ok := retryAfter(resp.Header); ok {
			until = time.Now().Add(d)
		} else if t, ok := rateReset(resp.Header); ok {
			until = t
		}
		return ss.rateLimited(resp, "its rate limit", until)
	case code == http.StatusForbidden:
		need := ""
		if s := strings.TrimSpace(resp.Header.Get(headerAcceptedScopes)); s != "" {
			need = fmt.Sprintf("; the call accepts the scopes: %s", truncate(s, 256))
		}
		return protocol.Errorf(protocol.CodeGitHubForbidden,
			"GitHub at %s refused %s (403%s)%s; give the token the permission, or check the organization's or enterprise's policies (IP allow list, token policy)",
			host, call, msg, need)
	case code == http.StatusNotFound, code == http.StatusNotAcceptable, code == http.StatusGone, code == http.StatusMethodNotAllowed:
		return protocol.Errorf(protocol.CodeGitHubNotFound,
			"GitHub at %s answered %d to %s; %s", host, code, call, ss.probe(ctx))
	case code >= 500:
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"GitHub at %s answered %d %s to %s%s: it, or a proxy in between, is failing; try again later",
			host, code, http.StatusText(code), call, ss.viaProxy())
	default:
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"GitHub at %s answered %d %s to %s%s", host, code, http.StatusText(code), call, msg)
	}
}

// rateLimited is github_rate_limited, with the reset time when known.
func (ss *session) rateLimited(resp *http.Response, which string, until time.Time) error {
	call := callText(resp)
	when := "try again later"
	if !until.IsZero() {
		when = "it resets at " + until.UTC().Format(time.RFC3339) + "; try again after that"
	}
	waited := ""
	if ss.retried {
		waited = " (the agent waited once, as GitHub asked, and was limited again)"
	}
	return protocol.Errorf(protocol.CodeGitHubRateLimited,
		"GitHub at %s refused %s: the token has exceeded %s%s; %s",
		ss.ep.Instance, call, which, waited, when)
}

// callText names the request of an answer: "GET /api/v3/user".
func callText(resp *http.Response) string {
	if resp == nil || resp.Request == nil || resp.Request.URL == nil {
		return "the call"
	}
	return resp.Request.Method + " " + truncate(resp.Request.URL.Path, 128)
}

// ghMessage is GitHub's message for a person, quoted briefly.
func ghMessage(m string) string {
	m = strings.TrimSpace(strings.ToValidUTF8(m, "?"))
	m = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, m)
	if m == "" {
		return ""
	}
	return " " + truncate(m, 200)
}

// viaProxy says how GitHub was reached, for messages.
func (ss *session) viaProxy() string {
	u, err := url.Parse(ss.ep.APIURL)
	if err != nil {
		return ""
	}
	if p := ss.s.proxyFor(u); p != "" {
		return fmt.Sprintf(" (through the proxy %s, from %s)", p, ss.s.proxySetting)
	}
	return " (connecting directly, no proxy)"
}

// classifyNet maps a failure to reach GitHub.
func (ss *session) classifyNet(err error) error {
	host, port := ss.ep.Origin.Host, ss.ep.Origin.Port
	via := ss.viaProxy()
	var (
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
		rhe tls.RecordHeaderError
		ae  tls.AlertError
		dns *net.DNSError
		op  *net.OpError
		ne  net.Error
	)
	switch {
	case errors.As(err, &uae):
		issuer := "an unknown issuer"
		if uae.Cert != nil {
			issuer = fmt.Sprintf("%q", truncate(uae.Cert.Issuer.String(), 200))
		}
		fix := "add that CA's certificate (PEM) to github.ca_file in the agent config"
		if ss.s.caFile != "" {
			fix = fmt.Sprintf("github.ca_file (%s) does not hold it: add that CA's certificate (PEM) to it", ss.s.caFile)
		}
		return protocol.Errorf(protocol.CodeGitHubTLS,
			"the TLS certificate of %s is issued by %s, which this agent does not trust%s; %s (behind a TLS-inspecting proxy, that is the proxy's CA)",
			ss.ep.Origin.HostPort(), issuer, via, fix)
	case errors.As(err, &hne):
		names := "no DNS name"
		if hne.Certificate != nil && len(hne.Certificate.DNSNames) > 0 {
			names = truncate(strings.Join(hne.Certificate.DNSNames, ", "), 200)
		}
		return protocol.Errorf(protocol.CodeGitHubTLS,
			"the TLS certificate of %s is not valid for %s (it names %s)%s; use the host name the certificate names in the GitHub URL, or fix the certificate",
			ss.ep.Origin.HostPort(), host, names, via)
	case errors.As(err, &cie):
		return protocol.Errorf(protocol.CodeGitHubTLS,
			"the TLS certificate of %s is not valid: %s%s; renew or fix the server's certificate", ss.ep.Origin.HostPort(), truncate(cie.Error(), 200), via)
	case errors.As(err, &rhe), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return protocol.Errorf(protocol.CodeGitHubTLS,
			"%s does not speak TLS on port %s%s; check the scheme and port of the GitHub URL", host, port, via)
	case errors.As(err, &ae):
		return protocol.Errorf(protocol.CodeGitHubTLS,
			"the TLS handshake with %s failed: %v%s; check the server's TLS settings", ss.ep.Origin.HostPort(), ae, via)
	case errors.As(err, &op) && op.Op == "proxyconnect":
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"cannot reach the proxy%s: %s; check the proxy setting", via, truncate(op.Err.Error(), 200))
	case errors.As(err, &dns):
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"cannot resolve %s (DNS%s)%s; check the GitHub URL and this machine's DNS", host, dnsText(dns), via)
	case errors.Is(err, syscall.ECONNREFUSED):
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"%s refused the connection on port %s%s; check the GitHub URL's port and that GitHub is up", host, port, via)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"%s closed the connection%s; a firewall or proxy may be cutting it, or the server is failing", ss.ep.Origin.HostPort(), via)
	case errors.As(err, &ne) && ne.Timeout():
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"%s did not answer within %s (github.timeout)%s; check that this machine can reach it (firewall, proxy)", ss.ep.Origin.HostPort(), ss.s.timeout, via)
	case strings.Contains(err.Error(), "proxy"):
		return protocol.Errorf(protocol.CodeGitHubUnreachable,
			"cannot reach %s%s: %s; check the proxy setting", ss.ep.Origin.HostPort(), via, truncate(errText(err), 300))
	}
	return protocol.Errorf(protocol.CodeGitHubUnreachable, "cannot reach %s%s: %s", ss.ep.Origin.HostPort(), via, truncate(errText(err), 300))
}

func dnsText(e *net.DNSError) string {
	switch {
	case e.IsNotFound:
		return ": no such host"
	case e.IsTimeout:
		return ": timed out"
	}
	return ""
}

// errText is an error's text without the URL that url.Error repeats.
func errText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// probe tells a wrong host from a wrong path after a "not found": it asks
// the instance, without credentials, whether a GitHub API answers where the
// connection's kind says, and says what it found.
func (ss *session) probe(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	defer func() { ss.timings["probe"] += time.Since(start).Milliseconds() }()
	root := ss.ep.Origin.String()
	switch {
	case ss.ep.Kind == protocol.GitHubEnterpriseServer:
		status, version, ok := ss.probeMeta(ctx, root+"/api/v3/meta")
		if ok {
			v := ""
			if version != "" {
				v = " (GitHub Enterprise Server " + version + ")"
			}
			return fmt.Sprintf("%s/api/v3 answered as a GitHub API%s, so the host is right: the account or resource was not found there", root, v)
		}
		return fmt.Sprintf("%s/api/v3 did not answer as a GitHub API (%s): %s is not a GitHub Enterprise Server, or its API is elsewhere; check the GitHub URL", root, status, ss.ep.Origin.HostPort())
	case ss.ep.APIURL == root+"/":
		if _, _, ok := ss.probeMeta(ctx, root+"/meta"); ok {
			return fmt.Sprintf("%s answered as a GitHub API, so the host is right: the account or resource was not found there", root)
		}
		if _, version, ok := ss.probeMeta(ctx, root+"/api/v3/meta"); ok {
			v := ""
			if version != "" {
				v = " " + version
			}
			return fmt.Sprintf("%s/api/v3 answers: this is a GitHub Enterprise Server%s; use github_kind %q", root, v, protocol.GitHubEnterpriseServer)
		}
		return fmt.Sprintf("no GitHub API answered at %s or %s/api/v3; check the GitHub URL", root, root)
	}
	return "check the GitHub URL"
}

// probeMeta GETs a /meta URL without credentials. ok is whether it answered
// 200 with GitHub's JSON; status says what it answered otherwise.
func (ss *session) probeMeta(ctx context.Context, u string) (status, version string, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "no request", "", false
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("User-Agent", ss.s.userAgent)
	resp, err := ss.s.newHTTPClient(ss.ep, ss.log).Do(req)
	if err != nil {
		return "no answer", "", false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("HTTP %d", resp.StatusCode), "", false
	}
	var meta struct {
		InstalledVersion string `json:"installed_version"`
		VPA              *bool  `json:"verifiable_password_authentication"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta); err != nil || meta.VPA == nil {
		return "HTTP 200 but not GitHub's JSON", "", false
	}
	v := resp.Header.Get(headerGHESVersion)
	if !validVersion(v) {
		v = ""
	}
	if v == "" && validVersion(meta.InstalledVersion) {
		v = meta.InstalledVersion
	}
	return "HTTP 200", v, true
}
