package secrets_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/agent/secrets/secretstest"
	"github.com/orchestrator/orchestrator/protocol"
)

func TestAWSResolve(t *testing.T) {
	t.Parallel()
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name         string
		put          []secretstest.AWSSecret
		ref          func(f *secretstest.AWS) protocol.SecretRef
		wantUsername string
		wantKeys     []string
		wantVersion  string
		wantRequest  secretstest.AWSRequest // AccessKeyID is checked apart
	}{
		{
			name:         "string by name",
			put:          []secretstest.AWSSecret{{Name: "ci/github", String: awsValue, VersionID: "v-1", Created: created}},
			ref:          func(*secretstest.AWS) protocol.SecretRef { return awsRef("ci/github", "username", "token") },
			wantUsername: "bot", wantKeys: []string{"username", "password"}, wantVersion: "v-1",
			wantRequest: secretstest.AWSRequest{SecretID: "ci/github"},
		},
		{
			name:     "no username key",
			put:      []secretstest.AWSSecret{{Name: "ci/github", String: awsValue, VersionID: "v-1", Created: created}},
			ref:      func(*secretstest.AWS) protocol.SecretRef { return awsRef("ci/github", "", "token") },
			wantKeys: []string{"password"}, wantVersion: "v-1",
			wantRequest: secretstest.AWSRequest{SecretID: "ci/github"},
		},
		{
			name:         "binary",
			put:          []secretstest.AWSSecret{{Name: "ci/bin", Binary: []byte(awsValue), VersionID: "v-b", Created: created}},
			ref:          func(*secretstest.AWS) protocol.SecretRef { return awsRef("ci/bin", "username", "token") },
			wantUsername: "bot", wantKeys: []string{"username", "password"}, wantVersion: "v-b",
			wantRequest: secretstest.AWSRequest{SecretID: "ci/bin"},
		},
		{
			name: "by ARN",
			put:  []secretstest.AWSSecret{{Name: "ci/github", String: awsValue, VersionID: "v-1", Created: created}},
			ref: func(f *secretstest.AWS) protocol.SecretRef {
				return awsRef(f.ARN("ci/github"), "username", "token")
			},
			wantUsername: "bot", wantKeys: []string{"username", "password"}, wantVersion: "v-1",
		},
		{
			name: "version stage",
			put: []secretstest.AWSSecret{
				{Name: "ci/github", String: awsValue, VersionID: "v-old", Created: created},
				{Name: "ci/github", String: `{"token": "rotated"}`, VersionID: "v-new"},
			},
			ref: func(*secretstest.AWS) protocol.SecretRef {
				r := awsRef("ci/github", "username", "token")
				r.VersionStage = "AWSPREVIOUS"
				return r
			},
			wantUsername: "bot", wantKeys: []string{"username", "password"}, wantVersion: "v-old",
			wantRequest: secretstest.AWSRequest{SecretID: "ci/github", VersionStage: "AWSPREVIOUS"},
		},
		{
			name: "version id",
			put: []secretstest.AWSSecret{
				{Name: "ci/github", String: awsValue, VersionID: "v-old", Created: created},
				{Name: "ci/github", String: `{"token": "rotated"}`, VersionID: "v-new"},
			},
			ref: func(*secretstest.AWS) protocol.SecretRef {
				r := awsRef("ci/github", "", "token")
				r.VersionID = "v-old"
				return r
			},
			wantKeys: []string{"password"}, wantVersion: "v-old",
			wantRequest: secretstest.AWSRequest{SecretID: "ci/github", VersionID: "v-old"},
		},
		{
			name: "escapes and other keys in the value",
			put: []secretstest.AWSSecret{{Name: "ci/github", VersionID: "v-1", Created: created,
				String: `{"token": "canary-7f3c9e1d-\u0053ECRET", "meta": {"a": [1, 2]}, "n": 3}`}},
			ref:      func(*secretstest.AWS) protocol.SecretRef { return awsRef("ci/github", "", "token") },
			wantKeys: []string{"password"}, wantVersion: "v-1",
			wantRequest: secretstest.AWSRequest{SecretID: "ci/github"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := secretstest.NewAWS(t)
			for _, s := range tt.put {
				fake.Put(s)
			}
			log, logs := debugLogger(t)
			b := newAWSBackend(t, fake, log, nil)
			ref := tt.ref(fake)
			c, err := b.Resolve(testContext(t), ref)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got := c.Password.Reveal(); got != canary {
				t.Errorf("Password = %q, want the canary", got)
			}
			if got := c.Username.Reveal(); got != tt.wantUsername {
				t.Errorf("Username = %q, want %q", got, tt.wantUsername)
			}
			if !slices.Equal(c.KeysFound, tt.wantKeys) {
				t.Errorf("KeysFound = %q, want %q", c.KeysFound, tt.wantKeys)
			}
			if c.VersionID != tt.wantVersion {
				t.Errorf("VersionID = %q, want %q", c.VersionID, tt.wantVersion)
			}
			if c.VersionCreated == nil || !c.VersionCreated.Equal(created) {
				t.Errorf("VersionCreated = %v, want %v", c.VersionCreated, created)
			}
			reqs := fake.Requests()
			if len(reqs) != 1 {
				t.Fatalf("the fake got %d calls, want 1", len(reqs))
			}
			want := tt.wantRequest
			if want.SecretID == "" {
				want.SecretID = ref.SecretName
			}
			want.AccessKeyID = secretstest.AWSAccessKeyID
			if reqs[0] != want {
				t.Errorf("request = %+v, want %+v", reqs[0], want)
			}
			if out := fmt.Sprintf("%v %+v", c, c); strings.Contains(out, canary) {
				t.Errorf("printing the Credentials shows the value: %s", out)
			}
			checkCallLog(t, logs, "aws", 1, "ok")
		})
	}
}

