package protocol

import (
	"strings"
	"testing"
)

func TestNormalizeGitHubURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		kind GitHubKind
		in   string
		want string // "" for an error
		err  string // part of the error
	}{
		{"ghes as typed", GitHubEnterpriseServer, "https://git.example.com", "https://git.example.com", ""},
		{"ghes trailing slash", GitHubEnterpriseServer, "https://git.example.com/", "https://git.example.com", ""},
		{"ghes api path", GitHubEnterpriseServer, "https://git.example.com/api/v3", "https://git.example.com", ""},
		{"ghes api path and slash", GitHubEnterpriseServer, "https://git.example.com/api/v3/", "https://git.example.com", ""},
		{"ghes slashes", GitHubEnterpriseServer, "https://git.example.com//", "", "has the path"},
		{"ghes leading zeros", GitHubEnterpriseServer, "https://git.example.com:08443", "https://git.example.com:8443", ""},
		{"ghes empty user info", GitHubEnterpriseServer, "https://@git.example.com", "", "user info"},
		{"ghes empty query", GitHubEnterpriseServer, "https://git.example.com/?", "", "query"},
		{"ghes space", GitHubEnterpriseServer, "https://git.example.com /", "", "space"},
		{"ghes backslash", GitHubEnterpriseServer, "https://git.example.com\\@evil.example", "", "backslash"},
		{"ghes numeric host", GitHubEnterpriseServer, "https://10.0.0.300", "", "looks like an IP"},
		{"ghes not ascii", GitHubEnterpriseServer, "https://gït.example.com", "", "not ASCII"},
		{"ghes label dash", GitHubEnterpriseServer, "https://-git.example.com", "", "character"},
		{"ghes upper case", GitHubEnterpriseServer, "HTTPS://Git.Example.COM", "https://git.example.com", ""},
		{"ghes port", GitHubEnterpriseServer, "https://git.example.com:8443/", "https://git.example.com:8443", ""},
		{"ghes default port", GitHubEnterpriseServer, "https://git.example.com:443", "https://git.example.com", ""},
		{"ghes http default port", GitHubEnterpriseServer, "http://git.example.com:80", "http://git.example.com", ""},
		{"ghes http", GitHubEnterpriseServer, "http://10.0.0.5:8080", "http://10.0.0.5:8080", ""},
		{"ghes ipv6", GitHubEnterpriseServer, "https://[::1]:8443", "https://[::1]:8443", ""},
		{"ghes ipv6 no port", GitHubEnterpriseServer, "https://[::1]/api/v3", "https://[::1]", ""},
		{"ghes trailing dot", GitHubEnterpriseServer, "https://git.example.com./", "https://git.example.com", ""},
		{"ghes ipv6 zone", GitHubEnterpriseServer, "https://[fe80::1%25eth0]:8443", "", "character"},
		{"ghes odd host", GitHubEnterpriseServer, "https://git*.example.com", "", "character"},
		{"ghes empty label", GitHubEnterpriseServer, "https://git..example.com", "", "empty label"},
		{"ghes other path", GitHubEnterpriseServer, "https://git.example.com/orgs/acme", "", "has the path"},
		{"ghes on github.com", GitHubEnterpriseServer, "https://github.com", "", "github_cloud"},
		{"ghes on ghe.com", GitHubEnterpriseServer, "https://acme.ghe.com", "", "github_cloud"},
		{"ghes bad port", GitHubEnterpriseServer, "https://git.example.com:0", "", "port that is not"},
		{"user info", GitHubEnterpriseServer, "https://x:ghp_secret@git.example.com", "", "user info"},
		{"query", GitHubEnterpriseServer, "https://git.example.com/?a=b", "", "query"},
		{"fragment", GitHubEnterpriseServer, "https://git.example.com/#x", "", "query or fragment"},
		{"no scheme", GitHubEnterpriseServer, "git.example.com", "", "https://"},
		{"ftp", GitHubEnterpriseServer, "ftp://git.example.com", "", "https://"},
		{"empty", GitHubEnterpriseServer, "", "", "github_url is required"},
		{"no host", GitHubEnterpriseServer, "https:///api/v3", "", "no host"},
		{"not a url", GitHubEnterpriseServer, "https://[::1", "", "not a URL"},
		{"control character", GitHubEnterpriseServer, "https://git.example.com\x7f", "", "control character"},

		{"cloud", GitHubCloud, "https://github.com", "https://github.com", ""},
		{"cloud slash", GitHubCloud, "https://github.com/", "https://github.com", ""},
		{"cloud www", GitHubCloud, "https://www.github.com", "https://github.com", ""},
		{"cloud api", GitHubCloud, "https://api.github.com/", "https://github.com", ""},
		{"cloud case", GitHubCloud, "https://GitHub.com", "https://github.com", ""},
		{"cloud default port", GitHubCloud, "https://github.com:443", "https://github.com", ""},
		{"ghe.com", GitHubCloud, "https://acme.ghe.com", "https://acme.ghe.com", ""},
		{"ghe.com api", GitHubCloud, "https://api.acme.ghe.com/", "https://acme.ghe.com", ""},
		{"ghe.com upper", GitHubCloud, "https://ACME-eu.GHE.com", "https://acme-eu.ghe.com", ""},
		{"ghe.com nested", GitHubCloud, "https://a.b.ghe.com", "", "not a GHE.com address"},
		{"ghe.com bare", GitHubCloud, "https://ghe.com", "", "not a GHE.com address"},
		{"ghe.com api only", GitHubCloud, "https://api.ghe.com", "", "not a GHE.com address"},
		{"cloud http", GitHubCloud, "http://github.com", "", "https on port 443 only"},
		{"cloud path", GitHubCloud, "https://github.com/acme", "", "not a page in it"},
		{"cloud api v3", GitHubCloud, "https://github.com/api/v3", "", `use kind "ghes"`},
		{"cloud port", GitHubCloud, "https://github.com:8443", "", "https on port 443 only"},
		{"cloud trailing dot", GitHubCloud, "https://github.com.", "https://github.com", ""},
		{"cloud lookalike is another API", GitHubCloud, "https://github.com.evil.example", "https://github.com.evil.example", ""},
		{"cloud-compatible API", GitHubCloud, "HTTPS://127.0.0.1:8443/", "https://127.0.0.1:8443", ""},
		{"cloud-compatible API over http", GitHubCloud, "http://gateway.example:80", "http://gateway.example", ""},

		{"no kind", "", "https://github.com", "", "kind is required"},
		{"bad kind", "gitlab", "https://github.com", "", `kind "gitlab"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := NormalizeGitHubURL(tc.kind, tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("NormalizeGitHubURL(%s, %q) = %q, %v; want an error with %q", tc.kind, tc.in, got, err, tc.err)
				}
				if strings.Contains(err.Error(), "ghp_secret") {
					t.Errorf("the error repeats the user info: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("NormalizeGitHubURL(%s, %q) = %q, %v; want %q", tc.kind, tc.in, got, err, tc.want)
			}
			// Idempotent: the canonical form is its own canonical form, and
			// passes the checks that both sides make on job params.
			again, err := NormalizeGitHubURL(tc.kind, got)
			if err != nil || again != got {
				t.Errorf("NormalizeGitHubURL(%s, %q) = %q, %v; want it unchanged", tc.kind, got, again, err)
			}
			if err := CheckGitHubURL(got); err != nil {
				t.Errorf("CheckGitHubURL(%q) = %v", got, err)
			}
		})
	}
}

func FuzzNormalizeGitHubURL(f *testing.F) {
	for _, s := range []string{"https://git.example.com/api/v3/", "https://github.com", "https://api.acme.ghe.com", "http://[::1]:80", "https://x@y"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, raw string, ghes bool) {
		kind := GitHubCloud
		if ghes {
			kind = GitHubEnterpriseServer
		}
		got, err := NormalizeGitHubURL(kind, raw)
		if err != nil {
			return
		}
		again, err := NormalizeGitHubURL(kind, got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q → %q → %q, %v", raw, got, again, err)
		}
		if err := CheckGitHubURL(got); err != nil {
			t.Fatalf("canonical %q fails CheckGitHubURL: %v", got, err)
		}
	})
}
