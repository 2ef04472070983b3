package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// Azure credential kinds: secrets.azure.credential.
const (
	// AzureManagedIdentity is the VM's managed identity (system-assigned,
	// or user-assigned by client_id), also on Azure Arc-enabled servers.
	AzureManagedIdentity = "managed_identity"
	// AzureClientSecret is a service principal with a client secret.
	AzureClientSecret = "client_secret"
	// AzureClientCertificate is a service principal with a certificate.
	AzureClientCertificate = "client_certificate"
	// AzureDefault is the SDK's DefaultAzureCredential chain
	// (environment, workload identity, managed identity, Azure CLI, ...).
	AzureDefault = "default"
)

// Azure clouds: secrets.azure.cloud.
const (
	AzurePublic = "public"
	AzureUSGov  = "usgov"
	AzureChina  = "china"
)

// azureClouds maps a cloud to its Key Vault DNS suffix and its
// configuration (the Entra ID authority for the credentials).
var azureClouds = map[string]struct {
	suffix string
	config cloud.Configuration
}{
	AzurePublic: {".vault.azure.net", cloud.AzurePublic},
	AzureUSGov:  {".vault.usgovcloudapi.net", cloud.AzureGovernment},
	AzureChina:  {".vault.azure.cn", cloud.AzureChina},
}

// Environment variables that hold a service principal's secret material;
// the YAML never does.
const (
	envAzureClientSecret       = "AZURE_CLIENT_SECRET"
	envAzureCertificatePath    = "AZURE_CLIENT_CERTIFICATE_PATH"
	envAzureCertificatePass    = "AZURE_CLIENT_CERTIFICATE_PASSWORD"
	envAzureTenantID           = "AZURE_TENANT_ID"
	envAzureClientID           = "AZURE_CLIENT_ID"
	maxAzureCredentialFileSize = 1 << 20
)