func TestAWSResolveErrors(t *testing.T) {
	t.Parallel()
	const deniedARN = "arn:aws:sts::111122223333:assumed-role/orchestrator-agent/i-0abc123"
	fail := func(e secretstest.AWSError) func(f *secretstest.AWS) {
		return func(f *secretstest.AWS) { f.FailAlways(e) }
	}
	put := func(value string) func(f *secretstest.AWS) {
		return func(f *secretstest.AWS) { f.Put(secretstest.AWSSecret{Name: "ci/github", String: value}) }
	}
	tests := []struct {
		name  string
		setup func(f *secretstest.AWS)
		ref   protocol.SecretRef
		code  protocol.ErrorCode
		want  []string
		calls int // GetSecretValue calls the fake must get
	}{
		{
			name: "not found", setup: put(awsValue), ref: awsRef("ci/missing", "", "token"),
			code: protocol.CodeSecretNotFound, calls: 1,
			want: []string{"AWS Secrets Manager (region us-east-1) has no secret ci/missing", "secret_name", "secrets.aws.region"},
		},
		{
			name: "version stage not found", setup: put(awsValue),
			ref:  protocol.SecretRef{Backend: "aws", SecretName: "ci/github", PasswordKey: "token", VersionStage: "AWSPENDING"},
			code: protocol.CodeSecretNotFound, calls: 1,
			want: []string{"the secret ci/github in AWS Secrets Manager (region us-east-1) has no version with version_stage AWSPENDING", "fix version_stage"},
		},
		{
			name: "access denied names the identity",
			setup: fail(secretstest.AWSError{Status: 400, Type: "AccessDeniedException",
				Message: "User: " + deniedARN + " is not authorized to perform: secretsmanager:GetSecretValue on resource: ci/github because no identity-based policy allows the secretsmanager:GetSecretValue action"}),
			ref: awsRef("ci/github", "", "token"), code: protocol.CodeSecretAccessDenied, calls: 1,
			want: []string{"denied the agent's AWS identity " + deniedARN + " reading the secret ci/github",
				"because no identity-based policy allows the secretsmanager:GetSecretValue action", "secretsmanager:GetSecretValue on this secret"},
		},
		{
			name:  "access denied without an identity",
			setup: fail(secretstest.AWSError{Status: 400, Type: "AccessDeniedException", Message: "Access to KMS is not allowed"}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeSecretAccessDenied, calls: 1,
			want: []string{"denied the agent's AWS identity (from the credentials given to the agent) reading the secret ci/github"},
		},
		{
			name:  "throttled: bounded retries",
			setup: fail(secretstest.AWSError{Status: 400, Type: "ThrottlingException", Message: "Rate exceeded"}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeSecretBackendUnavailable, calls: 3,
			want: []string{"throttled reading the secret ci/github (ThrottlingException, 3 attempts)", "secrets.cache_ttl"},
		},
		{
			name:  "decryption failure",
			setup: fail(secretstest.AWSError{Status: 400, Type: "DecryptionFailure", Message: "Secrets Manager can't decrypt the protected secret text using the provided KMS key."}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeSecretAccessDenied, calls: 1,
			want: []string{"cannot decrypt the secret ci/github", "kms:Decrypt on the secret's KMS key", "customer-managed key"},
		},
		{
			name:  "internal error 500: retried",
			setup: fail(secretstest.AWSError{Status: 500, Type: "InternalServiceError", Message: "oops"}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeSecretBackendUnavailable, calls: 3,
			want: []string{"failed reading the secret ci/github (HTTP 500 InternalServiceError, 3 attempts)"},
		},
		{
			name:  "503 without a known code",
			setup: fail(secretstest.AWSError{Status: 503, Type: "ServiceUnavailable", Message: "try later"}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeSecretBackendUnavailable, calls: 3,
			want: []string{"HTTP 503 ServiceUnavailable, 3 attempts"},
		},
		{
			name:  "marked for deletion",
			setup: fail(secretstest.AWSError{Status: 400, Type: "InvalidRequestException", Message: "You can't perform this operation on the secret because it was marked for deletion."}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeSecretNotFound, calls: 1,
			want: []string{"cannot read the secret ci/github now: You can't perform this operation on the secret because it was marked for deletion."},
		},
		{
			name:  "invalid parameter",
			setup: fail(secretstest.AWSError{Status: 400, Type: "InvalidParameterException", Message: "Invalid VersionId"}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeInvalidParams, calls: 1,
			want: []string{"refused the reference to the secret ci/github: Invalid VersionId"},
		},
		{
			name:  "credentials refused",
			setup: fail(secretstest.AWSError{Status: 400, Type: "UnrecognizedClientException", Message: "The security token included in the request is invalid."}),
			ref:   awsRef("ci/github", "", "token"), code: protocol.CodeSecretAccessDenied, calls: 1,
			want: []string{"AWS rejected the agent's credentials", "UnrecognizedClientException"},
		},
		{
			name: "value not JSON", setup: put("ghp_" + canary), ref: awsRef("ci/github", "", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"the value of the secret ci/github is not valid JSON: syntax error at line 1, column 1", `{"username": "…", "token": "…"}`},
		},
		{
			name: "value broken JSON next to the canary", setup: put(`{"token": "` + canary + `"x}`), ref: awsRef("ci/github", "", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"is not valid JSON: syntax error at line 1, column 35"},
		},
		{
			name: "value a JSON string", setup: put(`"` + canary + `"`), ref: awsRef("ci/github", "", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"the value of the secret ci/github is a string, not a JSON object of keys to strings"},
		},
		{
			name: "missing key lists the names only", setup: put(`{"username": "bot", "pat": "` + canary + `"}`), ref: awsRef("ci/github", "username", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"the secret ci/github has no key 'token'; keys found: pat, username; fix password_key in the reference or add the key to the secret's value in AWS Secrets Manager"},
		},
		{
			name: "missing username key", setup: put(awsValue), ref: awsRef("ci/github", "login", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"has no key 'login'; keys found: token, username", "username_key"},
		},
		{
			name: "key holds a number", setup: put(`{"token": 12345, "x": "` + canary + `"}`), ref: awsRef("ci/github", "", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"the key 'token' of the secret ci/github holds a number, not a string"},
		},
		{
			name: "empty password", setup: put(`{"token": "", "username": "` + canary + `"}`), ref: awsRef("ci/github", "username", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"the key 'token' of the secret ci/github is empty"},
		},
		{
			name: "value typed as a key is not listed", setup: put(`{"username": "bot", "` + canary + `": ""}`), ref: awsRef("ci/github", "username", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"keys found: username (and 1 not shown)"},
		},
		{
			name: "duplicate key", setup: put(`{"token": "a", "token": "` + canary + `"}`), ref: awsRef("ci/github", "", "token"),
			code: protocol.CodeSecretMalformed, calls: 1,
			want: []string{"the value of the secret ci/github names a key twice (again at line 1, column 16)"},
		},
		{
			name: "reference to another backend", ref: protocol.SecretRef{Backend: "file", SecretName: "ci/github", PasswordKey: "token"},
			code: protocol.CodeInvalidParams, calls: 0, want: []string{"the aws secret backend cannot resolve file:ci/github"},
		},
		{
			name: "no password key", ref: awsRef("ci/github", "", ""),
			code: protocol.CodeInvalidParams, calls: 0, want: []string{"needs secret_name and password_key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := secretstest.NewAWS(t)
			if tt.setup != nil {
				tt.setup(fake)
			}
			log, logs := debugLogger(t)
			b := newAWSBackend(t, fake, log, nil)
			c, err := b.Resolve(testContext(t), tt.ref)
			checkError(t, err, tt.code, tt.want...)
			if !c.Password.Empty() || c.KeysFound != nil {
				t.Errorf("a failed Resolve returned credentials: %+v", c)
			}
			if got := fake.Calls(); got != tt.calls {
				t.Errorf("the fake got %d calls, want %d", got, tt.calls)
			}
			if tt.calls > 0 {
				checkCallLog(t, logs, "aws", 1, string(tt.code))
			}
		})
	}
}

func TestAWSRetriesThenSucceeds(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue})
	fake.Fail(func(call int, _ secretstest.AWSRequest) *secretstest.AWSError {
		if call == 1 {
			return &secretstest.AWSError{Status: 400, Type: "ThrottlingException", Message: "Rate exceeded"}
		}
		return nil
	})
	b := newAWSBackend(t, fake, nil, nil)
	c, err := b.Resolve(testContext(t), awsRef("ci/github", "", "token"))
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if c.Password.Reveal() != canary || fake.Calls() != 2 {
		t.Errorf("got a value %v after %d calls, want the canary after 2", c.Password.Reveal() == canary, fake.Calls())
	}
}

// TestAWSRetriesFitTheDeadline runs the default retry settings against a
// throttling fake: the bounded attempts end well inside a job's deadline,
// with secret_backend_unavailable rather than a timeout.
func TestAWSRetriesFitTheDeadline(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	fake.FailAlways(secretstest.AWSError{Status: 400, Type: "ThrottlingException", Message: "Rate exceeded"})
	b := newAWSBackend(t, fake, nil, func(c *secrets.AWSConfig) { c.MaxBackoff = 0 }) // the defaults
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := b.Resolve(ctx, awsRef("ci/github", "", "token"))
	elapsed := time.Since(start)
	checkError(t, err, protocol.CodeSecretBackendUnavailable, "3 attempts")
	if fake.Calls() != secrets.DefaultMaxAttempts {
		t.Errorf("the fake got %d calls, want %d", fake.Calls(), secrets.DefaultMaxAttempts)
	}
	if elapsed > 2*time.Second {
		t.Errorf("the retries took %s; they must fit well inside a job's deadline", elapsed)
	}
}

func TestAWSDeadline(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue})
	fake.Delay(10 * time.Second)
	log, logs := debugLogger(t)
	b := newAWSBackend(t, fake, log, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.Resolve(ctx, awsRef("ci/github", "", "token"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Resolve past the deadline = %v, want context.DeadlineExceeded (the runner reports timeout)", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Resolve returned %s after the start, want promptly after the 300ms deadline", elapsed)
	}
	checkCallLog(t, logs, "aws", 1, "timeout")
}

func TestAWSUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	fake := secretstest.NewAWS(t)
	b := newAWSBackend(t, fake, nil, func(c *secrets.AWSConfig) { c.Endpoint = "http://" + addr; c.MaxAttempts = 2 })
	_, err = b.Resolve(testContext(t), awsRef("ci/github", "", "token"))
	checkError(t, err, protocol.CodeSecretBackendUnavailable, "cannot reach AWS Secrets Manager at http://"+addr+" (2 attempts)", "connection refused")
}

func TestAWSAssumeRole(t *testing.T) {
	t.Parallel()
	const role = "arn:aws:iam::444455556666:role/secrets-reader"
	fake := secretstest.NewAWS(t)
	fake.Put(secretstest.AWSSecret{Name: "ci/github", String: awsValue})
	log, _ := debugLogger(t)
	b := newAWSBackend(t, fake, log, func(c *secrets.AWSConfig) {
		c.RoleARN, c.ExternalID, c.STSEndpoint = role, "ext-123", fake.URL
	})
	for range 2 {
		if _, err := b.Resolve(testContext(t), awsRef("ci/github", "", "token")); err != nil {
			t.Fatalf("Resolve: %v", err)
		}
	}
	calls := fake.AssumeRoleCalls()
	want := secretstest.AssumeRoleRequest{RoleARN: role, RoleSessionName: secrets.DefaultAWSSessionName, ExternalID: "ext-123", AccessKeyID: secretstest.AWSAccessKeyID}
	if len(calls) != 1 || calls[0] != want {
		t.Errorf("AssumeRole calls = %+v, want one %+v (credentials cached)", calls, want)
	}
	for _, r := range fake.Requests() {
		if r.AccessKeyID != secretstest.AWSAssumedAccessKeyID {
			t.Errorf("GetSecretValue signed with %s, want the assumed role's key %s", r.AccessKeyID, secretstest.AWSAssumedAccessKeyID)
		}
	}
	if got := b.Info().Settings["role_arn"]; got != role {
		t.Errorf("Info role_arn = %q, want %q", got, role)
	}
}

func TestAWSAssumeRoleDenied(t *testing.T) {
	t.Parallel()
	const role = "arn:aws:iam::444455556666:role/secrets-reader"
	fake := secretstest.NewAWS(t)
	fake.FailAssumeRole(&secretstest.AWSError{Status: 403, Type: "AccessDenied",
		Message: "User: arn:aws:sts::111122223333:assumed-role/vm-role/i-0abc is not authorized to perform: sts:AssumeRole on resource: " + role})
	b := newAWSBackend(t, fake, nil, func(c *secrets.AWSConfig) { c.RoleARN, c.STSEndpoint = role, fake.URL })
	_, err := b.Resolve(testContext(t), awsRef("ci/github", "", "token"))
	checkError(t, err, protocol.CodeSecretAccessDenied,
		"the agent's AWS identity arn:aws:sts::111122223333:assumed-role/vm-role/i-0abc cannot assume the role "+role+" (STS: AccessDenied)", "trust policy")
	if fake.Calls() != 0 {
		t.Errorf("the fake got %d GetSecretValue calls without credentials, want 0", fake.Calls())
	}
}

func TestAWSNoCredentials(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	b, err := secrets.NewAWS(context.Background(), secrets.AWSConfig{Region: "eu-west-1", Endpoint: fake.URL}, secrets.AWSOptions{
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{}, errors.New("no EC2 IMDS role found")
		}),
		HTTPClient: fake.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Resolve(testContext(t), awsRef("ci/github", "", "token"))
	checkError(t, err, protocol.CodeSecretAccessDenied, "the agent has no usable AWS credentials", "no EC2 IMDS role found", "instance profile")
	if fake.Calls() != 0 {
		t.Errorf("the fake got %d calls, want 0", fake.Calls())
	}
}

func TestAWSInfo(t *testing.T) {
	t.Parallel()
	fake := secretstest.NewAWS(t)
	b := newAWSBackend(t, fake, nil, nil)
	if b.Name() != "aws" {
		t.Errorf("Name() = %q", b.Name())
	}
	info := b.Info()
	want := map[string]string{"region": "us-east-1", "endpoint": fake.URL}
	if info.Name != "aws" || fmt.Sprint(info.Settings) != fmt.Sprint(want) {
		t.Errorf("Info() = %+v, want aws with %v", info, want)
	}
}

func TestAWSConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    secrets.AWSConfig
		want string // "" for valid
	}{
		{name: "minimal", c: secrets.AWSConfig{Region: "eu-west-1"}},
		{name: "gov region", c: secrets.AWSConfig{Region: "us-gov-west-1"}},
		{name: "full", c: secrets.AWSConfig{Region: "eu-central-1", Profile: "ra", RoleARN: "arn:aws:iam::111122223333:role/path/reader", ExternalID: "x-1", SessionName: "agent-1",
			Endpoint: "https://vpce-0123.secretsmanager.eu-central-1.vpce.amazonaws.com", STSEndpoint: "https://sts.eu-central-1.amazonaws.com", MaxAttempts: 5, MaxBackoff: 2 * time.Second}},
		{name: "loopback http endpoint", c: secrets.AWSConfig{Region: "us-east-1", Endpoint: "http://127.0.0.1:4566"}},
		{name: "no region", c: secrets.AWSConfig{}, want: "secrets.aws.region: required"},
		{name: "bad region", c: secrets.AWSConfig{Region: "Europe"}, want: `secrets.aws.region: "Europe" is not an AWS region`},
		{name: "bad role", c: secrets.AWSConfig{Region: "eu-west-1", RoleARN: "reader"}, want: "secrets.aws.role_arn:"},
		{name: "external id without role", c: secrets.AWSConfig{Region: "eu-west-1", ExternalID: "x"}, want: "need secrets.aws.role_arn"},
		{name: "bad session name", c: secrets.AWSConfig{Region: "eu-west-1", RoleARN: "arn:aws:iam::111122223333:role/r", SessionName: "a b"}, want: "secrets.aws.session_name"},
		{name: "plain http endpoint", c: secrets.AWSConfig{Region: "eu-west-1", Endpoint: "http://secretsmanager.example.com"}, want: "secrets.aws.endpoint: \"http://secretsmanager.example.com\" is not encrypted"},
		{name: "endpoint with user info", c: secrets.AWSConfig{Region: "eu-west-1", Endpoint: "https://u:p@example.com"}, want: "secrets.aws.endpoint: must not hold user info"},
		{name: "bad sts endpoint", c: secrets.AWSConfig{Region: "eu-west-1", STSEndpoint: "ftp://x"}, want: "secrets.aws.sts_endpoint: scheme \"ftp\""},
		{name: "too many attempts", c: secrets.AWSConfig{Region: "eu-west-1", MaxAttempts: 11}, want: "secrets.aws.max_attempts: 11 is outside 1..10"},
		{name: "long backoff", c: secrets.AWSConfig{Region: "eu-west-1", MaxBackoff: time.Minute}, want: "secrets.aws.max_backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := tt.c
			c.SetDefaults()
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tt.want)
			}
			// NewAWS refuses it the same way, before reading anything.
			_, nerr := secrets.NewAWS(context.Background(), tt.c, secrets.AWSOptions{Credentials: credentials.NewStaticCredentialsProvider("a", "b", "")})
			if nerr == nil || nerr.Error() != err.Error() {
				t.Errorf("NewAWS = %v, want %v", nerr, err)
			}
		})
	}
}
