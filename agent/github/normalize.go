package github

import (
	"strings"

	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/protocol"
)

// Endpoint is where a connection's API calls go, after [Normalize].
type Endpoint struct {
	// Kind is the connection's kind.
	Kind protocol.GitHubKind
	// APIURL is the REST API's base URL, always ending in "/":
	// "https://git.example.com/api/v3/", "https://api.github.com/",
	// "https://api.octo.ghe.com/".
	APIURL string
	// Origin is APIURL's scheme, host and port: what the agent's policy
	// compares, and the only origin the token is ever sent to.
	Origin policy.Origin
	// Instance is the instance as a person knows it, for messages:
	// "https://git.example.com", "https://github.com".
	Instance string
}

// Normalize turns a connection's GitHub URL, as a person typed it, into the
// API endpoint the agent calls. It refuses what it cannot call safely, with
// a *protocol.Error naming the fix: invalid_params for a malformed URL or
// one that does not fit kind, host_not_allowed for plain http to a host for
// which allowHTTP (given "host:port"; nil allows none) says no.
//
// The rules:
//
//   - the URL is absolute http or https; no user info (not even an empty
//     "@"), no query or fragment (not even an empty "?" or "#"), no spaces,
//     control characters or backslashes;
//   - the scheme and host are compared in lower case; one trailing dot of the
//     host is dropped ("git.example.com." is the same DNS name); a port
//     equal to the scheme's default is dropped and leading zeros are
//     ignored;
//   - a host is an IP address or an ASCII DNS name (letters, digits, "-" and
//     "_"; international names in their xn-- form, so that no two spellings
//     of one name look alike);
//   - http only where allowHTTP allows that host and port (the policy's
//     allow_http_hosts);
//   - ghes: the instance URL with or without a trailing slash or "/api/v3"
//     (any other path is refused); the API is at "/api/v3/" of the
//     instance. GitHub's own hosts are refused for ghes, naming
//     github_cloud;
//   - github_cloud: "https://github.com" (or "https://api.github.com") has its
//     API at "https://api.github.com/"; "https://NAME.ghe.com" (GitHub
//     Enterprise Cloud with data residency, or "https://api.NAME.ghe.com")
//     at "https://api.NAME.ghe.com/"; both over https on port 443 only. Any
//     other host is taken as a GitHub-compatible API served at its root (a
//     test server, an API gateway): the policy must list that exact origin.
//     No path is allowed.
//
// Normalize is idempotent: normalising APIURL again with the same kind
// gives the same Endpoint.
func Normalize(kind protocol.GitHubKind, raw string, allowHTTP func(hostPort string) bool) (Endpoint, error) {
	if !kind.Valid() {
		return Endpoint{}, protocol.Errorf(protocol.CodeInvalidParams,
			"params.github_kind must be %q or %q", protocol.GitHubEnterpriseServer, protocol.GitHubCloud)
	}
	// The syntax and kind rules are the control plane's too: one function.
	canon, err := protocol.NormalizeGitHubURL(kind, raw)
	if err != nil {
		return Endpoint{}, protocol.Errorf(protocol.CodeInvalidParams, "params.%v", err)
	}
	o, err := policy.ParseOrigin(canon)
	if err != nil {
		return Endpoint{}, protocol.Errorf(protocol.CodeInvalidParams, "params.github_url %v", err)
	}
	if o.Scheme == "http" && (allowHTTP == nil || !allowHTTP(o.HostPort())) {
		return Endpoint{}, protocol.Errorf(protocol.CodeHostNotAllowed,
			"this agent does not call GitHub at %s over plain http; use https, or add %s to policy.allow_http_hosts in the agent config",
			o.HostPort(), o.HostPort())
	}
	ep := Endpoint{Kind: kind, Origin: o, Instance: canon, APIURL: canon + "/"}
	switch {
	case kind == protocol.GitHubEnterpriseServer:
		ep.APIURL = canon + "/api/v3/"
	case canon == "https://github.com":
		ep.APIURL = "https://api.github.com/"
		ep.Origin = policy.Origin{Scheme: "https", Host: "api.github.com", Port: "443"}
	case strings.HasSuffix(canon, ".ghe.com"):
		// NormalizeGitHubURL gives https://NAME.ghe.com for GHE.com tenants.
		api := "api." + strings.TrimPrefix(canon, "https://")
		ep.APIURL = "https://" + api + "/"
		ep.Origin = policy.Origin{Scheme: "https", Host: api, Port: "443"}
	}
	return ep, nil
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "..."
}

// CheckOrganization checks an organization's name before it goes into a
// request path: 1 to 100 letters, digits, '-' or '_' (GitHub's logins are
// letters, digits and single hyphens; GitHub Enterprise Server may keep
// underscores from its identity provider). Anything else could change the
// path, so it is refused as invalid_params.
func CheckOrganization(name string) error {
	ok := name != "" && len(name) <= 100 && !strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	})
	if !ok {
		return protocol.Errorf(protocol.CodeInvalidParams,
			"params.organization %q is not an organization name (letters, digits, '-' and '_', at most 100)", truncate(name, 100))
	}
	return nil
}
