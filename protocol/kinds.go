package protocol

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// JobKind names what a job does.
type JobKind string

// Job kinds of protocol v1.
const (
	// KindResolveCredentials reads a secret reference and reports what was
	// found (never the value). Params: Secret. Output: Credentials.
	KindResolveCredentials JobKind = "resolve_credentials"
	// KindTestConnection checks a GitHub connection with the referenced
	// credentials. Params: Secret, GitHubURL, GitHubKind, RequiredScopes,
	// Organization. Output: Connection.
	KindTestConnection JobKind = "test_connection"
	// KindListOrganizations lists the organizations the account can see.
	// Params: as KindTestConnection. Output: Organizations.
	KindListOrganizations JobKind = "list_organizations"
)

// JobKinds lists the kinds of this protocol version.
var JobKinds = []JobKind{KindResolveCredentials, KindTestConnection, KindListOrganizations}

// Known reports whether k is a kind of this protocol version.
func (k JobKind) Known() bool {
	for _, v := range JobKinds {
		if k == v {
			return true
		}
	}
	return false
}

// Secret backends.
const (
	BackendAWS   = "aws"
	BackendAzure = "azure"
	BackendFile  = "file"
)

// SecretRef points at credentials in a secret backend. It names where the
// secret is, never what it holds.
//
// aws and file: SecretName names a secret whose value is a JSON object;
// UsernameKey and PasswordKey name its fields. azure: VaultName names the
// vault; UsernameSecret and PasswordSecret name two secrets in it.
type SecretRef struct {
	// Backend is "aws", "azure" or "file".
	Backend string `json:"backend"`

	// SecretName is the secret's name or ARN (aws, file).
	SecretName string `json:"secret_name,omitempty"`
	// UsernameKey and PasswordKey name the fields of the secret's JSON value
	// (aws, file). UsernameKey is optional: a token alone is enough.
	UsernameKey string `json:"username_key,omitempty"`
	PasswordKey string `json:"password_key,omitempty"`
	// VersionStage or VersionID pick a version (aws); default AWSCURRENT.
	VersionStage string `json:"version_stage,omitempty"`
	VersionID    string `json:"version_id,omitempty"`

	// VaultName is the Key Vault's name or URL (azure).
	VaultName string `json:"vault_name,omitempty"`
	// UsernameSecret and PasswordSecret name two secrets in the vault
	// (azure). UsernameSecret is optional.
	UsernameSecret string `json:"username_secret,omitempty"`
	PasswordSecret string `json:"password_secret,omitempty"`
}

// MaxRefField bounds each field of a SecretRef (an AWS ARN is the longest).
const MaxRefField = 2048

// Validate checks that the reference names every field its backend needs.
func (r *SecretRef) Validate() error {
	type refField struct {
		name, v  string
		required bool
	}
	var fields []refField
	switch r.Backend {
	case BackendAWS, BackendFile:
		fields = append(fields,
			refField{"secret_name", r.SecretName, true},
			refField{"username_key", r.UsernameKey, false},
			refField{"password_key", r.PasswordKey, true},
			refField{"version_stage", r.VersionStage, false},
			refField{"version_id", r.VersionID, false})
		if r.VaultName != "" || r.UsernameSecret != "" || r.PasswordSecret != "" {
			return fmt.Errorf("secret.vault_name, secret.username_secret and secret.password_secret are for the azure backend, not %q", r.Backend)
		}
		if r.VersionStage != "" && r.VersionID != "" {
			return fmt.Errorf("give secret.version_stage or secret.version_id, not both")
		}
	case BackendAzure:
		fields = append(fields,
			refField{"vault_name", r.VaultName, true},
			refField{"username_secret", r.UsernameSecret, false},
			refField{"password_secret", r.PasswordSecret, true})
		if r.SecretName != "" || r.UsernameKey != "" || r.PasswordKey != "" || r.VersionStage != "" || r.VersionID != "" {
			return fmt.Errorf("secret.secret_name, secret.username_key, secret.password_key and secret.version_* are for the aws and file backends, not azure")
		}
	case "":
		return fmt.Errorf("secret.backend is required: one of aws, azure, file")
	default:
		return fmt.Errorf("secret.backend %q is not one of aws, azure, file", truncate(r.Backend, 64))
	}
	for _, f := range fields {
		if f.v == "" {
			if f.required {
				return fmt.Errorf("secret.%s is required for the %s backend", f.name, r.Backend)
			}
			continue
		}
		if len(f.v) > MaxRefField {
			return fmt.Errorf("secret.%s is %d bytes; at most %d", f.name, len(f.v), MaxRefField)
		}
		if strings.ContainsFunc(f.v, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			return fmt.Errorf("secret.%s holds a control character", f.name)
		}
	}
	return nil
}

