package secrets_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

func TestAzureResolve(t *testing.T) {
	t.Parallel()
	created := time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC)
	fake := secretstest.NewKeyVault(t)
	fake.Put(secretstest.KeyVaultSecret{Name: "gh-user", Value: "bot"})
	fake.Put(secretstest.KeyVaultSecret{Name: "gh-pat", Value: "old-value"})
	pat := fake.Put(secretstest.KeyVaultSecret{Name: "gh-pat", Value: canary, Created: created, Updated: created.Add(time.Hour)})
	cred := &secretstest.TokenCredential{TenantID: secretstest.AzureTenantID}
	log, logs := debugLogger(t)
	b := newAzureBackend(t, fake, cred, log, nil)

	c, err := b.Resolve(testContext(t), azureRef("platform-kv", "gh-user", "gh-pat"))
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if c.Password.Reveal() != canary || c.Username.Reveal() != "bot" {
		t.Errorf("got the wrong values (password is the canary: %v, username: %q)", c.Password.Reveal() == canary, c.Username.Reveal())
	}
	if !slices.Equal(c.KeysFound, []string{"username", "password"}) {
		t.Errorf("KeysFound = %q", c.KeysFound)
	}
	if c.VersionID != pat.Version {
		t.Errorf("VersionID = %q, want the password secret's version %q", c.VersionID, pat.Version)
	}
	if c.VersionCreated == nil || !c.VersionCreated.Equal(created) {
		t.Errorf("VersionCreated = %v, want %v", c.VersionCreated, created)
	}
	if p := cred.Problems(); len(p) > 0 {
		t.Errorf("the credential was asked wrongly: %q", p)
	}

	// The client is kept: a second Resolve needs no new challenge or token.
	c, err = b.Resolve(testContext(t), azureRef("platform-kv", "", "gh-pat"))
	if err != nil {
		t.Fatalf("second Resolve: %v", err)
	}
	if !slices.Equal(c.KeysFound, []string{"password"}) {
		t.Errorf("KeysFound = %q", c.KeysFound)
	}
	reqs := fake.Requests()
	var got []string
	for _, r := range reqs {
		got = append(got, fmt.Sprintf("%s/%s auth=%v", r.Name, r.Version, r.Authorized))
		if r.APIVersion == "" {
			t.Errorf("request %+v has no api-version", r)
		}
	}
	want := []string{"gh-pat/ auth=false", "gh-pat/ auth=true", "gh-user/ auth=true", "gh-pat/ auth=true"}
	if !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q (one challenge, then the token)", got, want)
	}
	if cred.Calls() != 1 {
		t.Errorf("the credential was asked %d times, want once (the token is reused)", cred.Calls())
	}
	checkCallLog(t, logs, "azure", 2, "ok")
}

// redirect sends every request to the fake vault, keeping its Host, so
// that the real vault URLs (https://NAME.vault.azure.net) and the real
// challenge verification run.
type redirect struct {
	to     *url.URL
	client *http.Client
}

func (r redirect) Do(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Host = req.URL.Host
	req.URL.Scheme, req.URL.Host = r.to.Scheme, r.to.Host
	return r.client.Do(req)
}

// TestAzureVaultURLs runs the agent's own vault URLs with challenge
// resource verification on, as in production: a vault name maps to the
// configured cloud's Key Vault domain, and a vault URL on that domain is
// taken as it is.
func TestAzureVaultURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cloud, vault, wantHost, resource string
	}{
		{"", "platform-kv", "platform-kv.vault.azure.net", "https://vault.azure.net"},
		{"public", "Platform-KV", "platform-kv.vault.azure.net", "https://vault.azure.net"},
		{"public", "https://platform-kv.vault.azure.net", "platform-kv.vault.azure.net", "https://vault.azure.net"},
		{"public", "https://platform-kv.vault.azure.net/", "platform-kv.vault.azure.net", "https://vault.azure.net"},
		{"usgov", "platform-kv", "platform-kv.vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"},
		{"china", "https://platform-kv.vault.azure.cn:443", "platform-kv.vault.azure.cn", "https://vault.azure.cn"},
	}
	for _, tt := range tests {
		t.Run(tt.cloud+" "+tt.vault, func(t *testing.T) {
			t.Parallel()
			fake := secretstest.NewKeyVault(t)
			fake.Resource = tt.resource
			fake.Put(secretstest.KeyVaultSecret{Name: "gh-pat", Value: canary})
			to, _ := url.Parse(fake.URL)
			var hosts []string
			cred := &secretstest.TokenCredential{Scope: tt.resource + "/.default"}
			b, err := secrets.NewAzure(secrets.AzureConfig{Cloud: tt.cloud}, secrets.AzureOptions{
				Credential: cred,
				Transport: transporterFunc(func(req *http.Request) (*http.Response, error) {
					hosts = append(hosts, req.URL.Host)
					return redirect{to: to, client: fake.Client()}.Do(req)
				}),
			})
			if err != nil {
				t.Fatal(err)
			}
			c, err := b.Resolve(testContext(t), azureRef(tt.vault, "", "gh-pat"))
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if c.Password.Reveal() != canary {
				t.Errorf("wrong value")
			}
			if p := cred.Problems(); len(p) > 0 {
				t.Errorf("the credential was asked wrongly: %q", p)
			}
			for _, h := range hosts {
				if h != tt.wantHost {
					t.Errorf("a request went to %s, want %s", h, tt.wantHost)
				}
			}
		})
	}
}

