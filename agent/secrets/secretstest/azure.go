package secretstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Fake Azure identities.
const (
	// AzureTenantID is the tenant the fake vault's challenge names.
	AzureTenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	// AzureScope is the scope the Key Vault challenge leads to.
	AzureScope = "https://vault.azure.net/.default"
	// AzureToken is the bearer token the fake vault accepts, and the one
	// [TokenCredential] hands out.
	AzureToken = "fake-key-vault-token"
	// AzureObjectID is the object id the fake names in its 403 answers.
	AzureObjectID = "0b6c2a4e-1d2f-4a3b-9c8d-7e6f5a4b3c2d"
	// AzureAppID is the application id the fake names in its 403 answers.
	AzureAppID = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
)

// KeyVaultSecret is one version of a secret in the fake vault.
type KeyVaultSecret struct {
	Name string
	// Version defaults to a 32-hex-digit id derived from the version's place.
	Version string
	Value   string
	// Created and Updated default to 2024-05-06T07:08:09Z.
	Created, Updated time.Time
	// Disabled secrets answer 403 Forbidden/SecretDisabled, as Key Vault does.
	Disabled bool
}

// KeyVaultError is an error the fake answers with: an HTTP status and Key
// Vault's shape {"error": {"code", "message", "innererror": {"code"}}}.
type KeyVaultError struct {
	Status     int
	Code       string
	Message    string
	InnerCode  string
	RetryAfter string // a Retry-After header, if set
	// Challenge, if set, is sent as the WWW-Authenticate header.
	Challenge string
}

// KeyVaultRequest is one request the fake vault received.
type KeyVaultRequest struct {
	// Name and Version are from the path /secrets/{name}/{version}.
	Name, Version string
	// APIVersion is the api-version query parameter the SDK sent.
	APIVersion string
	// Authorized is whether it carried the accepted bearer token; the
	// first request of a client carries none, to elicit the challenge.
	Authorized bool
}

// KeyVault is a fake Azure Key Vault over TLS.
type KeyVault struct {
	// URL is the vault's URL (https://127.0.0.1:PORT).
	URL string
	// Resource is what the challenge names; default
	// https://vault.azure.net (set it before the first request for
	// another cloud's, such as https://vault.usgovcloudapi.net).
	Resource string

	srv *httptest.Server

	mu       sync.Mutex // guards the fields below
	versions []KeyVaultSecret
	fail     func(call int, r KeyVaultRequest) *KeyVaultError
	delay    time.Duration
	requests []KeyVaultRequest
}

