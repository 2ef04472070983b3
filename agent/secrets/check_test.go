package secrets_test

import (
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

// The doctor's checks read metadata, never a value: the fakes count the
// value reads, which must stay at zero.

func TestAWSDescribe(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue})
	log, logs := debugLogger(t)
	b := newAWSBackend(t, fake, log, nil)

	info, err := b.Describe(testContext(t), "ci/github")
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "ci/github" || info.ID != fake.ARN("ci/github") || info.Changed == nil {
		t.Errorf("Describe = %+v", info)
	}
	_, err = b.Describe(testContext(t), "ci/missing")
	checkError(t, err, protocol.CodeSecretNotFound, "ci/missing")

	fake.FailDescribe(&secretstest.AWSError{Status: 400, Type: "AccessDeniedException",
		Message: "User: arn:aws:sts::111122223333:assumed-role/agent/i-0abc is not authorized to perform: secretsmanager:DescribeSecret on resource: ci/github because no identity-based policy allows the secretsmanager:DescribeSecret action"})
	_, err = b.Describe(testContext(t), "ci/github")
	checkError(t, err, protocol.CodeSecretAccessDenied, "secretsmanager:DescribeSecret", "arn:aws:sts::111122223333:assumed-role/agent/i-0abc", "ci/github")

	if n := fake.Calls(); n != 0 {
		t.Errorf("%d GetSecretValue calls; Describe must read no value", n)
	}
	if n := len(fake.Describes()); n != 3 {
		t.Errorf("%d DescribeSecret calls, want 3", n)
	}
	if lines := logs.lines(t, "secret manager call"); len(lines) != 3 {
		t.Errorf("%d debug lines, want one per call:\n%s", len(lines), logs.String())
	}
}

func TestAzureProperties(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewKeyVault(t)
	updated := time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC)
	fake.Put(secretstest.KeyVaultSecret{Name: "gh-pat", Value: canary, Created: updated, Updated: updated})
	cred := &secretstest.TokenCredential{TenantID: secretstest.AzureTenantID}
	log, _ := debugLogger(t)
	b := newAzureBackend(t, fake, cred, log, nil)

	info, err := b.Properties(testContext(t), "platform-kv", "gh-pat")
	if err != nil {
		t.Fatal(err)
	}
	if info.Changed == nil || !info.Changed.Equal(updated) || !strings.Contains(info.ID, "/secrets/gh-pat/") {
		t.Errorf("Properties = %+v", info)
	}
	_, err = b.Properties(testContext(t), "platform-kv", "gh-missing")
	checkError(t, err, protocol.CodeSecretNotFound, "gh-missing")

	fake.FailAlways(secretstest.Forbidden())
	_, err = b.Properties(testContext(t), "platform-kv", "gh-pat")
	checkError(t, err, protocol.CodeSecretAccessDenied, "Key Vault Secrets User")

	for _, r := range fake.Requests() {
		if r.Version != "versions" {
			t.Errorf("request for %s/%s: Properties must only list versions", r.Name, r.Version)
		}
	}
}

func TestFileHas(t *testing.T) {
	t.Parallel()
	path := writeSecrets(t, "secrets.json", `{"ci/github": {"token": "`+canary+`"}}`, 0o600)
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Has("ci/github"); !ok || err != nil {
		t.Errorf("Has(ci/github) = %v, %v", ok, err)
	}
	if ok, err := f.Has("ci/other"); ok || err != nil {
		t.Errorf("Has(ci/other) = %v, %v", ok, err)
	}
}

func TestObservedSet(t *testing.T) {
	t.Parallel()
	path := writeSecrets(t, "secrets.json", `{"ci/github": {"token": "`+canary+`"}}`, 0o600)
	f, err := secrets.NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	set := secrets.NewSet(f).Observed(func(backend, code string, d time.Duration) { calls = append(calls, backend+" "+code) })
	if _, err := set.Resolve(testContext(t), fileRef("ci/github", "", "token")); err != nil {
		t.Fatal(err)
	}
	_, _ = set.Resolve(testContext(t), fileRef("ci/none", "", "token"))
	_, _ = set.Resolve(testContext(t), awsRef("x", "", "token")) // no such backend: no call
	if got := strings.Join(calls, ","); got != "file ok,file secret_not_found" {
		t.Errorf("observed %q", got)
	}
	if (*secrets.Set)(nil).Observed(func(string, string, time.Duration) {}) != nil {
		t.Error("a nil set must stay nil")
	}
}
