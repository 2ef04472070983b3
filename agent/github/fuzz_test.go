package github_test

import (
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/protocol"
)

// FuzzNormalize checks what the agent relies on before a token leaves it:
// Normalize never panics; what it accepts is https (or http to a host the
// policy allows), holds no user info, query or fragment, and normalises to
// itself; and the policy, asked about the normalised URL, allows exactly
// the origins it lists. The seed corpus is in testdata/fuzz/FuzzNormalize.
//
//	go test ./agent/github -run='^$' -fuzz='^FuzzNormalize$' -fuzztime=1m
func FuzzNormalize(f *testing.F) {
	allowed := policy.Origin{Scheme: "https", Host: "git.example.com", Port: "443"}
	p, err := policy.New(policy.Config{
		JobKinds: []string{"test_connection"},
		Secrets: []policy.SecretRule{
			{Backend: "file", SecretName: "s", Hosts: []string{"https://git.example.com", "http://localhost:8080"}},
		},
		AllowHTTPHosts: []string{"localhost:8080"},
	})
	if err != nil {
		f.Fatal(err)
	}
	ref := protocol.SecretRef{Backend: "file", SecretName: "s", PasswordKey: "token"}
	f.Fuzz(func(t *testing.T, cloudKind bool, raw string) {
		kind := protocol.GitHubEnterpriseServer
		if cloudKind {
			kind = protocol.GitHubCloud
		}
		ep, err := github.Normalize(kind, raw, p.HTTPAllowed)
		if err != nil {
			if ep != (github.Endpoint{}) {
				t.Fatalf("Normalize returned both %+v and %v", ep, err)
			}
			// (Short inputs can be part of the message's own words: "@" is
			// in "user@".)
			if len(raw) >= 12 && strings.Contains(raw, "@") && strings.Contains(err.Error(), raw) {
				t.Fatalf("the error repeats a URL with user info: %v", err)
			}
			return
		}
		checkEndpoint(t, kind, ep, p.HTTPAllowed)
		if e := p.CheckHost(ref, ep.APIURL); e == nil {
			local := policy.Origin{Scheme: "http", Host: "localhost", Port: "8080"}
			if ep.Origin != allowed && ep.Origin != local {
				t.Fatalf("the policy allows %s for %q, an origin it does not list", ep.APIURL, raw)
			}
		} else if ep.Origin == allowed {
			t.Fatalf("the policy refuses %s, the origin it lists: %v", ep.APIURL, e)
		}
	})
}