// NewKeyVault starts a fake vault, closed when the test ends.
func NewKeyVault(t testing.TB) *KeyVault {
	t.Helper()
	f := &KeyVault{Resource: "https://vault.azure.net"}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// Client returns an HTTP client that trusts the fake's certificate (a
// policy.Transporter for azcore), whose idle connections are closed with it.
func (f *KeyVault) Client() *http.Client { return f.srv.Client() }

// Put adds a version of a secret (the newest is what GetSecret with no
// version returns) and returns it with its defaults filled.
func (f *KeyVault) Put(s KeyVaultSecret) KeyVaultSecret {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.Version == "" {
		s.Version = fmt.Sprintf("%032x", len(f.versions)+1)
	}
	if s.Created.IsZero() {
		s.Created = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	}
	if s.Updated.IsZero() {
		s.Updated = s.Created
	}
	f.versions = append(f.versions, s)
	return s
}

// Fail makes requests fail with what fn returns for the n-th request (from
// 1, counting the challenge-less ones) and the request; nil from fn lets
// the request through. Fail(nil) stops failing.
func (f *KeyVault) Fail(fn func(call int, r KeyVaultRequest) *KeyVaultError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// FailAlways makes every authorized request fail with e.
func (f *KeyVault) FailAlways(e KeyVaultError) {
	f.Fail(func(_ int, r KeyVaultRequest) *KeyVaultError {
		if !r.Authorized {
			return nil
		}
		return &e
	})
}

// Delay makes every request, once counted, wait d (or until the client
// gives up) before answering.
func (f *KeyVault) Delay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// Calls is how many requests the fake received, with or without a token.
func (f *KeyVault) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// Requests returns the requests received, in order.
func (f *KeyVault) Requests() []KeyVaultRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// Forbidden is the 403 that Key Vault gives an identity without a role on
// the vault (RBAC), naming the caller.
func Forbidden() KeyVaultError {
	return KeyVaultError{Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByRbac",
		Message: "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" +
			"Caller: appid=" + AzureAppID + ";oid=" + AzureObjectID + ";iss=https://sts.windows.net/" + AzureTenantID + "/\r\n" +
			"Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '/subscriptions/x/resourcegroups/y/providers/microsoft.keyvault/vaults/z/secrets/w'\r\nAssignment: (not found)\r\n"}
}

func (f *KeyVault) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/secrets/")
	name, version, _ := strings.Cut(rest, "/")
	req := KeyVaultRequest{Name: name, Version: version, APIVersion: r.URL.Query().Get("api-version"),
		Authorized: r.Header.Get("Authorization") == "Bearer "+AzureToken}
	f.mu.Lock()
	f.requests = append(f.requests, req)
	call, fail, delay := len(f.requests), f.fail, f.delay
	f.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if fail != nil {
		if e := fail(call, req); e != nil {
			writeKeyVaultError(w, *e)
			return
		}
	}
	if !req.Authorized {
		// The challenge: what the real vault answers a request without (or
		// with a wrong) token.
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/`+AzureTenantID+`", resource="`+f.Resource+`"`)
		writeKeyVaultError(w, KeyVaultError{Status: 401, Code: "Unauthorized", Message: "AKV10000: Request is missing a Bearer or PoP token."})
		return
	}
	if r.Method != http.MethodGet || !ok || name == "" || strings.Contains(version, "/") || req.APIVersion == "" {
		writeKeyVaultError(w, KeyVaultError{Status: 400, Code: "BadParameter", Message: "The request URI is not valid."})
		return
	}
	if version == "versions" {
		f.serveVersions(w, r, name) // azure_versions.go
		return
	}
	s, found := f.find(name, version)
	if !found {
		msg := fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.", name)
		if version != "" {
			msg = fmt.Sprintf("A secret with (name/id) %s/%s was not found in this key vault.", name, version)
		}
		writeKeyVaultError(w, KeyVaultError{Status: 404, Code: "SecretNotFound", Message: msg})
		return
	}
	if s.Disabled {
		writeKeyVaultError(w, KeyVaultError{Status: 403, Code: "Forbidden", InnerCode: "SecretDisabled", Message: "Operation get is not allowed on a disabled secret."})
		return
	}
	out := map[string]any{
		"value": s.Value,
		"id":    "https://" + r.Host + "/secrets/" + s.Name + "/" + s.Version,
		"attributes": map[string]any{
			"enabled":         true,
			"created":         s.Created.Unix(),
			"updated":         s.Updated.Unix(),
			"recoveryLevel":   "Recoverable+Purgeable",
			"recoverableDays": 90,
		},
		"tags": map[string]string{},
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(out)
}

// find returns the named version, or the newest with version "".
func (f *KeyVault) find(name, version string) (KeyVaultSecret, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.versions) - 1; i >= 0; i-- {
		v := f.versions[i]
		// Key Vault secret names are case-insensitive.
		if strings.EqualFold(v.Name, name) && (version == "" || v.Version == version) {
			return v, true
		}
	}
	return KeyVaultSecret{}, false
}

func writeKeyVaultError(w http.ResponseWriter, e KeyVaultError) {
	body := map[string]any{"code": e.Code, "message": e.Message}
	if e.InnerCode != "" {
		body["innererror"] = map[string]string{"code": e.InnerCode}
	}
	if e.RetryAfter != "" {
		w.Header().Set("Retry-After", e.RetryAfter)
	}
	if e.Challenge != "" {
		w.Header().Set("WWW-Authenticate", e.Challenge)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": body})
}

// TokenCredential is a fake azcore.TokenCredential. It hands out
// [AzureToken] when asked for [AzureScope] (and, if TenantID is set, that
// tenant), and an error otherwise or after SetError.
type TokenCredential struct {
	// TenantID, when set, is the tenant each request must name.
	TenantID string
	// Token, when set, is handed out instead of AzureToken (which the fake
	// vault accepts).
	Token string
	// Scope, when set, is the scope expected instead of AzureScope.
	Scope string

	mu       sync.Mutex // guards the fields below
	err      error
	calls    int
	problems []string
}

var _ azcore.TokenCredential = (*TokenCredential)(nil)

// SetError makes GetToken fail with err (nil: succeed again).
func (c *TokenCredential) SetError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

// Calls is how many tokens were asked for.
func (c *TokenCredential) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// Problems lists what was wrong with the requests (scopes, tenant): a test
// asserts it is empty.
func (c *TokenCredential) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.problems)
}

// GetToken implements azcore.TokenCredential.
func (c *TokenCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if err := ctx.Err(); err != nil {
		return azcore.AccessToken{}, err
	}
	scope := AzureScope
	if c.Scope != "" {
		scope = c.Scope
	}
	if !slices.Equal(o.Scopes, []string{scope}) {
		c.problems = append(c.problems, fmt.Sprintf("scopes %q, want [%q]", o.Scopes, scope))
		return azcore.AccessToken{}, errors.New("fake credential: unexpected scopes")
	}
	if c.TenantID != "" && o.TenantID != c.TenantID {
		c.problems = append(c.problems, fmt.Sprintf("tenant %q, want %q", o.TenantID, c.TenantID))
		return azcore.AccessToken{}, errors.New("fake credential: unexpected tenant")
	}
	if c.err != nil {
		return azcore.AccessToken{}, c.err
	}
	token := AzureToken
	if c.Token != "" {
		token = c.Token
	}
	return azcore.AccessToken{Token: token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}