// AzureConfig configures the Azure Key Vault backend: secrets.azure in the
// agent config (deploy/agent.example.yaml documents each setting).
type AzureConfig struct {
	// Credential is how the agent authenticates to Key Vault:
	// managed_identity (default), client_secret, client_certificate or
	// default.
	Credential string `yaml:"credential"`
	// ClientID is a user-assigned managed identity's client id
	// (managed_identity), or the service principal's application id
	// (client_secret, client_certificate; default AZURE_CLIENT_ID).
	ClientID string `yaml:"client_id"`
	// TenantID is the service principal's tenant (client_secret,
	// client_certificate: required, default AZURE_TENANT_ID; default:
	// optional).
	TenantID string `yaml:"tenant_id"`
	// ClientSecretFile is a file (mode 0600) holding the client secret
	// (client_secret); default: the AZURE_CLIENT_SECRET variable.
	ClientSecretFile string `yaml:"client_secret_file"`
	// ClientCertificateFile is a PEM or PKCS#12 file (mode 0600) with the
	// certificate and its private key (client_certificate); default: the
	// file AZURE_CLIENT_CERTIFICATE_PATH names. A PKCS#12 password comes
	// from AZURE_CLIENT_CERTIFICATE_PASSWORD.
	ClientCertificateFile string `yaml:"client_certificate_file"`
	// Cloud is public (default), usgov or china: it picks the Key Vault
	// domain a vault name maps to and the Entra ID authority.
	Cloud string `yaml:"cloud"`
	// MaxAttempts bounds the attempts of one call, retries included
	// (429, 5xx, network errors); default 3, at most 10.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxBackoff bounds the wait between attempts, and a Retry-After longer
	// than it ends the retries; default 1s, at most 20s.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// SetDefaults fills in the defaults of unset settings.
func (c *AzureConfig) SetDefaults() {
	if c.Credential == "" {
		c.Credential = AzureManagedIdentity
	}
	if c.Cloud == "" {
		c.Cloud = AzurePublic
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
}

var (
	azureGUID   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	azureDomain = regexp.MustCompile(`^[a-zA-Z0-9.-]{1,253}$`) // a tenant given by its domain
)

// Validate checks the settings (after SetDefaults) and names the one that
// is wrong. It does not read the environment or the files.
func (c *AzureConfig) Validate() error {
	switch c.Credential {
	case AzureManagedIdentity, AzureClientSecret, AzureClientCertificate, AzureDefault:
	default:
		return fmt.Errorf("secrets.azure.credential: %q is not managed_identity, client_secret, client_certificate or default", clip(c.Credential, 64))
	}
	if _, ok := azureClouds[c.Cloud]; !ok {
		return fmt.Errorf("secrets.azure.cloud: %q is not public, usgov or china", clip(c.Cloud, 64))
	}
	if c.ClientID != "" && !azureGUID.MatchString(c.ClientID) {
		return fmt.Errorf("secrets.azure.client_id: %q is not a client id such as 00000000-0000-0000-0000-000000000000", clip(c.ClientID, 64))
	}
	if c.TenantID != "" && !azureGUID.MatchString(c.TenantID) && !azureDomain.MatchString(c.TenantID) {
		return fmt.Errorf("secrets.azure.tenant_id: %q is not a tenant id or domain", clip(c.TenantID, 64))
	}
	if c.ClientSecretFile != "" && c.Credential != AzureClientSecret {
		return errors.New("secrets.azure.client_secret_file: only for credential client_secret")
	}
	if c.ClientCertificateFile != "" && c.Credential != AzureClientCertificate {
		return errors.New("secrets.azure.client_certificate_file: only for credential client_certificate")
	}
	switch {
	case c.MaxAttempts < 1 || c.MaxAttempts > maxMaxAttempts:
		return fmt.Errorf("secrets.azure.max_attempts: %d is outside 1..%d", c.MaxAttempts, maxMaxAttempts)
	case c.MaxBackoff < 0 || c.MaxBackoff > maxMaxBackoff:
		return fmt.Errorf("secrets.azure.max_backoff: %s is outside 0s..%s", c.MaxBackoff, maxMaxBackoff)
	}
	return nil
}

// AzureOptions are the Azure backend's dependencies. The zero value is what
// the agent uses; the other fields are for tests.
type AzureOptions struct {
	// Credential, when set, replaces the credential built from the config.
	Credential azcore.TokenCredential
	// Transport sends the HTTP requests to Key Vault and, for a credential
	// built from the config, to Entra ID; default: azcore's (which honors
	// HTTPS_PROXY). Tests use the fake vault's TLS client.
	Transport policy.Transporter
	// VaultURL maps a vault name to its URL; default
	// https://NAME.vault.azure.net (or the configured cloud's domain).
	// Tests map every name to the fake vault.
	VaultURL func(vaultName string) string
	// DisableChallengeResourceVerification lets a vault whose host is not
	// on a Key Vault domain (a fake on 127.0.0.1) send the challenge. Tests
	// only: the agent leaves it false, so that a token is only ever sent to
	// a Key Vault domain.
	DisableChallengeResourceVerification bool
	// Getenv reads AZURE_* variables; default os.Getenv.
	Getenv func(string) string
	// Logger receives one debug line per call; default: none.
	Logger *zap.Logger
}

// Azure is the Azure Key Vault backend. A reference names a vault
// (vault_name: its name, or its https URL on the configured cloud's Key
// Vault domain) and two secrets in it (username_secret, optional, and
// password_secret), each read at its current version.
//
// One Key Vault client is kept per vault, so the authentication challenge
// and the token are reused. Azure is safe for concurrent use.
type Azure struct {
	cfg       AzureConfig
	cred      azcore.TokenCredential
	opts      azsecrets.ClientOptions
	vaultURL  func(string) string
	suffix    string
	credLabel string // the credential, for messages: "managed_identity (client id …)"
	log       *zap.Logger

	mu      sync.Mutex // guards the field below
	clients map[string]*azsecrets.Client
}

var _ Backend = (*Azure)(nil)

// maxAzureClients bounds the cached Key Vault clients; past it the cache
// starts over.
const maxAzureClients = 256

// NewAzure builds the Azure backend. It builds the credential (reading a
// service principal's secret or certificate from its file or the
// environment) but makes no call to Azure; a wrong setting is an error
// that names it.
func NewAzure(c AzureConfig, o AzureOptions) (*Azure, error) {
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cl := azureClouds[c.Cloud]
	co := azcore.ClientOptions{
		Cloud: cl.config,
		Retry: policy.RetryOptions{
			MaxRetries:    int32(c.MaxAttempts - 1),
			RetryDelay:    firstBackoff,
			MaxRetryDelay: c.MaxBackoff,
		},
		Transport: o.Transport,
	}
	if c.MaxAttempts == 1 {
		co.Retry.MaxRetries = -1 // azcore: -1 means no retries, 0 its default
	}
	cred := o.Credential
	if cred == nil {
		var err error
		if cred, err = newAzureCredential(&c, getenv, co); err != nil {
			return nil, err
		}
	}
	z := &Azure{
		cfg: c, suffix: cl.suffix, vaultURL: o.VaultURL, log: o.Logger, credLabel: c.Credential,
		opts: azsecrets.ClientOptions{
			ClientOptions:                        co,
			DisableChallengeResourceVerification: o.DisableChallengeResourceVerification,
		},
		clients: map[string]*azsecrets.Client{},
	}
	if z.log == nil {
		z.log = zap.NewNop()
	}
	if c.ClientID != "" {
		z.credLabel += " (client id " + c.ClientID + ")"
	}
	z.cred = markedCredential{cred}
	return z, nil
}

// newAzureCredential builds the credential c names. It may fill c's client
// and tenant ids from the environment.
func newAzureCredential(c *AzureConfig, getenv func(string) string, co azcore.ClientOptions) (azcore.TokenCredential, error) {
	switch c.Credential {
	case AzureManagedIdentity:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		if c.ClientID != "" {
			o.ID = azidentity.ClientID(c.ClientID)
		}
		cred, err := azidentity.NewManagedIdentityCredential(o)
		if err != nil {
			return nil, fmt.Errorf("secrets.azure: the managed identity credential: %w", err)
		}
		return cred, nil
	case AzureDefault:
		cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: co, TenantID: c.TenantID})
		if err != nil {
			return nil, fmt.Errorf("secrets.azure: the default credential: %w", err)
		}
		return cred, nil
	}
	// A service principal.
	if c.TenantID == "" {
		c.TenantID = getenv(envAzureTenantID)
	}
	if c.ClientID == "" {
		c.ClientID = getenv(envAzureClientID)
	}
	switch {
	case c.TenantID == "":
		return nil, fmt.Errorf("secrets.azure.tenant_id: required for credential %s (or set %s)", c.Credential, envAzureTenantID)
	case c.ClientID == "":
		return nil, fmt.Errorf("secrets.azure.client_id: required for credential %s (or set %s)", c.Credential, envAzureClientID)
	}
	if c.Credential == AzureClientSecret {
		secret, err := readClientSecret(c.ClientSecretFile, getenv)
		if err != nil {
			return nil, err
		}
		cred, err := azidentity.NewClientSecretCredential(c.TenantID, c.ClientID, secret.Reveal(), &azidentity.ClientSecretCredentialOptions{ClientOptions: co})
		if err != nil {
			return nil, fmt.Errorf("secrets.azure: the client secret credential: %w", err)
		}
		return cred, nil
	}
	path, setting := c.ClientCertificateFile, "secrets.azure.client_certificate_file"
	if path == "" {
		path, setting = getenv(envAzureCertificatePath), envAzureCertificatePath
	}
	if path == "" {
		return nil, fmt.Errorf("secrets.azure.client_certificate_file: required for credential client_certificate (or set %s)", envAzureCertificatePath)
	}
	data, err := readCredentialFile(path, setting)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	var password []byte
	if p := getenv(envAzureCertificatePass); p != "" {
		password = []byte(p)
	}
	certs, key, err := azidentity.ParseCertificates(data, password)
	if err != nil {
		return nil, fmt.Errorf("%s: %s holds no certificate with a private key this agent can use (PEM or PKCS#12; a PKCS#12 password goes in %s): %v",
			setting, path, envAzureCertificatePass, err)
	}
	cred, err := azidentity.NewClientCertificateCredential(c.TenantID, c.ClientID, certs, key, &azidentity.ClientCertificateCredentialOptions{ClientOptions: co})
	if err != nil {
		return nil, fmt.Errorf("secrets.azure: the client certificate credential: %w", err)
	}
	return cred, nil
}

