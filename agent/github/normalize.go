package github

import (
	"fmt"
	"net"
	"net/url"
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

// maxURL bounds a GitHub URL, as protocol.CheckGitHubURL does.
const maxURL = 2048

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
	if kind != protocol.GitHubEnterpriseServer && kind != protocol.GitHubCloud {
		return Endpoint{}, protocol.Errorf(protocol.CodeInvalidParams,
			"params.github_kind must be %q or %q", protocol.GitHubEnterpriseServer, protocol.GitHubCloud)
	}
	bad := func(format string, args ...any) (Endpoint, error) {
		return Endpoint{}, protocol.Errorf(protocol.CodeInvalidParams, "params.github_url %s", fmt.Sprintf(format, args...))
	}
	if raw == "" {
		return bad("is required")
	}
	if len(raw) > maxURL {
		return bad("is %d bytes; at most %d", len(raw), maxURL)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\\' }) {
		return bad("holds a space, a control character or a backslash")
	}
	if strings.Contains(raw, "@") {
		// Before parsing, so that no spelling of user info slips through.
		return bad("must not hold user info (user@ or user:password@); credentials come from the secret reference")
	}
	if strings.ContainsAny(raw, "?#") {
		return bad("must not hold a query or fragment; give the instance's URL, such as https://git.example.com")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("is not a URL such as https://git.example.com")
	}
	o, err := policy.ParseOrigin(raw)
	if err != nil {
		return bad("%v", err)
	}
	if u.Opaque != "" || u.Host == "" {
		return bad("has no host")
	}
	if err := checkHost(o.Host); err != nil {
		return bad("%v", err)
	}
	if o.Scheme == "http" && (allowHTTP == nil || !allowHTTP(o.HostPort())) {
		return Endpoint{}, protocol.Errorf(protocol.CodeHostNotAllowed,
			"this agent does not call GitHub at %s over plain http; use https, or add %s to policy.allow_http_hosts in the agent config",
			o.HostPort(), o.HostPort())
	}
	path := u.EscapedPath()
	root := path == "" || path == "/"
	ep := Endpoint{Kind: kind, Origin: o, Instance: o.String()}

	cloudHost, tenant, isCloud := cloudHost(o.Host)
	switch kind {
	case protocol.GitHubEnterpriseServer:
		if isCloud {
			return bad("%q is GitHub's cloud, not a GitHub Enterprise Server; use github_kind %q", o.String(), protocol.GitHubCloud)
		}
		if !root && path != "/api/v3" && path != "/api/v3/" {
			return bad("has the path %q; give the instance's URL (%s) or its API URL (%s/api/v3)", truncate(path, 64), o.String(), o.String())
		}
		ep.APIURL = o.String() + "/api/v3/"
	case protocol.GitHubCloud:
		if !root {
			if path == "/api/v3" || path == "/api/v3/" {
				return bad("ends in /api/v3, which is a GitHub Enterprise Server's API; use github_kind %q, or give https://github.com", protocol.GitHubEnterpriseServer)
			}
			return bad("has the path %q; give https://github.com or https://NAME.ghe.com, not a page in it", truncate(path, 64))
		}
		if !isCloud {
			if tenant == "" && (o.Host == "ghe.com" || strings.HasSuffix(o.Host, ".ghe.com")) {
				return bad("%q is not a GHE.com address; give https://NAME.ghe.com", o.String())
			}
			ep.APIURL = o.String() + "/"
			break
		}
		if o.Scheme != "https" || o.Port != "443" {
			return bad("%q: GitHub's cloud is served over https on port 443 only; give %s", o.String(), "https://"+cloudHost)
		}
		if tenant == "" {
			ep.APIURL, ep.Instance = "https://api.github.com/", "https://github.com"
			ep.Origin = policy.Origin{Scheme: "https", Host: "api.github.com", Port: "443"}
		} else {
			ep.APIURL, ep.Instance = "https://api."+tenant+".ghe.com/", "https://"+tenant+".ghe.com"
			ep.Origin = policy.Origin{Scheme: "https", Host: "api." + tenant + ".ghe.com", Port: "443"}
		}
	}
	return ep, nil
}

// cloudHost reports whether host is one of GitHub's cloud hosts:
// github.com, www.github.com or api.github.com (tenant empty), or NAME.ghe.com
// or api.NAME.ghe.com (tenant NAME). cloud is the host to name in messages.
func cloudHost(host string) (cloud, tenant string, ok bool) {
	switch host {
	case "github.com", "www.github.com", "api.github.com":
		return "github.com", "", true
	}
	name, found := strings.CutSuffix(host, ".ghe.com")
	if !found {
		return "", "", false
	}
	name = strings.TrimPrefix(name, "api.")
	if name == "" || name == "api" || strings.Contains(name, ".") {
		return "", "", false
	}
	return name + ".ghe.com", name, true
}

// checkHost accepts an IP address or an ASCII DNS name.
func checkHost(host string) error {
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > 253 {
		return fmt.Errorf("has a host name longer than 253 bytes")
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("has a host name with an empty label or one longer than 63 bytes")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
			case c == '-' && i > 0 && i < len(l)-1:
			case c >= 0x80:
				return fmt.Errorf("has a host name that is not ASCII; give an international name in its ASCII form (xn--...)")
			default:
				return fmt.Errorf("has a host name with the character %q; a host is an IP address or a DNS name", string(c))
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		// "127.1", "10.0.0.300": numbers that are not an IPv4 address could
		// be read as one by some resolvers.
		return fmt.Errorf("has a host that looks like an IP address but is not one")
	}
	return nil
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
