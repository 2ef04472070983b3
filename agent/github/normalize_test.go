package github_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/protocol"
)

const (
	ghes  = protocol.GitHubEnterpriseServer
	cloud = protocol.GitHubCloud
)

// allowLocalHTTP allows plain http to localhost:8080 only.
func allowLocalHTTP(hp string) bool { return hp == "localhost:8080" }

func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		kind     protocol.GitHubKind
		raw      string
		api      string // want APIURL; empty: want an error
		instance string
		code     protocol.ErrorCode
		msg      string
	}{
		// GHES: the spellings of one instance.
		{name: "ghes plain", kind: ghes, raw: "https://git.example.com", api: "https://git.example.com/api/v3/", instance: "https://git.example.com"},
		{name: "ghes trailing slash", kind: ghes, raw: "https://git.example.com/", api: "https://git.example.com/api/v3/"},
		{name: "ghes api path", kind: ghes, raw: "https://git.example.com/api/v3", api: "https://git.example.com/api/v3/"},
		{name: "ghes api path slash", kind: ghes, raw: "https://git.example.com/api/v3/", api: "https://git.example.com/api/v3/"},
		{name: "ghes case", kind: ghes, raw: "HTTPS://Git.Example.COM/api/v3", api: "https://git.example.com/api/v3/"},
		{name: "ghes default port dropped", kind: ghes, raw: "https://git.example.com:443", api: "https://git.example.com/api/v3/"},
		{name: "ghes leading zeros in port", kind: ghes, raw: "https://git.example.com:0443/", api: "https://git.example.com/api/v3/"},
		{name: "ghes other port kept", kind: ghes, raw: "https://git.example.com:8443/api/v3", api: "https://git.example.com:8443/api/v3/", instance: "https://git.example.com:8443"},
		{name: "ghes trailing dot dropped", kind: ghes, raw: "https://git.example.com./", api: "https://git.example.com/api/v3/"},
		{name: "ghes ip", kind: ghes, raw: "https://10.0.0.5:8443", api: "https://10.0.0.5:8443/api/v3/"},
		{name: "ghes ipv6", kind: ghes, raw: "https://[2001:DB8::1]:8443/", api: "https://[2001:db8::1]:8443/api/v3/"},
		{name: "ghes host starting with api.", kind: ghes, raw: "https://api.git.example.com", api: "https://api.git.example.com/api/v3/"},
		{name: "ghes punycode", kind: ghes, raw: "https://xn--gt-cia.example.com", api: "https://xn--gt-cia.example.com/api/v3/"},
		{name: "ghes allowed http", kind: ghes, raw: "http://LOCALHOST:8080/api/v3", api: "http://localhost:8080/api/v3/"},
		{name: "ghes lookalike stays itself", kind: ghes, raw: "https://github.com.evil.com", api: "https://github.com.evil.com/api/v3/"},

		// github.com and GHE.com.
		{name: "cloud github.com", kind: cloud, raw: "https://github.com", api: "https://api.github.com/", instance: "https://github.com"},
		{name: "cloud github.com slash", kind: cloud, raw: "https://github.com/", api: "https://api.github.com/"},
		{name: "cloud case and dot", kind: cloud, raw: "HTTPS://GitHub.COM./", api: "https://api.github.com/"},
		{name: "cloud explicit 443", kind: cloud, raw: "https://github.com:443", api: "https://api.github.com/"},
		{name: "cloud api host", kind: cloud, raw: "https://api.github.com/", api: "https://api.github.com/"},
		{name: "cloud www", kind: cloud, raw: "https://www.github.com", api: "https://api.github.com/"},
		{name: "ghe.com tenant", kind: cloud, raw: "https://Octo.GHE.com", api: "https://api.octo.ghe.com/", instance: "https://octo.ghe.com"},
		{name: "ghe.com api host", kind: cloud, raw: "https://api.octo.ghe.com/", api: "https://api.octo.ghe.com/"},
		{name: "cloud other host at its root", kind: cloud, raw: "https://127.0.0.1:8443", api: "https://127.0.0.1:8443/"},
		{name: "cloud lookalike is not github.com", kind: cloud, raw: "https://github.com.evil.com", api: "https://github.com.evil.com/"},
		{name: "cloud lookalike suffix", kind: cloud, raw: "https://evilgithub.com", api: "https://evilgithub.com/"},

		// Refused.
		{name: "user info", kind: ghes, raw: "https://bot:canary-7f3c9e1d-SECRET@git.example.com", code: protocol.CodeInvalidParams, msg: "user info"},
		{name: "empty user info", kind: ghes, raw: "https://@git.example.com", code: protocol.CodeInvalidParams, msg: "user info"},
		{name: "user info lookalike", kind: cloud, raw: "https://github.com@evil.com", code: protocol.CodeInvalidParams, msg: "user info"},
		{name: "backslash", kind: cloud, raw: `https://evil.com\@github.com`, code: protocol.CodeInvalidParams, msg: "backslash"},
		{name: "query", kind: ghes, raw: "https://git.example.com/?x=1", code: protocol.CodeInvalidParams, msg: "query"},
		{name: "empty query", kind: ghes, raw: "https://git.example.com/?", code: protocol.CodeInvalidParams, msg: "query"},
		{name: "fragment", kind: ghes, raw: "https://git.example.com/#x", code: protocol.CodeInvalidParams, msg: "fragment"},
		{name: "space", kind: ghes, raw: "https://git.example.com /", code: protocol.CodeInvalidParams},
		{name: "control", kind: ghes, raw: "https://git.example.com\n", code: protocol.CodeInvalidParams},
		{name: "ftp", kind: ghes, raw: "ftp://git.example.com", code: protocol.CodeInvalidParams},
		{name: "no scheme", kind: ghes, raw: "git.example.com", code: protocol.CodeInvalidParams},
		{name: "empty", kind: ghes, raw: "", code: protocol.CodeInvalidParams, msg: "required"},
		{name: "http not allowed", kind: ghes, raw: "http://git.example.com", code: protocol.CodeHostNotAllowed, msg: "add git.example.com:80 to policy.allow_http_hosts"},
		{name: "http on another port", kind: ghes, raw: "http://localhost:8081", code: protocol.CodeHostNotAllowed, msg: "localhost:8081"},
		{name: "port zero", kind: ghes, raw: "https://git.example.com:0", code: protocol.CodeInvalidParams, msg: "port"},
		{name: "port too big", kind: ghes, raw: "https://git.example.com:65536", code: protocol.CodeInvalidParams, msg: "port"},
		{name: "two trailing dots", kind: ghes, raw: "https://git.example.com../", code: protocol.CodeInvalidParams, msg: "empty label"},
		{name: "empty label", kind: ghes, raw: "https://git..example.com", code: protocol.CodeInvalidParams, msg: "empty label"},
		{name: "non-ascii host", kind: ghes, raw: "https://gït.example.com", code: protocol.CodeInvalidParams, msg: "xn--"},
		{name: "numeric non-ip", kind: ghes, raw: "https://127.1", code: protocol.CodeInvalidParams, msg: "IP address"},
		{name: "ipv6 zone", kind: ghes, raw: "https://[fe80::1%25eth0]/", code: protocol.CodeInvalidParams},
		{name: "ghes page path", kind: ghes, raw: "https://git.example.com/orgs/platform", code: protocol.CodeInvalidParams, msg: "path"},
		{name: "ghes encoded api path", kind: ghes, raw: "https://git.example.com/api%2Fv3", code: protocol.CodeInvalidParams, msg: "path"},
		{name: "ghes double slash", kind: ghes, raw: "https://git.example.com//", code: protocol.CodeInvalidParams, msg: "path"},
		{name: "ghes pointing at github.com", kind: ghes, raw: "https://github.com", code: protocol.CodeInvalidParams, msg: "github_cloud"},
		{name: "ghes pointing at ghe.com", kind: ghes, raw: "https://octo.ghe.com", code: protocol.CodeInvalidParams, msg: "github_cloud"},
		{name: "cloud with api/v3", kind: cloud, raw: "https://git.example.com/api/v3", code: protocol.CodeInvalidParams, msg: "ghes"},
		{name: "cloud with a page", kind: cloud, raw: "https://github.com/octo-org", code: protocol.CodeInvalidParams, msg: "path"},
		{name: "cloud on another port", kind: cloud, raw: "https://github.com:8443", code: protocol.CodeInvalidParams, msg: "port 443"},
		{name: "ghe.com bare", kind: cloud, raw: "https://ghe.com", code: protocol.CodeInvalidParams, msg: "NAME.ghe.com"},
		{name: "ghe.com nested", kind: cloud, raw: "https://a.b.ghe.com", code: protocol.CodeInvalidParams, msg: "NAME.ghe.com"},
		{name: "unknown kind", kind: "gitlab", raw: "https://git.example.com", code: protocol.CodeInvalidParams, msg: "github_kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ep, err := github.Normalize(tt.kind, tt.raw, allowLocalHTTP)
			if tt.api == "" {
				var pe *protocol.Error
				if !errors.As(err, &pe) {
					t.Fatalf("Normalize(%s, %q) = %+v, %v; want a %s error", tt.kind, tt.raw, ep, err, tt.code)
				}
				if pe.Code != tt.code || !strings.Contains(pe.Message, tt.msg) {
					t.Errorf("error = %v; want code %s and a message with %q", pe, tt.code, tt.msg)
				}
				if strings.Contains(pe.Message, "canary-7f3c9e1d-SECRET") {
					t.Errorf("the message repeats the user info: %s", pe.Message)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%s, %q): %v", tt.kind, tt.raw, err)
			}
			if ep.APIURL != tt.api {
				t.Errorf("APIURL = %q, want %q", ep.APIURL, tt.api)
			}
			if tt.instance != "" && ep.Instance != tt.instance {
				t.Errorf("Instance = %q, want %q", ep.Instance, tt.instance)
			}
			checkEndpoint(t, tt.kind, ep, allowLocalHTTP)
		})
	}
}