// readClientSecret reads a service principal's secret from its file, or
// else from AZURE_CLIENT_SECRET.
func readClientSecret(path string, getenv func(string) string) (redact.Secret, error) {
	if path == "" {
		s := getenv(envAzureClientSecret)
		if s == "" {
			return redact.Secret{}, fmt.Errorf("secrets.azure.client_secret_file: required for credential client_secret (or set %s)", envAzureClientSecret)
		}
		return redact.New(s), nil
	}
	data, err := readCredentialFile(path, "secrets.azure.client_secret_file")
	if err != nil {
		return redact.Secret{}, err
	}
	defer clear(data)
	s := strings.TrimSpace(string(data))
	if s == "" {
		return redact.Secret{}, fmt.Errorf("secrets.azure.client_secret_file: %s is empty", path)
	}
	return redact.New(s), nil
}

// readCredentialFile reads a file that holds secret material: it must not
// be readable or writable by group or others (on Unix).
func readCredentialFile(path, setting string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	if perm := st.Mode().Perm(); goruntime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: %s can be read or written by group or others (mode %04o); run chmod 600 %s", setting, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxAzureCredentialFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	if len(data) > maxAzureCredentialFileSize {
		clear(data)
		return nil, fmt.Errorf("%s: %s is over %d bytes", setting, path, maxAzureCredentialFileSize)
	}
	return data, nil
}

