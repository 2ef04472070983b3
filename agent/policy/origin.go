package policy

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Origin is the part of a URL that decides where a request goes: scheme,
// host and port, normalised so that two spellings of the same place compare
// equal ("HTTPS://Git.Example.com:443/api/v3" and "https://git.example.com").
// The agent compares origins, never URL strings. Build one with
// [ParseOrigin]; comparing with == is then correct.
type Origin struct {
	// Scheme is "https" or "http".
	Scheme string
	// Host is the host name in lower case without a trailing dot, or an IP
	// address (IPv6 without brackets). International names are compared as
	// written, not converted to punycode.
	Host string
	// Port is the port in decimal without leading zeros, the scheme's
	// default (443, 80) when the URL has none.
	Port string
}

// Errors of [ParseOrigin]. They never quote the URL, which could hold user
// info.
var (
	ErrNotURL      = errors.New("is not a URL")
	ErrNotHTTP     = errors.New("is not an http(s) URL")
	ErrUserInfo    = errors.New("holds user info (user@ or user:password@); credentials come from the secret reference")
	ErrNoHost      = errors.New("has no host")
	ErrHostPercent = errors.New("has a percent sign in its host (an escaped %25, or an IPv6 zone); write the host name as it is")
	ErrInvalidPort = errors.New("has a port that is not a number from 1 to 65535")
)

// ParseOrigin parses an absolute http or https URL and returns its origin.
// The path, query and fragment are ignored. A URL with user info is refused
// (even an empty "@"), as is any other scheme.
func ParseOrigin(rawURL string) (Origin, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		if strings.Contains(rawURL, "@") {
			return Origin{}, ErrUserInfo
		}
		return Origin{}, ErrNotURL
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return Origin{}, ErrNotHTTP
	}
	if u.User != nil {
		return Origin{}, ErrUserInfo
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if u.Opaque != "" || host == "" {
		return Origin{}, ErrNoHost
	}
	if strings.Contains(host, "%") {
		// "%2525" is host "%25", whose String reads back as "%": no
		// stable origin to compare. No host a rule names needs one.
		return Origin{}, ErrHostPercent
	}
	port := u.Port()
	switch {
	case port == "" && scheme == "https":
		port = "443"
	case port == "":
		port = "80"
	default:
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return Origin{}, ErrInvalidPort
		}
		port = strconv.Itoa(n)
	}
	return Origin{Scheme: scheme, Host: host, Port: port}, nil
}

// HostPort returns "host:port", with brackets around an IPv6 address.
func (o Origin) HostPort() string { return net.JoinHostPort(o.Host, o.Port) }

// String returns "scheme://host[:port]", leaving out the scheme's default
// port.
func (o Origin) String() string {
	if (o.Scheme == "https" && o.Port == "443") || (o.Scheme == "http" && o.Port == "80") {
		if strings.Contains(o.Host, ":") {
			return o.Scheme + "://[" + o.Host + "]"
		}
		return o.Scheme + "://" + o.Host
	}
	return o.Scheme + "://" + o.HostPort()
}

// parseHostPort parses an allow_http_hosts entry: "host" or "host:port",
// port 80 by default.
func parseHostPort(s string) (string, error) {
	if s == "" {
		return "", errors.New("is empty")
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@") {
		return "", errors.New("must be host[:port], without a scheme, path or user info")
	}
	o, err := ParseOrigin("http://" + s)
	if err != nil {
		return "", err
	}
	return o.HostPort(), nil
}

// safeURL returns s for a message: user info masked, at most 256 bytes.
func safeURL(s string) string {
	if at := strings.LastIndex(s, "@"); at >= 0 {
		start := 0
		if i := strings.Index(s, "://"); i >= 0 && i < at {
			start = i + 3
		}
		s = s[:start] + "[REDACTED]" + s[at:]
	}
	return truncate(s, 256)
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
