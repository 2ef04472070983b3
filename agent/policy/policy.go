// Package policy is the agent's own local policy: which job kinds it runs,
// which secret references it will read, and to which GitHub hosts each
// secret may be sent (DESIGN §6.2).
//
// The policy comes from the agent's config file; the control plane cannot
// change it. The runner checks it before any secret is read: [Policy.CheckKind]
// when a job arrives, [Policy.CheckSecret] before resolving a reference, and
// [Policy.CheckHost] before credentials go to a GitHub URL. URLs are compared
// by [Origin] (scheme, host, port after parsing), never as strings; user
// info is refused; plain http only for hosts listed in allow_http_hosts.
//
// An empty policy allows nothing, and every refusal names the setting to add.
// A policy is immutable once built and safe for concurrent use.
package policy

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/orchestrator/orchestrator/protocol"
)

// Config is the policy section of the agent's config file.
//
//	policy:
//	  job_kinds: [resolve_credentials, test_connection, list_organizations]
//	  secrets:
//	    - backend: aws
//	      secret_name: "ci/*"
//	      hosts: ["https://git.example.com"]
//	    - backend: azure
//	      vault_name: platform-kv
//	      hosts: ["https://api.github.com"]
//	  allow_http_hosts: ["localhost:8080"]
type Config struct {
	// JobKinds lists the job kinds this agent runs; empty runs none.
	JobKinds []string `yaml:"job_kinds" json:"job_kinds,omitempty"`
	// Secrets lists the secret references this agent may read, each with
	// the hosts its value may be sent to; empty reads none.
	Secrets []SecretRule `yaml:"secrets" json:"secrets,omitempty"`
	// AllowHTTPHosts lists the "host[:port]" (port 80 by default) that may
	// be called over plain http, for development and tests. Every other host
	// needs https.
	AllowHTTPHosts []string `yaml:"allow_http_hosts" json:"allow_http_hosts,omitempty"`
}

// SecretRule allows the references that match it, and binds them to hosts.
//
// Patterns use [path.Match]: "*" matches any run of characters but "/", so
// "ci/*" matches "ci/github" but not "ci/a/b" and "*" matches no name with a
// "/" in it. An ARN is matched as written: to allow references by ARN, write
// the rule with the ARN (or an ARN pattern).
type SecretRule struct {
	// Backend is "aws", "azure" or "file".
	Backend string `yaml:"backend" json:"backend"`
	// SecretName is, for aws and file, the secret's name or a pattern;
	// required. For azure it is optional: when set, the reference's
	// username_secret and password_secret must both match it (Key Vault
	// names compare case-insensitively).
	SecretName string `yaml:"secret_name" json:"secret_name,omitempty"`
	// VaultName is, for azure, the Key Vault's name or a pattern; required.
	// It matches a reference that names the vault or gives its URL on an
	// Azure Key Vault domain (https://NAME.vault.azure.net and the other
	// Azure clouds'). Case-insensitive.
	VaultName string `yaml:"vault_name" json:"vault_name,omitempty"`
	// Hosts lists the GitHub URLs the secret may be sent to, such as
	// "https://git.example.com" or "https://api.github.com". Only the
	// origin counts: scheme, host and port (a path is ignored, so
	// "https://git.example.com" also covers "https://git.example.com/api/v3").
	// Empty: the secret may be resolved (resolve_credentials) but sent
	// nowhere.
	Hosts []string `yaml:"hosts" json:"hosts,omitempty"`
}

// Policy is a validated [Config]. Build it with [New].
type Policy struct {
	kinds     []protocol.JobKind // in protocol.JobKinds order
	rules     []rule
	allowHTTP map[string]bool // "host:port"
}

// rule is a validated SecretRule.
type rule struct {
	index   int // in Config.Secrets, for messages
	backend string
	name    string // pattern; lower case for azure; empty matches all (azure only)
	vault   string // pattern, lower case (azure)
	hosts   []Origin
}

// azureVaultSuffixes are the DNS suffixes of Key Vault in the Azure clouds.
var azureVaultSuffixes = []string{
	".vault.azure.net",
	".vault.azure.cn",
	".vault.usgovcloudapi.net",
	".vault.microsoftazure.de",
}

