package protocol

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Valid reports whether k is one of the GitHub kinds.
func (k GitHubKind) Valid() bool { return k == GitHubEnterpriseServer || k == GitHubCloud }

// NormalizeGitHubURL checks a GitHub URL as users type it for kind and
// returns its canonical form, scheme://host[:port]: the scheme and host in
// lower case, one trailing dot of the host dropped, no default port, no
// path. It follows the agent's rules (agent/github.Normalize, which derives
// the API base URL from the canonical form), so that what the control plane
// stores and sends is what the agent calls; whether plain http may be used
// for a host is the agent's policy, not checked here.
//
//   - The URL is absolute http or https; no user info (not even an empty
//     "@"), no query or fragment (not even an empty "?" or "#"), no spaces,
//     control characters or backslashes. The host is an IP address or an
//     ASCII DNS name (letters, digits, '-' and '_'; xn-- for international
//     names).
//   - ghes: the instance URL with or without a trailing slash or "/api/v3"
//     ("https://Git.Example.com/api/v3/" → "https://git.example.com"); any
//     other path is refused, and so are GitHub's own hosts (they are
//     github_cloud).
//   - github_cloud: github.com (also given as www.github.com or
//     api.github.com) → "https://github.com"; GitHub Enterprise Cloud with
//     data residency NAME.ghe.com (also api.NAME.ghe.com) →
//     "https://NAME.ghe.com"; both over https on port 443 only. Any other
//     host is a GitHub-compatible API served at its root (a gateway, a test
//     server), kept as its origin. No path.
//
// Errors name the field github_url and say what to type instead; they never
// quote the URL (it could hold user info).
func NormalizeGitHubURL(kind GitHubKind, raw string) (string, error) {
	const field = "github_url"
	if !kind.Valid() {
		if kind == "" {
			return "", fmt.Errorf("kind is required: %q or %q", GitHubEnterpriseServer, GitHubCloud)
		}
		return "", fmt.Errorf("kind %q is not %q or %q", truncate(string(kind), 32), GitHubEnterpriseServer, GitHubCloud)
	}
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf(field+" "+format, args...)
	}
	switch {
	case raw == "":
		return bad("is required")
	case len(raw) > 2048:
		return bad("is %d bytes; at most 2048", len(raw))
	case strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\\' }):
		return bad("holds a space, a control character or a backslash")
	case strings.Contains(raw, "@"):
		return bad("must not hold user info (user@ or user:password@); credentials come from the secret reference")
	case strings.ContainsAny(raw, "?#"):
		return bad("must not hold a query or fragment; give the instance's URL, such as https://git.example.com")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("is not a URL such as https://git.example.com")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return bad("must start with https://")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if u.Opaque != "" || host == "" {
		return bad("has no host")
	}
	if err := checkHost(host); err != nil {
		return bad("%v", err)
	}
	port := u.Port()
	if port != "" {
		n, ok := parsePort(port)
		if !ok {
			return bad("has a port that is not a number from 1 to 65535")
		}
		port = fmt.Sprint(n)
		if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
			port = ""
		}
	}
	origin := scheme + "://" + host
	if strings.Contains(host, ":") {
		origin = scheme + "://[" + host + "]"
	}
	if port != "" {
		origin = scheme + "://" + net.JoinHostPort(host, port)
	}
	path := u.EscapedPath()
	root := path == "" || path == "/"
	apiPath := path == "/api/v3" || path == "/api/v3/"
	cloud, isCloud := cloudHost(host)

	switch kind {
	case GitHubEnterpriseServer:
		if isCloud {
			return bad("%q is GitHub's cloud, not a GitHub Enterprise Server; use kind %q", origin, GitHubCloud)
		}
		if !root && !apiPath {
			return bad("has the path %q; give the instance's URL (%s) or its API URL (%s/api/v3)", truncate(path, 64), origin, origin)
		}
		return origin, nil
	default: // GitHubCloud
		if apiPath {
			return bad("ends in /api/v3, which is a GitHub Enterprise Server's API; use kind %q, or give https://github.com", GitHubEnterpriseServer)
		}
		if !root {
			return bad("has the path %q; give https://github.com or https://NAME.ghe.com, not a page in it", truncate(path, 64))
		}
		if !isCloud {
			if host == "ghe.com" || strings.HasSuffix(host, ".ghe.com") {
				return bad("%q is not a GHE.com address; give https://NAME.ghe.com", origin)
			}
			return origin, nil // a GitHub-compatible API at its root
		}
		if scheme != "https" || port != "" {
			return bad("%q: GitHub's cloud is served over https on port 443 only; give https://%s", origin, cloud)
		}
		return "https://" + cloud, nil
	}
}

// cloudHost reports whether host is one of GitHub's cloud hosts, and its
// canonical web host: github.com (for github.com, www.github.com and
// api.github.com) or NAME.ghe.com (for NAME.ghe.com and api.NAME.ghe.com).
func cloudHost(host string) (string, bool) {
	switch host {
	case "github.com", "www.github.com", "api.github.com":
		return "github.com", true
	}
	name, ok := strings.CutSuffix(host, ".ghe.com")
	if !ok {
		return "", false
	}
	name = strings.TrimPrefix(name, "api.")
	if name == "" || name == "api" || strings.Contains(name, ".") {
		return "", false
	}
	return name + ".ghe.com", true
}

// checkHost accepts an IP address (IPv6 without a zone) or an ASCII DNS
// name.
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

// parsePort reads a decimal port from 1 to 65535; leading zeros are allowed.
func parsePort(s string) (int, bool) {
	s = strings.TrimLeft(s, "0")
	if s == "" || len(s) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 1 && n <= 65535
}
