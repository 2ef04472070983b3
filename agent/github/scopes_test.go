package github_test

import (
	"slices"
	"testing"

	"github.com/orchestrator/orchestrator/agent/github"
)

func TestParseScopes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header string
		want   []string
	}{
		{"", nil},
		{" ", nil},
		{"repo", []string{"repo"}},
		{"repo, read:org,workflow ,  user", []string{"read:org", "repo", "user", "workflow"}},
		{"Repo, repo, ,", []string{"repo"}},
	}
	for _, tt := range tests {
		if got := github.ParseScopes(tt.header); !slices.Equal(got, tt.want) {
			t.Errorf("ParseScopes(%q) = %q, want %q", tt.header, got, tt.want)
		}
	}
}

func TestMissingScopes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		granted  []string
		required []string
		want     []string
	}{
		{name: "nothing granted", granted: nil, required: []string{"repo", "workflow"}, want: []string{"repo", "workflow"}},
		{name: "repo covers its children", granted: []string{"repo"},
			required: []string{"repo:status", "repo_deployment", "public_repo", "repo:invite", "security_events"}},
		{name: "a child does not cover its parent", granted: []string{"public_repo", "repo:status"}, required: []string{"repo"}, want: []string{"repo"}},
		{name: "admin:org covers write, read and runners", granted: []string{"admin:org"}, required: []string{"write:org", "read:org", "manage_runners:org"}},
		{name: "write:org covers read:org only", granted: []string{"write:org"}, required: []string{"read:org", "admin:org"}, want: []string{"admin:org"}},
		{name: "write:packages covers read:packages, not delete", granted: []string{"write:packages"}, required: []string{"read:packages", "delete:packages"}, want: []string{"delete:packages"}},
		{name: "user", granted: []string{"user"}, required: []string{"read:user", "user:email", "user:follow"}},
		{name: "admin:enterprise", granted: []string{"admin:enterprise"}, required: []string{"manage_runners:enterprise", "manage_billing:enterprise", "read:enterprise", "scim:enterprise"}},
		{name: "audit_log, codespace, project", granted: []string{"audit_log", "codespace", "project"}, required: []string{"read:audit_log", "codespace:secrets", "read:project"}},
		{name: "key families are transitive", granted: []string{"admin:public_key", "admin:gpg_key", "admin:repo_hook"}, required: []string{"read:public_key", "read:gpg_key", "read:repo_hook"}},
		{name: "case and spaces", granted: []string{"REPO"}, required: []string{" Repo:Status "}},
		{name: "duplicates once", granted: nil, required: []string{"repo", "repo"}, want: []string{"repo"}},
		{name: "unknown scopes cover only themselves", granted: []string{"future:scope"}, required: []string{"future:scope", "future"}, want: []string{"future"}},
		{name: "default list, all granted", granted: []string{"repo", "workflow", "write:packages", "delete:packages", "admin:org", "notifications", "user", "delete_repo", "admin:enterprise", "audit_log", "codespace", "project"},
			required: github.DefaultRequiredScopes},
	}
	for _, tt := range tests {
		if got := github.MissingScopes(tt.granted, tt.required); !slices.Equal(got, tt.want) {
			t.Errorf("%s: MissingScopes(%q, %q) = %q, want %q", tt.name, tt.granted, tt.required, got, tt.want)
		}
	}
}
