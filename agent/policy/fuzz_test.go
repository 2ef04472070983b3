package policy_test

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/protocol"
)

// The seed corpora are committed in testdata/fuzz/<Target>: lookalike
// hosts, user info, ports, IPv6, encodings. Run a target longer with, for
// example:
//
//	go test ./agent/policy -run='^$' -fuzz='^FuzzCheckHost$' -fuzztime=10m

// FuzzParseOrigin: ParseOrigin never panics; it refuses with one of its
// errors (which never quote the URL) or returns a normalised origin that
// reads back as itself; a URL with user info is never accepted.
func FuzzParseOrigin(f *testing.F) {
	sentinels := []error{policy.ErrNotURL, policy.ErrNotHTTP, policy.ErrUserInfo, policy.ErrNoHost, policy.ErrHostPercent, policy.ErrInvalidPort}
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := policy.ParseOrigin(raw)
		if err != nil {
			known := false
			for _, s := range sentinels {
				known = known || errors.Is(err, s)
			}
			if !known {
				t.Fatalf("ParseOrigin(%q): unexpected error %v", raw, err)
			}
			return
		}
		if u, perr := url.Parse(raw); perr == nil && u.User != nil {
			t.Fatalf("ParseOrigin(%q) accepted a URL with user info: %+v", raw, o)
		}
		if o.Scheme != "https" && o.Scheme != "http" {
			t.Fatalf("ParseOrigin(%q): scheme %q", raw, o.Scheme)
		}
		// (One trailing dot is dropped; a host such as "a.." keeps "a.",
		// which matches no rule written without it: refused, not confused.)
		if o.Host == "" || o.Host != strings.ToLower(o.Host) {
			t.Fatalf("ParseOrigin(%q): host %q is not normalised", raw, o.Host)
		}
		if n, err := strconv.Atoi(o.Port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != o.Port {
			t.Fatalf("ParseOrigin(%q): port %q", raw, o.Port)
		}
		if back, err := policy.ParseOrigin(o.String()); err == nil && back != o && !strings.HasSuffix(o.Host, ".") {
			// (A host that url.Parse accepts in a URL but not back in its
			// String form, such as one with a zone, is refused on the way
			// back; that is not a second origin.)
			t.Fatalf("ParseOrigin(%q) = %+v, whose String %q reads back as %+v", raw, o, o.String(), back)
		}
	})
}

// FuzzCheckHost is the property the agent's promise "credentials only to
// allowed hosts" rests on: for any rule host and any GitHub URL, CheckHost
// allows sending the secret exactly when the URL's origin (scheme, host,
// port) is the rule's, over https or over http to a host in
// allow_http_hosts, and the URL holds no user info. A refusal never quotes
// a password from the URL.
func FuzzCheckHost(f *testing.F) {
	f.Fuzz(func(t *testing.T, ruleHost, target, httpHost string) {
		c := policy.Config{
			JobKinds: []string{string(protocol.KindTestConnection)},
			Secrets:  []policy.SecretRule{{Backend: protocol.BackendFile, SecretName: "ci/*", Hosts: []string{ruleHost}}},
		}
		if httpHost != "" {
			c.AllowHTTPHosts = []string{httpHost}
		}
		p, err := policy.New(c)
		if err != nil {
			return
		}
		rule, err := policy.ParseOrigin(ruleHost)
		if err != nil {
			t.Fatalf("New accepted the host %q that ParseOrigin refuses: %v", ruleHost, err)
		}
		ref := protocol.SecretRef{Backend: protocol.BackendFile, SecretName: "ci/github", UsernameKey: "u", PasswordKey: "p"}
		e := p.CheckHost(ref, target)
		got, perr := policy.ParseOrigin(target)
		allowedScheme := perr == nil && (got.Scheme == "https" || p.HTTPAllowed(got.HostPort()))
		switch {
		case e == nil && perr != nil:
			t.Fatalf("CheckHost allowed %q, which ParseOrigin refuses: %v", target, perr)
		case e == nil && got != rule:
			t.Fatalf("CheckHost allowed %q (origin %+v) for the rule %q (origin %+v)", target, got, ruleHost, rule)
		case e == nil && !allowedScheme:
			t.Fatalf("CheckHost allowed plain http to %q, not in allow_http_hosts %q", target, httpHost)
		case e == nil:
			if u, err := url.Parse(target); err != nil || u.User != nil {
				t.Fatalf("CheckHost allowed %q, which holds user info or does not parse (%v)", target, err)
			}
		case e.Code != protocol.CodeHostNotAllowed:
			t.Fatalf("CheckHost(%q) refused with %s, want %s: %s", target, e.Code, protocol.CodeHostNotAllowed, e.Message)
		case perr == nil && got == rule && allowedScheme:
			t.Fatalf("CheckHost refused %q, whose origin is the rule's %q: %s", target, ruleHost, e.Message)
		}
		if e != nil {
			if u, err := url.Parse(target); err == nil && u.User != nil {
				if pw, ok := u.User.Password(); ok && len(pw) >= 4 && !strings.Contains(target[strings.LastIndex(target, "@")+1:], pw) &&
					strings.Contains(e.Message, pw) {
					t.Fatalf("the refusal of %q quotes its password: %s", target, e.Message)
				}
			}
		}
		// A reference outside every rule is refused as a secret, whatever
		// the URL.
		other := ref
		other.SecretName = "prod/github"
		if e := p.CheckHost(other, target); e == nil || e.Code != protocol.CodeSecretNotAllowed {
			t.Fatalf("CheckHost of a reference outside the policy: %v, want %s", e, protocol.CodeSecretNotAllowed)
		}
	})
}