// New validates c and returns the policy. The error lists every bad
// setting, each named by its place in the config file
// ("policy.secrets[2].hosts[0]: ...").
func New(c Config) (*Policy, error) {
	p := &Policy{allowHTTP: map[string]bool{}}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for i, k := range c.JobKinds {
		kind := protocol.JobKind(k)
		if !kind.Known() {
			bad("policy.job_kinds[%d]: %q is not a job kind; known kinds: %s", i, truncate(k, 64), kindList(protocol.JobKinds))
		}
	}
	for _, kind := range protocol.JobKinds {
		if slices.Contains(c.JobKinds, string(kind)) {
			p.kinds = append(p.kinds, kind)
		}
	}

	for i, h := range c.AllowHTTPHosts {
		hp, err := parseHostPort(h)
		if err != nil {
			bad("policy.allow_http_hosts[%d]: %q %v", i, safeURL(h), err)
			continue
		}
		p.allowHTTP[hp] = true
	}

	for i, sr := range c.Secrets {
		at := fmt.Sprintf("policy.secrets[%d]", i)
		r := rule{index: i, backend: sr.Backend}
		switch sr.Backend {
		case protocol.BackendAWS, protocol.BackendFile:
			if sr.SecretName == "" {
				bad("%s.secret_name is required for the %s backend: a name, or a pattern such as \"ci/*\"", at, sr.Backend)
			}
			if sr.VaultName != "" {
				bad("%s.vault_name is for the azure backend, not %s", at, sr.Backend)
			}
			r.name = sr.SecretName
		case protocol.BackendAzure:
			if sr.VaultName == "" {
				bad("%s.vault_name is required for the azure backend: a vault name, or a pattern such as \"platform-*\"", at)
			} else if strings.ContainsAny(sr.VaultName, ":/.") {
				bad("%s.vault_name: %q must be the vault's name (\"platform-kv\"), not its URL", at, safeURL(sr.VaultName))
			}
			r.name = strings.ToLower(sr.SecretName)
			r.vault = strings.ToLower(sr.VaultName)
		case "":
			bad("%s.backend is required: one of aws, azure, file", at)
		default:
			bad("%s.backend: %q is not one of aws, azure, file", at, truncate(sr.Backend, 64))
		}
		for _, f := range []struct{ field, pattern string }{{"secret_name", r.name}, {"vault_name", r.vault}} {
			if _, err := path.Match(f.pattern, ""); err != nil {
				bad("%s.%s: %q is not a valid pattern: %v", at, f.field, truncate(f.pattern, 256), err)
			}
		}
		for j, h := range sr.Hosts {
			o, err := ParseOrigin(h)
			if err != nil {
				bad("%s.hosts[%d]: %q %v", at, j, safeURL(h), err)
				continue
			}
			if u, perr := url.Parse(h); perr == nil && (u.RawQuery != "" || u.ForceQuery || u.Fragment != "") {
				bad("%s.hosts[%d]: %q must not hold a query or fragment; give scheme://host[:port]", at, j, safeURL(h))
				continue
			}
			if o.Scheme == "http" && !p.allowHTTP[o.HostPort()] {
				bad("%s.hosts[%d]: %q uses plain http; use https, or add %s to policy.allow_http_hosts", at, j, safeURL(h), o.HostPort())
				continue
			}
			if !slices.Contains(r.hosts, o) {
				r.hosts = append(r.hosts, o)
			}
		}
		p.rules = append(p.rules, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// HTTPAllowed reports whether policy.allow_http_hosts lists hostPort
// ("host:port", as [Origin.HostPort] gives it), so that it may be called over
// plain http.
func (p *Policy) HTTPAllowed(hostPort string) bool { return p.allowHTTP[hostPort] }

// Kinds returns the job kinds the policy allows, in the protocol's order.
func (p *Policy) Kinds() []protocol.JobKind { return slices.Clone(p.kinds) }

// CheckKind returns nil if the policy allows jobs of kind, else
// kind_not_allowed.
func (p *Policy) CheckKind(kind protocol.JobKind) *protocol.Error {
	if slices.Contains(p.kinds, kind) {
		return nil
	}
	if !kind.Known() {
		return protocol.Errorf(protocol.CodeKindNotAllowed,
			"this agent does not know the job kind %q; it knows %s", truncate(string(kind), 64), kindList(protocol.JobKinds))
	}
	return protocol.Errorf(protocol.CodeKindNotAllowed,
		"this agent does not run %s jobs; add it to policy.job_kinds in the agent config", kind)
}

// CheckSecret returns nil if a rule allows reading ref, else
// secret_not_allowed.
func (p *Policy) CheckSecret(ref protocol.SecretRef) *protocol.Error {
	if len(p.matching(ref)) > 0 {
		return nil
	}
	return p.secretRefused(ref)
}

// CheckHost returns nil if a rule allows reading ref and sending it to
// githubURL. Otherwise it returns secret_not_allowed when no rule allows the
// reference at all, and host_not_allowed when the URL is not usable (user
// info, plain http to a host not in allow_http_hosts) or no rule for the
// reference lists its origin.
func (p *Policy) CheckHost(ref protocol.SecretRef, githubURL string) *protocol.Error {
	rules := p.matching(ref)
	if len(rules) == 0 {
		return p.secretRefused(ref)
	}
	o, err := ParseOrigin(githubURL)
	if err != nil {
		return protocol.Errorf(protocol.CodeHostNotAllowed, "the GitHub URL %q %v", safeURL(githubURL), err)
	}
	if o.Scheme == "http" && !p.allowHTTP[o.HostPort()] {
		return protocol.Errorf(protocol.CodeHostNotAllowed,
			"this agent does not call %s over plain http; use https, or add %s to policy.allow_http_hosts in the agent config",
			o.HostPort(), o.HostPort())
	}
	settings := make([]string, 0, len(rules))
	for _, r := range rules {
		if slices.Contains(r.hosts, o) {
			return nil
		}
		settings = append(settings, fmt.Sprintf("policy.secrets[%d].hosts", r.index))
	}
	if len(settings) > 3 {
		settings = settings[:3]
	}
	return protocol.Errorf(protocol.CodeHostNotAllowed,
		"this agent's policy does not allow sending the secret %s to %s; add %q to %s in the agent config",
		refText(ref), o, o.String(), strings.Join(settings, " or "))
}

// matching returns the rules that allow ref.
func (p *Policy) matching(ref protocol.SecretRef) []rule {
	var out []rule
	for _, r := range p.rules {
		if r.matches(ref) {
			out = append(out, r)
		}
	}
	return out
}

func (r rule) matches(ref protocol.SecretRef) bool {
	if ref.Backend != r.backend {
		return false
	}
	switch r.backend {
	case protocol.BackendAzure:
		vault, ok := vaultName(ref.VaultName)
		if !ok || !match(r.vault, vault) || ref.PasswordSecret == "" {
			return false
		}
		if r.name == "" {
			return true
		}
		if !match(r.name, strings.ToLower(ref.PasswordSecret)) {
			return false
		}
		return ref.UsernameSecret == "" || match(r.name, strings.ToLower(ref.UsernameSecret))
	default:
		return ref.SecretName != "" && match(r.name, ref.SecretName)
	}
}

func match(pattern, name string) bool {
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

// vaultName returns the lower-case vault name of a reference's vault_name:
// the name itself, or the first label of an https URL on an Azure Key Vault
// domain (no user info, default port, no path). ok is false for any other
// URL.
func vaultName(v string) (name string, ok bool) {
	if !strings.Contains(v, "://") {
		return strings.ToLower(v), v != "" && !strings.ContainsAny(v, "/:@")
	}
	o, err := ParseOrigin(v)
	if err != nil || o.Scheme != "https" || o.Port != "443" {
		return "", false
	}
	if u, err := url.Parse(v); err != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	for _, suffix := range azureVaultSuffixes {
		if label, found := strings.CutSuffix(o.Host, suffix); found && label != "" && !strings.Contains(label, ".") {
			return label, true
		}
	}
	return "", false
}

func (p *Policy) secretRefused(ref protocol.SecretRef) *protocol.Error {
	msg := fmt.Sprintf("this agent's policy does not allow the secret %s; add a rule for it to policy.secrets in the agent config", refText(ref))
	if ref.Backend == protocol.BackendAzure && strings.Contains(ref.VaultName, "://") {
		if _, ok := vaultName(ref.VaultName); !ok {
			msg += " (a vault given by URL must be https://NAME.vault.azure.net or another Azure cloud's Key Vault domain)"
		}
	}
	return protocol.Errorf(protocol.CodeSecretNotAllowed, "%s", msg)
}

// refText is ref for a message: bounded, with any user info in a vault URL
// masked.
func refText(ref protocol.SecretRef) string {
	if ref.Backend == protocol.BackendAzure {
		return "azure:" + safeURL(ref.VaultName) + "/" + truncate(ref.PasswordSecret, 256)
	}
	return truncate(ref.String(), 512)
}

func kindList(kinds []protocol.JobKind) string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
