package github

import (
	"slices"
	"strings"
)

// DefaultRequiredScopes is the platform's mandatory list of OAuth scopes for
// workflow automation: what test_connection checks when a job names none.
var DefaultRequiredScopes = []string{
	"repo", "workflow", "write:packages", "read:packages", "delete:packages",
	"admin:org", "manage_runners:org", "notifications", "user", "delete_repo",
	"admin:enterprise", "audit_log", "codespace", "project",
}

// scopeChildren is GitHub's tree of OAuth scopes: a scope grants its
// children (and theirs). From GitHub's "Scopes for OAuth apps" and the
// classic token page (where manage_runners:org sits under admin:org).
var scopeChildren = map[string][]string{
	"repo":                  {"repo:status", "repo_deployment", "public_repo", "repo:invite", "security_events"},
	"admin:repo_hook":       {"write:repo_hook", "read:repo_hook"},
	"write:repo_hook":       {"read:repo_hook"},
	"admin:org":             {"write:org", "read:org", "manage_runners:org"},
	"write:org":             {"read:org"},
	"admin:public_key":      {"write:public_key", "read:public_key"},
	"write:public_key":      {"read:public_key"},
	"user":                  {"read:user", "user:email", "user:follow"},
	"write:discussion":      {"read:discussion"},
	"write:packages":        {"read:packages"},
	"admin:gpg_key":         {"write:gpg_key", "read:gpg_key"},
	"write:gpg_key":         {"read:gpg_key"},
	"admin:ssh_signing_key": {"write:ssh_signing_key", "read:ssh_signing_key"},
	"write:ssh_signing_key": {"read:ssh_signing_key"},
	"codespace":             {"codespace:secrets"},
	"copilot":               {"manage_billing:copilot"},
	"project":               {"read:project"},
	"audit_log":             {"read:audit_log"},
	"admin:enterprise":      {"manage_runners:enterprise", "manage_billing:enterprise", "read:enterprise", "scim:enterprise"},
}

// ParseScopes reads an X-OAuth-Scopes header value ("repo, read:org") into
// a sorted list without duplicates, in lower case.
func ParseScopes(header string) []string {
	var out []string
	for _, s := range strings.Split(header, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Covers reports whether the granted scopes give scope: it is granted, or
// an ancestor of it is.
func Covers(granted []string, scope string) bool {
	scope = strings.ToLower(strings.TrimSpace(scope))
	for _, g := range granted {
		if covers(strings.ToLower(g), scope, 0) {
			return true
		}
	}
	return false
}

func covers(g, scope string, depth int) bool {
	if g == scope {
		return true
	}
	if depth > 4 { // the tree is two levels deep; never loop
		return false
	}
	for _, c := range scopeChildren[g] {
		if covers(c, scope, depth+1) {
			return true
		}
	}
	return false
}

// MissingScopes returns the required scopes that granted does not cover, in
// the order of required, without duplicates.
func MissingScopes(granted, required []string) []string {
	var out []string
	for _, r := range required {
		r = strings.ToLower(strings.TrimSpace(r))
		if r != "" && !Covers(granted, r) && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}