// markedCredential marks the errors of getting a token, so that they are
// told apart from the errors of the call itself.
type markedCredential struct{ c azcore.TokenCredential }

func (m markedCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	t, err := m.c.GetToken(ctx, o)
	if err != nil {
		return t, &tokenError{err: err}
	}
	return t, nil
}

// tokenError is a failure to get a token for a call.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return "get token: " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// Name returns "azure".
func (z *Azure) Name() string { return protocol.BackendAzure }

// Info returns the backend's non-secret settings: cloud and credential,
// and tenant_id and client_id when set.
func (z *Azure) Info() protocol.BackendInfo {
	s := map[string]string{"cloud": z.cfg.Cloud, "credential": z.cfg.Credential}
	if z.cfg.TenantID != "" {
		s["tenant_id"] = z.cfg.TenantID
	}
	if z.cfg.ClientID != "" {
		s["client_id"] = z.cfg.ClientID
	}
	return protocol.BackendInfo{Name: protocol.BackendAzure, Settings: s}
}

var (
	// Key Vault names: 3-24 letters, digits and hyphens, starting with a
	// letter, ending with a letter or digit, no two hyphens in a row.
	azureVaultName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$`)
	// Secret names: 1-127 letters, digits and hyphens.
	azureSecretName = regexp.MustCompile(`^[a-zA-Z0-9-]{1,127}$`)
)

// Resolve reads the two secrets ref names from its vault. See the package
// doc for the errors.
func (z *Azure) Resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, error) {
	if ref.Backend != protocol.BackendAzure {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
			"the azure secret backend cannot resolve %s: it names the %s backend", clip(ref.String(), maxNameText), ref.Backend)
	}
	if ref.VaultName == "" || ref.PasswordSecret == "" {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
			"a reference to the azure secret backend needs vault_name and password_secret")
	}
	for _, f := range []struct{ setting, v string }{{"password_secret", ref.PasswordSecret}, {"username_secret", ref.UsernameSecret}} {
		if f.v != "" && !azureSecretName.MatchString(f.v) {
			return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
				"%s %q is not a Key Vault secret name (1 to 127 letters, digits and hyphens)", f.setting, clip(f.v, 128))
		}
	}
	vault, perr := z.vault(ref.VaultName)
	if perr != nil {
		return Credentials{}, perr
	}
	if err := ctx.Err(); err != nil {
		return Credentials{}, err
	}
	start := time.Now()
	c, detail, err := z.resolve(ctx, ref, vault)
	logCall(z.log, protocol.BackendAzure, ref, start, err, detail)
	return c, err
}

// vault returns the vault's URL for a reference's vault_name.
func (z *Azure) vault(name string) (string, *protocol.Error) {
	if !strings.Contains(name, "://") {
		if !azureVaultName.MatchString(name) || strings.Contains(name, "--") {
			return "", protocol.Errorf(protocol.CodeInvalidParams,
				"vault_name %q is not a Key Vault name (3 to 24 letters, digits and hyphens, starting with a letter) or its https URL", clip(name, 128))
		}
		if z.vaultURL != nil {
			return z.vaultURL(name), nil
		}
		return "https://" + strings.ToLower(name) + z.suffix, nil
	}
	u, err := url.Parse(name)
	bad := err != nil || u.Scheme != "https" || u.User != nil || (u.Port() != "" && u.Port() != "443") ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != ""
	if !bad {
		label, found := strings.CutSuffix(strings.ToLower(u.Hostname()), z.suffix)
		bad = !found || !azureVaultName.MatchString(label) || strings.Contains(label, "--")
	}
	if bad {
		return "", protocol.Errorf(protocol.CodeInvalidParams,
			"vault_name %q is not the https URL of a Key Vault in the %s cloud (https://NAME%s); give the vault's name, or set secrets.azure.cloud in the agent config",
			clip(safeURLText(name), 256), z.cfg.Cloud, z.suffix)
	}
	return "https://" + strings.ToLower(u.Hostname()), nil
}

// safeURLText is a URL for a message without its user info.
func safeURLText(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			return "…" + raw[i:]
		}
		return raw
	}
	return u.Redacted()
}

// client returns the cached Key Vault client for a vault URL.
func (z *Azure) client(vaultURL string) (*azsecrets.Client, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if c := z.clients[vaultURL]; c != nil {
		return c, nil
	}
	c, err := azsecrets.NewClient(vaultURL, z.cred, &z.opts)
	if err != nil {
		return nil, err
	}
	if len(z.clients) >= maxAzureClients {
		clear(z.clients)
	}
	z.clients[vaultURL] = c
	return c, nil
}

// resolve also returns the SDK's error text for the log, if any.
func (z *Azure) resolve(ctx context.Context, ref protocol.SecretRef, vaultURL string) (Credentials, string, error) {
	client, err := z.client(vaultURL)
	if err != nil {
		return Credentials{}, err.Error(), protocol.Errorf(protocol.CodeInvalidParams,
			"the vault URL %s cannot be used: %s", clip(vaultURL, 256), clip(err.Error(), maxServerText))
	}
	pw, detail, err := z.get(ctx, client, ref, ref.PasswordSecret, "password_secret")
	if err != nil {
		return Credentials{}, detail, err
	}
	c := Credentials{Password: pw.value}
	if pw.id != nil {
		c.VersionID = pw.id.Version()
	}
	if a := pw.attrs; a != nil {
		switch {
		case a.Created != nil:
			t := a.Created.UTC()
			c.VersionCreated = &t
		case a.Updated != nil:
			t := a.Updated.UTC()
			c.VersionCreated = &t
		}
	}
	if ref.UsernameSecret != "" {
		user, detail, err := z.get(ctx, client, ref, ref.UsernameSecret, "username_secret")
		if err != nil {
			return Credentials{}, detail, err
		}
		c.Username = user.value
		c.KeysFound = append(c.KeysFound, KeyUsername)
	}
	c.KeysFound = append(c.KeysFound, KeyPassword)
	return c, "", nil
}

// kvSecret is what get read of one secret.
type kvSecret struct {
	value redact.Secret
	id    *azsecrets.ID
	attrs *azsecrets.SecretAttributes
}

// get reads the current version of one secret.
func (z *Azure) get(ctx context.Context, client *azsecrets.Client, ref protocol.SecretRef, name, setting string) (s kvSecret, detail string, err error) {
	defer func() {
		// The SDK's challenge parser indexes into the header; a vault
		// that sends a malformed challenge must not bring the agent down.
		if r := recover(); r != nil {
			s, detail = kvSecret{}, fmt.Sprint(r)
			err = protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"the Key Vault %s sent an answer the Azure SDK could not handle (a malformed authentication challenge?); check that vault_name names a Key Vault", clip(ref.VaultName, maxNameText))
		}
	}()
	resp, err := client.GetSecret(ctx, name, "", nil)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return kvSecret{}, err.Error(), ctxErr
		}
		return kvSecret{}, err.Error(), z.callError(ref, name, setting, err)
	}
	if resp.Value == nil || *resp.Value == "" {
		return kvSecret{}, "", protocol.Errorf(protocol.CodeSecretMalformed,
			"the secret %s in the Key Vault %s is empty", name, clip(ref.VaultName, maxNameText))
	}
	return kvSecret{value: redact.New(*resp.Value), id: resp.ID, attrs: resp.Attributes}, "", nil
}

// kvErrorBody is Key Vault's error shape.
type kvErrorBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

// Key Vault names the caller in its 403 messages: "appid=…;oid=…".
var azureCaller = regexp.MustCompile(`\b(appid|oid)=([0-9a-fA-F-]{36})`)

// callError turns an SDK error (the context still alive) into a
// *protocol.Error whose message says what to change. It never quotes a
// value: a failed call carries none.
func (z *Azure) callError(ref protocol.SecretRef, name, setting string, err error) *protocol.Error {
	vault := clip(ref.VaultName, maxNameText)
	var te *tokenError
	if errors.As(err, &te) {
		return protocol.Errorf(protocol.CodeSecretAccessDenied,
			"the agent cannot get a token for Azure Key Vault with its %s credential: %s; %s",
			z.credLabel, clip(tokenReason(te.err), maxServerText), z.credentialHint())
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		var ne net.Error
		if errors.As(err, &ne) {
			return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"cannot reach the Key Vault %s (%d attempts at most): %s; check the network path from this machine (DNS, proxy, firewall, private endpoint)",
				vault, z.cfg.MaxAttempts, clip(transportReason(err), maxServerText))
		}
		return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"reading the secret %s from the Key Vault %s failed: %s", name, vault, clip(err.Error(), maxServerText))
	}
	var body kvErrorBody
	inner := ""
	msg := ""
	if re.RawResponse != nil {
		if b, rerr := runtime.Payload(re.RawResponse); rerr == nil && json.Unmarshal(b, &body) == nil {
			msg = body.Error.Message
			if body.Error.InnerError != nil {
				inner = body.Error.InnerError.Code
			}
		}
	}
	code := clip(re.ErrorCode, 80)
	if code == "" {
		code = clip(body.Error.Code, 80)
	}
	codes := code
	if inner != "" {
		codes += "/" + clip(inner, 80)
	}
	switch status := re.StatusCode; {
	case status == http.StatusNotFound:
		return protocol.Errorf(protocol.CodeSecretNotFound,
			"the Key Vault %s has no secret %s (%s); fix %s in the reference, or recover the secret if it was deleted",
			vault, name, codes, setting)
	case status == http.StatusForbidden && inner == "SecretDisabled":
		return protocol.Errorf(protocol.CodeSecretNotFound,
			"the secret %s in the Key Vault %s is disabled; enable it, or fix %s in the reference", name, vault, setting)
	case status == http.StatusForbidden && inner == "ForbiddenByFirewall":
		return protocol.Errorf(protocol.CodeSecretAccessDenied,
			"the firewall of the Key Vault %s refuses this machine's address (%s); allow its network in the vault's networking settings, or reach the vault through a private endpoint",
			vault, codes)
	case status == http.StatusForbidden:
		fix := fmt.Sprintf("grant it the Key Vault Secrets User role on the vault %s (or on the secret)", vault)
		if inner == "ForbiddenByPolicy" || inner == "AccessDenied" {
			fix = fmt.Sprintf("the vault %s uses access policies: add one with the secret Get permission for it", vault)
		}
		return protocol.Errorf(protocol.CodeSecretAccessDenied,
			"the Key Vault %s denied the agent's identity%s reading the secret %s (%s); %s",
			vault, callerText(msg, z.credLabel), name, codes, fix)
	case status == http.StatusUnauthorized:
		return protocol.Errorf(protocol.CodeSecretAccessDenied,
			"the Key Vault %s rejected the token of the agent's %s credential (%s: %s); check that the identity belongs to the vault's tenant",
			vault, z.credLabel, codes, clip(msg, maxServerText))
	case status == http.StatusTooManyRequests:
		return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the Key Vault %s throttled reading the secret %s (HTTP 429 %s) after %d attempts at most; try again later, or let the agent reuse values with secrets.cache_ttl",
			vault, name, codes, z.cfg.MaxAttempts)
	case status >= 500:
		return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the Key Vault %s failed reading the secret %s (HTTP %d %s) after %d attempts at most; try again later",
			vault, name, status, codes, z.cfg.MaxAttempts)
	case status == http.StatusBadRequest:
		return protocol.Errorf(protocol.CodeInvalidParams,
			"the Key Vault %s refused the request for the secret %s (%s: %s); fix the reference",
			vault, name, codes, clip(msg, maxServerText))
	default:
		return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
			"the Key Vault %s answered HTTP %d %s reading the secret %s", vault, status, codes, name)
	}
}

// callerText names the identity a 403 message names, or else the
// credential.
func callerText(msg, credLabel string) string {
	var ids []string
	seen := map[string]bool{}
	for _, m := range azureCaller.FindAllStringSubmatch(msg, 4) {
		if !seen[m[1]] {
			seen[m[1]] = true
			ids = append(ids, m[1]+"="+m[2])
		}
	}
	if len(ids) > 0 {
		return " (" + strings.Join(ids, ", ") + ")"
	}
	return " (" + credLabel + " credential)"
}

// credentialHint says what to check for the credential kind.
func (z *Azure) credentialHint() string {
	switch z.cfg.Credential {
	case AzureManagedIdentity:
		return "check that this VM or Azure Arc-enabled server has the managed identity (secrets.azure.client_id for a user-assigned one)"
	case AzureClientSecret:
		return "check secrets.azure.tenant_id, secrets.azure.client_id and the client secret (secrets.azure.client_secret_file or AZURE_CLIENT_SECRET)"
	case AzureClientCertificate:
		return "check secrets.azure.tenant_id, secrets.azure.client_id and the certificate registered for the application"
	}
	return "the default credential tries the environment (AZURE_*), workload identity, the managed identity and the Azure CLI; name one in secrets.azure.credential"
}

// tokenReason is the useful part of a credential's error: Entra ID's error
// and the first line of its description, or the error's first line.
func tokenReason(err error) string {
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) && afe.RawResponse != nil {
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if b, rerr := runtime.Payload(afe.RawResponse); rerr == nil && json.Unmarshal(b, &body) == nil && body.Error != "" {
			desc, _, _ := strings.Cut(body.Description, "\n")
			desc, _, _ = strings.Cut(desc, " Trace ID:")
			return fmt.Sprintf("HTTP %d %s: %s", afe.RawResponse.StatusCode, body.Error, desc)
		}
		return fmt.Sprintf("HTTP %d from the identity endpoint", afe.RawResponse.StatusCode)
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	return first
}