// checkEndpoint asserts the properties every normalised endpoint has.
func checkEndpoint(t *testing.T, kind protocol.GitHubKind, ep github.Endpoint, allowHTTP func(string) bool) {
	t.Helper()
	u, err := url.Parse(ep.APIURL)
	if err != nil {
		t.Fatalf("APIURL %q does not parse: %v", ep.APIURL, err)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(ep.APIURL, "?#@") {
		t.Fatalf("APIURL %q holds user info, a query or a fragment", ep.APIURL)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP(ep.Origin.HostPort()) {
			t.Fatalf("APIURL %q is plain http to a host that is not allowed", ep.APIURL)
		}
	default:
		t.Fatalf("APIURL %q is not https", ep.APIURL)
	}
	if !strings.HasSuffix(ep.APIURL, "/") {
		t.Fatalf("APIURL %q does not end in /", ep.APIURL)
	}
	o, err := policy.ParseOrigin(ep.APIURL)
	if err != nil || o != ep.Origin {
		t.Fatalf("Origin = %+v, but APIURL %q parses to %+v (%v)", ep.Origin, ep.APIURL, o, err)
	}
	again, err := github.Normalize(kind, ep.APIURL, allowHTTP)
	if err != nil || again != ep {
		t.Fatalf("not idempotent: Normalize(%q) = %+v, %v; want %+v", ep.APIURL, again, err, ep)
	}
}

// TestNormalizedPolicy is the policy's view of normalised URLs: the policy
// compares the origin of the API URL, so a rule lists the API's origin
// (https://api.github.com for github.com) and nothing that merely looks
// like it matches.
func TestNormalizedPolicy(t *testing.T) {
	t.Parallel()
	p, err := policy.New(policy.Config{
		JobKinds: []string{"test_connection"},
		Secrets: []policy.SecretRule{
			{Backend: "file", SecretName: "ghes", Hosts: []string{"https://git.example.com", "https://git.example.com:8443"}},
			{Backend: "file", SecretName: "cloud", Hosts: []string{"https://api.github.com", "https://api.octo.ghe.com"}},
			{Backend: "file", SecretName: "dev", Hosts: []string{"http://localhost:8080"}},
		},
		AllowHTTPHosts: []string{"localhost:8080"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref := func(name string) protocol.SecretRef {
		return protocol.SecretRef{Backend: "file", SecretName: name, PasswordKey: "token"}
	}
	tests := []struct {
		name   string
		secret string
		kind   protocol.GitHubKind
		raw    string
		code   protocol.ErrorCode // empty: allowed
	}{
		{name: "ghes as typed", secret: "ghes", kind: ghes, raw: "https://git.example.com"},
		{name: "ghes api url, case, dot", secret: "ghes", kind: ghes, raw: "HTTPS://GIT.example.com./api/v3/"},
		{name: "ghes explicit default port", secret: "ghes", kind: ghes, raw: "https://git.example.com:443"},
		{name: "ghes listed other port", secret: "ghes", kind: ghes, raw: "https://git.example.com:8443/"},
		{name: "ghes unlisted port", secret: "ghes", kind: ghes, raw: "https://git.example.com:9443", code: protocol.CodeHostNotAllowed},
		{name: "ghes lookalike suffix", secret: "ghes", kind: ghes, raw: "https://git.example.com.evil.com", code: protocol.CodeHostNotAllowed},
		{name: "ghes lookalike prefix", secret: "ghes", kind: ghes, raw: "https://evilgit.example.com", code: protocol.CodeHostNotAllowed},
		{name: "ghes subdomain", secret: "ghes", kind: ghes, raw: "https://a.git.example.com", code: protocol.CodeHostNotAllowed},
		{name: "github.com maps to api.github.com", secret: "cloud", kind: cloud, raw: "https://github.com"},
		{name: "api.github.com", secret: "cloud", kind: cloud, raw: "https://API.github.com/"},
		{name: "ghe.com tenant", secret: "cloud", kind: cloud, raw: "https://octo.ghe.com"},
		{name: "other ghe.com tenant", secret: "cloud", kind: cloud, raw: "https://evil.ghe.com", code: protocol.CodeHostNotAllowed},
		{name: "github.com lookalike", secret: "cloud", kind: cloud, raw: "https://github.com.evil.com", code: protocol.CodeHostNotAllowed},
		{name: "api.github.com lookalike", secret: "cloud", kind: cloud, raw: "https://api.github.com.evil.com", code: protocol.CodeHostNotAllowed},
		{name: "cloud secret to ghes host", secret: "cloud", kind: ghes, raw: "https://git.example.com", code: protocol.CodeHostNotAllowed},
		{name: "ghes secret to github.com", secret: "ghes", kind: cloud, raw: "https://github.com", code: protocol.CodeHostNotAllowed},
		{name: "dev over http", secret: "dev", kind: ghes, raw: "http://localhost:8080"},
		{name: "dev over https", secret: "dev", kind: ghes, raw: "https://localhost:8080", code: protocol.CodeHostNotAllowed},
		{name: "unknown secret", secret: "prod", kind: ghes, raw: "https://git.example.com", code: protocol.CodeSecretNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ep, err := github.Normalize(tt.kind, tt.raw, p.HTTPAllowed)
			if err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			e := p.CheckHost(ref(tt.secret), ep.APIURL)
			switch {
			case tt.code == "" && e != nil:
				t.Fatalf("CheckHost(%s, %s) = %v, want allowed", tt.secret, ep.APIURL, e)
			case tt.code != "" && (e == nil || e.Code != tt.code):
				t.Fatalf("CheckHost(%s, %s) = %v, want %s", tt.secret, ep.APIURL, e, tt.code)
			}
		})
	}
}