type transporterFunc func(*http.Request) (*http.Response, error)

func (f transporterFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

func TestAzureResolveErrors(t *testing.T) {
	t.Parallel()
	failAuthorized := func(e secretstest.KeyVaultError) func(*secretstest.KeyVault, *secretstest.TokenCredential) {
		return func(f *secretstest.KeyVault, _ *secretstest.TokenCredential) { f.FailAlways(e) }
	}
	tests := []struct {
		name       string
		setup      func(*secretstest.KeyVault, *secretstest.TokenCredential)
		ref        protocol.SecretRef
		code       protocol.ErrorCode
		want       []string
		authorized int // requests with the token the fake must get
		calls      int // all requests the fake must get
	}{
		{
			name: "password secret not found", ref: azureRef("platform-kv", "", "gh-missing"),
			code: protocol.CodeSecretNotFound, authorized: 1, calls: 2,
			want: []string{"the Key Vault platform-kv has no secret gh-missing (SecretNotFound); fix password_secret in the reference"},
		},
		{
			name: "username secret not found", ref: azureRef("platform-kv", "gh-nobody", "gh-pat"),
			code: protocol.CodeSecretNotFound, authorized: 2, calls: 3,
			want: []string{"has no secret gh-nobody (SecretNotFound); fix username_secret"},
		},
		{
			name: "forbidden by RBAC names the identity", setup: failAuthorized(secretstest.Forbidden()), ref: azureRef("platform-kv", "gh-user", "gh-pat"),
			code: protocol.CodeSecretAccessDenied, authorized: 1, calls: 2,
			want: []string{"the Key Vault platform-kv denied the agent's identity (appid=" + secretstest.AzureAppID + ", oid=" + secretstest.AzureObjectID + ") reading the secret gh-pat (Forbidden/ForbiddenByRbac)",
				"grant it the Key Vault Secrets User role on the vault platform-kv"},
		},
		{
			name: "forbidden by access policy",
			setup: failAuthorized(secretstest.KeyVaultError{Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByPolicy",
				Message: "The user, group or application 'appid=" + secretstest.AzureAppID + ";oid=" + secretstest.AzureObjectID + ";iss=https://sts.windows.net/x/' does not have secrets get permission on key vault 'platform-kv;location=westeurope'."}),
			ref: azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretAccessDenied, authorized: 1, calls: 2,
			want: []string{"(appid=" + secretstest.AzureAppID + ", oid=" + secretstest.AzureObjectID + ")", "access policies: add one with the secret Get permission"},
		},
		{
			name:  "forbidden by the firewall",
			setup: failAuthorized(secretstest.KeyVaultError{Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByFirewall", Message: "Client address is not authorized and caller is not a trusted service.\r\nClient address: 203.0.113.7"}),
			ref:   azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretAccessDenied, authorized: 1, calls: 2,
			want: []string{"the firewall of the Key Vault platform-kv refuses this machine's address", "private endpoint"},
		},
		{
			name: "disabled secret",
			setup: func(f *secretstest.KeyVault, _ *secretstest.TokenCredential) {
				f.Put(secretstest.KeyVaultSecret{Name: "gh-old", Value: canary, Disabled: true})
			},
			ref: azureRef("platform-kv", "", "gh-old"), code: protocol.CodeSecretNotFound, authorized: 1, calls: 2,
			want: []string{"the secret gh-old in the Key Vault platform-kv is disabled"},
		},
		{
			name:  "throttled: bounded retries",
			setup: failAuthorized(secretstest.KeyVaultError{Status: 429, Code: "Throttled", Message: "Request was not processed because too many requests were received."}),
			ref:   azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretBackendUnavailable, authorized: 3, calls: 4,
			want: []string{"the Key Vault platform-kv throttled reading the secret gh-pat (HTTP 429 Throttled)", "secrets.cache_ttl"},
		},
		{
			name:  "throttled with a long Retry-After: no retry",
			setup: failAuthorized(secretstest.KeyVaultError{Status: 429, Code: "Throttled", Message: "slow down", RetryAfter: "30"}),
			ref:   azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretBackendUnavailable, authorized: 1, calls: 2,
			want: []string{"HTTP 429 Throttled"},
		},
		{
			name:  "500: retried",
			setup: failAuthorized(secretstest.KeyVaultError{Status: 500, Code: "InternalServerError", Message: "oops"}),
			ref:   azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretBackendUnavailable, authorized: 3, calls: 4,
			want: []string{"the Key Vault platform-kv failed reading the secret gh-pat (HTTP 500 InternalServerError)"},
		},
		{
			name:  "bad request",
			setup: failAuthorized(secretstest.KeyVaultError{Status: 400, Code: "BadParameter", Message: "The request URI is not valid."}),
			ref:   azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeInvalidParams, authorized: 1, calls: 2,
			want: []string{"refused the request for the secret gh-pat (BadParameter: The request URI is not valid.)"},
		},
		{
			name: "credential fails",
			setup: func(_ *secretstest.KeyVault, c *secretstest.TokenCredential) {
				c.SetError(errors.New("ManagedIdentityCredential: no response from the IMDS endpoint"))
			},
			ref: azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretAccessDenied, authorized: 0, calls: 1,
			want: []string{"the agent cannot get a token for Azure Key Vault with its managed_identity credential: ManagedIdentityCredential: no response from the IMDS endpoint", "managed identity"},
		},
		{
			name:  "token refused",
			setup: func(_ *secretstest.KeyVault, c *secretstest.TokenCredential) { c.Token = "not-accepted" },
			ref:   azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretAccessDenied, authorized: 0, calls: 2,
			want: []string{"the Key Vault platform-kv rejected the token of the agent's managed_identity credential (Unauthorized"},
		},
		{
			name: "malformed challenge does not crash the agent",
			setup: func(f *secretstest.KeyVault, _ *secretstest.TokenCredential) {
				f.Fail(func(int, secretstest.KeyVaultRequest) *secretstest.KeyVaultError {
					return &secretstest.KeyVaultError{Status: 401, Code: "Unauthorized", Message: "no", Challenge: `Bearer authorization="https://login", resource="https://vault.azure.net"`}
				})
			},
			ref: azureRef("platform-kv", "", "gh-pat"), code: protocol.CodeSecretBackendUnavailable, authorized: 0, calls: 1,
			want: []string{"the Key Vault platform-kv sent an answer the Azure SDK could not handle"},
		},
		{
			name: "empty secret",
			setup: func(f *secretstest.KeyVault, _ *secretstest.TokenCredential) {
				f.Put(secretstest.KeyVaultSecret{Name: "gh-empty", Value: ""})
			},
			ref: azureRef("platform-kv", "", "gh-empty"), code: protocol.CodeSecretMalformed, authorized: 1, calls: 2,
			want: []string{"the secret gh-empty in the Key Vault platform-kv is empty"},
		},
		{
			name: "bad secret name", ref: azureRef("platform-kv", "", "gh_pat"), code: protocol.CodeInvalidParams,
			want: []string{`password_secret "gh_pat" is not a Key Vault secret name`},
		},
		{
			name: "bad vault name", ref: azureRef("kv", "", "gh-pat"), code: protocol.CodeInvalidParams,
			want: []string{`vault_name "kv" is not a Key Vault name`},
		},
		{
			name: "vault URL on another domain", ref: azureRef("https://platform-kv.evil.example", "", "gh-pat"), code: protocol.CodeInvalidParams,
			want: []string{`vault_name "https://platform-kv.evil.example" is not the https URL of a Key Vault in the public cloud (https://NAME.vault.azure.net)`},
		},
		{
			name: "vault URL of another cloud", ref: azureRef("https://platform-kv.vault.azure.cn", "", "gh-pat"), code: protocol.CodeInvalidParams,
			want: []string{"secrets.azure.cloud"},
		},
		{
			name: "vault URL over http", ref: azureRef("http://platform-kv.vault.azure.net", "", "gh-pat"), code: protocol.CodeInvalidParams,
			want: []string{"is not the https URL of a Key Vault"},
		},
		{
			name: "vault URL with user info", ref: azureRef("https://u:"+canary+"@platform-kv.vault.azure.net", "", "gh-pat"), code: protocol.CodeInvalidParams,
			want: []string{"is not the https URL of a Key Vault"},
		},
		{
			name: "reference to another backend", ref: protocol.SecretRef{Backend: "aws", SecretName: "x", PasswordKey: "y"}, code: protocol.CodeInvalidParams,
			want: []string{"the azure secret backend cannot resolve aws:x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := secretstest.NewKeyVault(t)
			fake.Put(secretstest.KeyVaultSecret{Name: "gh-user", Value: "bot"})
			fake.Put(secretstest.KeyVaultSecret{Name: "gh-pat", Value: canary})
			cred := &secretstest.TokenCredential{TenantID: secretstest.AzureTenantID}
			if tt.setup != nil {
				tt.setup(fake, cred)
			}
			log, logs := debugLogger(t)
			// The vault URLs are the real ones, mapped to the fake only
			// for names that pass the checks.
			b := newAzureBackend(t, fake, cred, log, nil)
			c, err := b.Resolve(testContext(t), tt.ref)
			checkError(t, err, tt.code, tt.want...)
			if !c.Password.Empty() || c.KeysFound != nil {
				t.Errorf("a failed Resolve returned credentials: %+v", c)
			}
			authorized := 0
			for _, r := range fake.Requests() {
				if r.Authorized {
					authorized++
				}
			}
			if authorized != tt.authorized || fake.Calls() != tt.calls {
				t.Errorf("the fake got %d requests, %d with the token; want %d, %d", fake.Calls(), authorized, tt.calls, tt.authorized)
			}
			if tt.calls > 0 {
				checkCallLog(t, logs, "azure", 1, string(tt.code))
			}
			if p := cred.Problems(); len(p) > 0 {
				t.Errorf("the credential was asked wrongly: %q", p)
			}
		})
	}
}

func TestAzureDeadline(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewKeyVault(t)
	fake.Put(secretstest.KeyVaultSecret{Name: "gh-pat", Value: canary})
	fake.Delay(10 * time.Second)
	log, logs := debugLogger(t)
	b := newAzureBackend(t, fake, &secretstest.TokenCredential{}, log, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Resolve(ctx, azureRef("platform-kv", "", "gh-pat"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Resolve past the deadline = %v, want context.DeadlineExceeded (the runner reports timeout)", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Resolve returned %s after the start, want promptly after the 300ms deadline", elapsed)
	}
	checkCallLog(t, logs, "azure", 1, "timeout")
}

func TestAzureUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	fake := secretstest.NewKeyVault(t)
	b, err := secrets.NewAzure(secrets.AzureConfig{MaxAttempts: 2, MaxBackoff: 10 * time.Millisecond}, secrets.AzureOptions{
		Credential: &secretstest.TokenCredential{}, Transport: fake.Client(),
		VaultURL:                             func(string) string { return "https://" + addr },
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Resolve(testContext(t), azureRef("platform-kv", "", "gh-pat"))
	checkError(t, err, protocol.CodeSecretBackendUnavailable, "cannot reach the Key Vault platform-kv", "connection refused")
}

func TestAzureInfo(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewKeyVault(t)
	b := newAzureBackend(t, fake, &secretstest.TokenCredential{}, nil, func(c *secrets.AzureConfig) {
		c.Cloud, c.ClientID = "usgov", "4c1d2f3e-0000-4000-8000-000000000001"
	})
	info := b.Info()
	want := map[string]string{"cloud": "usgov", "credential": "managed_identity", "client_id": "4c1d2f3e-0000-4000-8000-000000000001"}
	if b.Name() != "azure" || info.Name != "azure" || fmt.Sprint(info.Settings) != fmt.Sprint(want) {
		t.Errorf("Info() = %+v, want azure with %v", info, want)
	}
}

// TestNewAzureCredentials builds each kind of credential from the config
// (no call to Azure is made) and checks the refusals name the setting.
func TestNewAzureCredentials(t *testing.T) {
	t.Parallel()
	const tenant, client = "72f988bf-86f1-41af-91ab-2d7cd011db47", "4c1d2f3e-0000-4000-8000-000000000001"
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secretFile := write("client-secret", []byte(canary+"\n"), 0o600)
	openSecretFile := write("client-secret-open", []byte(canary), 0o644)
	certFile := write("cert.pem", testCertificate(t), 0o600)
	notCert := write("not-a-cert.pem", []byte("-----BEGIN CERTIFICATE-----\n"+canary+"\n-----END CERTIFICATE-----\n"), 0o600)
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	tests := []struct {
		name string
		c    secrets.AzureConfig
		env  func(string) string
		want string // "" for success
	}{
		{name: "managed identity", c: secrets.AzureConfig{}},
		{name: "user-assigned managed identity", c: secrets.AzureConfig{Credential: "managed_identity", ClientID: client}},
		{name: "default", c: secrets.AzureConfig{Credential: "default", TenantID: tenant}},
		{name: "client secret from a file", c: secrets.AzureConfig{Credential: "client_secret", TenantID: tenant, ClientID: client, ClientSecretFile: secretFile}},
		{name: "client secret from the environment", c: secrets.AzureConfig{Credential: "client_secret"},
			env: env("AZURE_TENANT_ID", tenant, "AZURE_CLIENT_ID", client, "AZURE_CLIENT_SECRET", canary)},
		{name: "client secret missing", c: secrets.AzureConfig{Credential: "client_secret", TenantID: tenant, ClientID: client},
			want: "secrets.azure.client_secret_file: required for credential client_secret (or set AZURE_CLIENT_SECRET)"},
		{name: "client secret file readable by others", c: secrets.AzureConfig{Credential: "client_secret", TenantID: tenant, ClientID: client, ClientSecretFile: openSecretFile},
			want: "can be read or written by group or others (mode 0644)"},
		{name: "no tenant", c: secrets.AzureConfig{Credential: "client_secret", ClientID: client}, env: env("AZURE_CLIENT_SECRET", canary),
			want: "secrets.azure.tenant_id: required for credential client_secret"},
		{name: "no client id", c: secrets.AzureConfig{Credential: "client_certificate", TenantID: tenant, ClientCertificateFile: certFile},
			want: "secrets.azure.client_id: required for credential client_certificate"},
		{name: "client certificate", c: secrets.AzureConfig{Credential: "client_certificate", TenantID: tenant, ClientID: client, ClientCertificateFile: certFile}},
		{name: "client certificate from the environment", c: secrets.AzureConfig{Credential: "client_certificate", TenantID: tenant, ClientID: client},
			env: env("AZURE_CLIENT_CERTIFICATE_PATH", certFile)},
		{name: "not a certificate", c: secrets.AzureConfig{Credential: "client_certificate", TenantID: tenant, ClientID: client, ClientCertificateFile: notCert},
			want: "secrets.azure.client_certificate_file: " + notCert + " holds no certificate with a private key"},
		{name: "unknown kind", c: secrets.AzureConfig{Credential: "password"}, want: `secrets.azure.credential: "password" is not managed_identity, client_secret, client_certificate or default`},
		{name: "unknown cloud", c: secrets.AzureConfig{Cloud: "germany"}, want: `secrets.azure.cloud: "germany" is not public, usgov or china`},
		{name: "bad client id", c: secrets.AzureConfig{ClientID: "me"}, want: `secrets.azure.client_id: "me" is not a client id`},
		{name: "secret file for another kind", c: secrets.AzureConfig{ClientSecretFile: secretFile}, want: "secrets.azure.client_secret_file: only for credential client_secret"},
		{name: "too many attempts", c: secrets.AzureConfig{MaxAttempts: 20}, want: "secrets.azure.max_attempts: 20 is outside 1..10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			getenv := tt.env
			if getenv == nil {
				getenv = env()
			}
			b, err := secrets.NewAzure(tt.c, secrets.AzureOptions{Getenv: getenv})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewAzure: %v", err)
				}
				if b.Info().Settings["credential"] == "" {
					t.Errorf("Info() = %+v", b.Info())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewAzure = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), canary) {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}

// testCertificate returns a self-signed certificate and its RSA key in PEM.
func testCertificate(t *testing.T) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...)
}