// String prints the reference for logs and messages: where, never what.
func (r SecretRef) String() string {
	switch r.Backend {
	case BackendAzure:
		return "azure:" + r.VaultName + "/" + r.PasswordSecret
	default:
		s := r.Backend + ":" + r.SecretName
		if r.VersionStage != "" {
			s += "@" + r.VersionStage
		} else if r.VersionID != "" {
			s += "@" + r.VersionID
		}
		return s
	}
}

// GitHubKind says which GitHub a connection talks to.
type GitHubKind string

// GitHub kinds.
const (
	GitHubEnterpriseServer GitHubKind = "ghes"
	GitHubCloud            GitHubKind = "github_cloud"
)

// Params are a job's inputs. Which fields a kind needs is said at each kind;
// the others stay empty.
type Params struct {
	// Secret is where the credentials are.
	Secret *SecretRef `json:"secret,omitempty"`
	// GitHubURL is the GitHub instance as users type it
	// ("https://git.example.com", "https://github.com").
	GitHubURL string `json:"github_url,omitempty"`
	// GitHubKind is "ghes" or "github_cloud".
	GitHubKind GitHubKind `json:"github_kind,omitempty"`
	// RequiredScopes are the OAuth scopes the platform needs; empty means
	// the platform's mandatory list.
	RequiredScopes []string `json:"required_scopes,omitempty"`
	// Organization, when set, is checked to be visible to the account.
	Organization string `json:"organization,omitempty"`
}

// Validate checks the params for kind.
func (p *Params) Validate(kind JobKind) error {
	switch kind {
	case KindResolveCredentials:
		if p.Secret == nil {
			return fmt.Errorf("params.secret is required for %s", kind)
		}
		return p.Secret.Validate()
	case KindTestConnection, KindListOrganizations:
		if p.Secret == nil {
			return fmt.Errorf("params.secret is required for %s", kind)
		}
		if err := p.Secret.Validate(); err != nil {
			return err
		}
		if p.GitHubKind != GitHubEnterpriseServer && p.GitHubKind != GitHubCloud {
			return fmt.Errorf("params.github_kind must be %q or %q", GitHubEnterpriseServer, GitHubCloud)
		}
		if err := CheckGitHubURL(p.GitHubURL); err != nil {
			return err
		}
		if err := checkList("params.required_scopes", p.RequiredScopes); err != nil {
			return err
		}
		for _, s := range p.RequiredScopes {
			if err := checkID("params.required_scopes entry", s, true); err != nil {
				return err
			}
		}
		return checkLen("params.organization", p.Organization, 256)
	default:
		return fmt.Errorf("kind %q is not one of %v", truncate(string(kind), 64), JobKinds)
	}
}

// CheckGitHubURL does the syntax checks that both sides make on a GitHub URL:
// absolute, http or https, a host, no user info, no query or fragment. The
// agent's policy decides afterwards whether the host may be called.
func CheckGitHubURL(raw string) error { return checkGitHubURL("params.github_url", raw) }

// checkGitHubURL is CheckGitHubURL with errors that name field.
func checkGitHubURL(field, raw string) error {
	if raw == "" {
		return fmt.Errorf("%s is required", field)
	}
	if len(raw) > 2048 {
		return fmt.Errorf("%s is %d bytes; at most 2048", field, len(raw))
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Not the whole *url.Error: it quotes the URL, which may hold a
		// token in its user info.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s is not a URL: %v", field, err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%s must start with https:// (got %q)", field, truncate(u.Scheme, 16))
	case u.Hostname() == "":
		return fmt.Errorf("%s has no host", field)
	case u.User != nil:
		return fmt.Errorf("%s must not hold user info; credentials come from the secret reference", field)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("%s must not hold a query or fragment", field)
	}
	return nil
}

// Output is what a successful job found. Exactly the field of the job's kind
// is set. Nothing here is ever a secret value.
type Output struct {
	Credentials   *CredentialsOutput   `json:"credentials,omitempty"`
	Connection    *ConnectionOutput    `json:"connection,omitempty"`
	Organizations *OrganizationsOutput `json:"organizations,omitempty"`
}

// Validate bounds a received output.
func (o *Output) Validate() error {
	if o.Credentials != nil {
		if err := checkList("credentials.keys_found", o.Credentials.KeysFound); err != nil {
			return err
		}
	}
	if o.Connection != nil {
		c := o.Connection
		for name, l := range map[string]int{"scopes": len(c.Scopes), "missing_scopes": len(c.MissingScopes), "organizations": len(c.Organizations),
			"sso_organization_ids": len(c.SSOOrganizationIDs), "warnings": len(c.Warnings), "timings": len(c.Timings)} {
			if l > MaxListLength {
				return fmt.Errorf("connection.%s has %d entries; at most %d", name, l, MaxListLength)
			}
		}
		for _, w := range c.Warnings {
			if err := checkLen("connection.warnings entry", w, MaxMessageText); err != nil {
				return err
			}
		}
	}
	if o.Organizations != nil {
		if err := checkList("organizations.organizations", o.Organizations.Organizations); err != nil {
			return err
		}
		if err := checkList("organizations.sso_organization_ids", o.Organizations.SSOOrganizationIDs); err != nil {
			return err
		}
	}
	return nil
}

// CredentialsOutput is the outcome of resolve_credentials.
type CredentialsOutput struct {
	// Backend and Reference say where the credentials were read.
	Backend   string    `json:"backend"`
	Reference SecretRef `json:"reference"`
	// KeysFound lists which of the referenced keys (or secrets) exist:
	// "username", "password".
	KeysFound []string `json:"keys_found"`
	// VersionID and VersionCreated identify the secret's version where the
	// backend has them.
	VersionID      string     `json:"version_id,omitempty"`
	VersionCreated *time.Time `json:"version_created,omitempty"`
	// Fingerprint is a truncated HMAC-SHA256 of the credentials under a key
	// only the agent holds: it changes when the secret is rotated and tells
	// nothing about the value.
	Fingerprint string `json:"fingerprint"`
	// Timings holds milliseconds per step ("secret": the secret manager
	// call, or the cache).
	Timings map[string]int64 `json:"timings_ms,omitempty"`
}

// Organization is a GitHub organization the account can see.
type Organization struct {
	Login       string `json:"login"`
	ID          int64  `json:"id"`
	Description string `json:"description,omitempty"`
}

// ConnectionOutput is the outcome of test_connection.
type ConnectionOutput struct {
	// APIURL is the API base URL that was called.
	APIURL string `json:"api_url"`
	// GHESVersion is the GitHub Enterprise Server version, when it said.
	GHESVersion string `json:"ghes_version,omitempty"`
	// Login is the authenticated account (empty for App tokens).
	Login string `json:"login,omitempty"`
	// TokenType is "classic_pat", "fine_grained_pat" or "github_app".
	TokenType string `json:"token_type"`
	// ScopesListable is false for token types that have no OAuth scopes.
	ScopesListable bool     `json:"scopes_listable"`
	Scopes         []string `json:"scopes,omitempty"`
	MissingScopes  []string `json:"missing_scopes,omitempty"`
	// Organizations the account can see.
	Organizations []Organization `json:"organizations,omitempty"`
	// OrganizationsTruncated is true when the account sees more
	// organizations than one result holds; Organizations has the first.
	OrganizationsTruncated bool `json:"organizations_truncated,omitempty"`
	// SSOOrganizationIDs lists the ids of organizations that GitHub left out
	// of Organizations because they enforce SAML single sign-on and the
	// token is not authorized for them (X-GitHub-SSO: partial-results).
	SSOOrganizationIDs []int64 `json:"sso_organization_ids,omitempty"`
	// RateLimitRemaining is what GitHub reported, -1 when it did not
	// (GitHub Enterprise Server has rate limits off by default).
	RateLimitRemaining int `json:"rate_limit_remaining"`
	// RateLimitReset is when the rate limit window resets, when GitHub said.
	RateLimitReset *time.Time `json:"rate_limit_reset,omitempty"`
	// TokenExpiresAt is when the token expires, when GitHub said
	// (GitHub-Authentication-Token-Expiration); absent for a token without
	// an expiry.
	TokenExpiresAt *time.Time `json:"token_expires_at,omitempty"`
	// Warnings are notes for a person about a connection that works but may
	// not do all that is expected (scopes that cannot be listed,
	// organizations that could not be listed or were left out).
	Warnings []string `json:"warnings,omitempty"`
	// Timings holds milliseconds per step: "secret" (reading the secret),
	// "user", "installation", "orgs", "organization", "meta", "probe" (one
	// per kind of GitHub call made) and "github" (all of GitHub's part).
	Timings map[string]int64 `json:"timings_ms,omitempty"`
}

// OrganizationsOutput is the outcome of list_organizations.
type OrganizationsOutput struct {
	// Organizations the account can see (for a GitHub App installation
	// token: the organization it is installed on).
	Organizations []Organization `json:"organizations"`
	// Truncated is true when the account sees more organizations than one
	// result holds; Organizations has the first.
	Truncated bool `json:"truncated,omitempty"`
	// SSOOrganizationIDs lists the ids of organizations that GitHub left out
	// because they enforce SAML single sign-on and the token is not
	// authorized for them.
	SSOOrganizationIDs []int64 `json:"sso_organization_ids,omitempty"`
}
