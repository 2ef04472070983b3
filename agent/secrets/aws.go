package secrets

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/protocol"
)

// Defaults of the cloud backends' retries: a few quick attempts, so that
// they end well inside a job's deadline (60 seconds by default).
const (
	DefaultMaxAttempts = 3
	DefaultMaxBackoff  = time.Second
	maxMaxAttempts     = 10
	maxMaxBackoff      = 20 * time.Second
	firstBackoff       = 100 * time.Millisecond
)

// DefaultAWSSessionName is the session name of an assumed role when
// secrets.aws.session_name is not set; it shows in CloudTrail.
const DefaultAWSSessionName = "orchestrator-agent"

// AWSConfig configures the AWS Secrets Manager backend: secrets.aws in the
// agent config (deploy/agent.example.yaml documents each setting).
type AWSConfig struct {
	// Region is the region of the secrets, such as eu-west-1. Required.
	Region string `yaml:"region"`
	// Profile names a profile of the shared AWS config files
	// (AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE, or ~/.aws of the
	// agent's user), for IAM Roles Anywhere (credential_process) or static
	// keys. Only when a profile is named here or in AWS_PROFILE are the
	// shared files read at all, so a developer's own ~/.aws is never picked
	// up by accident; otherwise the credentials come from the environment,
	// web identity, the container, or the EC2 instance profile (IMDSv2).
	Profile string `yaml:"profile"`
	// RoleARN, when set, is a role the agent assumes (with STS) with those
	// credentials before reading secrets, for example in the account that
	// owns them.
	RoleARN string `yaml:"role_arn"`
	// ExternalID is the external id the role's trust policy asks for.
	ExternalID string `yaml:"external_id"`
	// SessionName names the assumed role's sessions (CloudTrail); default
	// orchestrator-agent.
	SessionName string `yaml:"session_name"`
	// Endpoint replaces the Secrets Manager endpoint, for a VPC interface
	// endpoint (https://vpce-….secretsmanager.REGION.vpce.amazonaws.com).
	// Plain http only to a loopback address (tests).
	Endpoint string `yaml:"endpoint"`
	// STSEndpoint replaces the STS endpoint used to assume RoleARN, for a
	// VPC interface endpoint. Same rules as Endpoint.
	STSEndpoint string `yaml:"sts_endpoint"`
	// MaxAttempts bounds the attempts of one call, retries included
	// (throttling, 5xx, network errors); default 3, at most 10.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxBackoff bounds the wait between attempts; default 1s, at most 20s.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// AWSOptions are the AWS backend's dependencies. The zero value is what the
// agent uses.
type AWSOptions struct {
	// Credentials, when set, replace the SDK's default chain: nothing is
	// then read from the environment, the shared files (~/.aws) or the
	// instance metadata service. Tests set static credentials here.
	Credentials aws.CredentialsProvider
	// HTTPClient sends the requests; default: the SDK's (which honors
	// HTTPS_PROXY).
	HTTPClient *http.Client
	// Logger receives one debug line per call; default: none.
	Logger *zap.Logger
}

// SetDefaults fills in the defaults of unset settings.
func (c *AWSConfig) SetDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.RoleARN != "" && c.SessionName == "" {
		c.SessionName = DefaultAWSSessionName
	}
}

var (
	awsRegion      = regexp.MustCompile(`^[a-z]{2,4}(-[a-z0-9]+)+-[0-9]{1,2}$`)
	awsRoleARN     = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$`)
	awsSessionName = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	awsExternalID  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// Validate checks the settings (after SetDefaults) and names the one that
// is wrong.
func (c *AWSConfig) Validate() error {
	switch {
	case c.Region == "":
		return errors.New("secrets.aws.region: required (the region of the secrets, such as eu-west-1)")
	case !awsRegion.MatchString(c.Region):
		return fmt.Errorf("secrets.aws.region: %q is not an AWS region such as eu-west-1", clip(c.Region, 64))
	case c.RoleARN != "" && !awsRoleARN.MatchString(c.RoleARN):
		return fmt.Errorf("secrets.aws.role_arn: %q is not a role ARN such as arn:aws:iam::111122223333:role/orchestrator-agent", clip(c.RoleARN, 256))
	case c.RoleARN == "" && (c.ExternalID != "" || c.SessionName != ""):
		return errors.New("secrets.aws.external_id and secrets.aws.session_name need secrets.aws.role_arn")
	case c.ExternalID != "" && (len(c.ExternalID) < 2 || len(c.ExternalID) > 1224 || !awsExternalID.MatchString(c.ExternalID)):
		return errors.New("secrets.aws.external_id: 2 to 1224 letters, digits and +=,.@:/- characters")
	case c.SessionName != "" && !awsSessionName.MatchString(c.SessionName):
		return errors.New("secrets.aws.session_name: 2 to 64 letters, digits and +=,.@- characters")
	case c.MaxAttempts < 1 || c.MaxAttempts > maxMaxAttempts:
		return fmt.Errorf("secrets.aws.max_attempts: %d is outside 1..%d", c.MaxAttempts, maxMaxAttempts)
	case c.MaxBackoff < 0 || c.MaxBackoff > maxMaxBackoff:
		return fmt.Errorf("secrets.aws.max_backoff: %s is outside 0s..%s", c.MaxBackoff, maxMaxBackoff)
	}
	if err := checkEndpoint("secrets.aws.endpoint", c.Endpoint); err != nil {
		return err
	}
	return checkEndpoint("secrets.aws.sts_endpoint", c.STSEndpoint)
}

// checkEndpoint checks an endpoint URL setting: https, or http to a
// loopback address; a host; no user info, query or fragment.
func checkEndpoint(setting, raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%s: %q is not a URL such as https://vpce-0123.secretsmanager.eu-west-1.vpce.amazonaws.com", setting, clip(raw, 256))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s: must not hold user info, a query or a fragment", setting)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip == nil || !ip.IsLoopback()) && u.Hostname() != "localhost" {
			return fmt.Errorf("%s: %q is not encrypted; use https (plain http only to a loopback address, for tests)", setting, u.Redacted())
		}
	default:
		return fmt.Errorf("%s: scheme %q is not https", setting, u.Scheme)
	}
	return nil
}

// AWS is the AWS Secrets Manager backend. A reference's secret_name is the
// secret's name (in the configured region and the identity's account) or
// its full ARN (any account: cross-account access needs the ARN); the
// secret's value, SecretString or SecretBinary, is a JSON object whose
// fields username_key and password_key name. version_stage or version_id
// pick a version; by default AWSCURRENT.
//
// Credentials come from the SDK's chain as a VM has them, refreshed before
// they expire; see [AWSConfig.Profile]. AWS is safe for concurrent use.
type AWS struct {
	cfg    AWSConfig
	client *secretsmanager.Client
	// source says where credentials come from, for messages.
	source string
	log    *zap.Logger
}

var _ Backend = (*AWS)(nil)

// NewAWS builds the AWS backend. It reads the AWS configuration (not the
// credentials: those are fetched on the first call), so it makes no call
// to AWS; a wrong setting is an error that names it.
func NewAWS(ctx context.Context, c AWSConfig, o AWSOptions) (*AWS, error) {
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var base aws.Config
	var source string
	if o.Credentials != nil {
		base = aws.Config{Region: c.Region, Credentials: o.Credentials}
		source = "the credentials given to the agent"
	} else {
		loaders := []func(*config.LoadOptions) error{config.WithRegion(c.Region)}
		profile := c.Profile
		if profile == "" {
			profile = os.Getenv("AWS_PROFILE")
		}
		if profile != "" {
			loaders = append(loaders, config.WithSharedConfigProfile(profile))
			source = "the profile " + profile + " of the shared AWS config files"
		} else {
			// No profile named: the shared files are not read at all.
			loaders = append(loaders, config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}))
			source = "the environment or the EC2 instance profile"
		}
		if o.HTTPClient != nil {
			loaders = append(loaders, config.WithHTTPClient(o.HTTPClient))
		}
		cfg, err := config.LoadDefaultConfig(ctx, loaders...)
		if err != nil {
			return nil, fmt.Errorf("secrets.aws: the AWS configuration cannot be loaded (check secrets.aws.profile and AWS_* variables): %w", err)
		}
		base = cfg
	}
	if o.HTTPClient != nil {
		base.HTTPClient = o.HTTPClient
	}
	if c.RoleARN != "" {
		stsClient := sts.NewFromConfig(base, func(so *sts.Options) {
			so.Retryer, so.RetryMaxAttempts = newAWSRetryer(c), c.MaxAttempts
			if c.STSEndpoint != "" {
				so.BaseEndpoint = aws.String(c.STSEndpoint)
			}
		})
		base.Credentials = stscreds.NewAssumeRoleProvider(stsClient, c.RoleARN, func(ao *stscreds.AssumeRoleOptions) {
			ao.RoleSessionName = c.SessionName
			if c.ExternalID != "" {
				ao.ExternalID = aws.String(c.ExternalID)
			}
		})
		source = "the role " + c.RoleARN + " (assumed with " + source + ")"
	}
	if base.Credentials == nil {
		return nil, errors.New("secrets.aws: the AWS SDK found no credential source")
	}
	creds := aws.NewCredentialsCache(markedProvider{base.Credentials})
	client := secretsmanager.NewFromConfig(base, func(so *secretsmanager.Options) {
		so.Credentials = creds
		// Both, so that AWS_MAX_ATTEMPTS or the shared config's max_attempts
		// cannot raise the bound.
		so.Retryer, so.RetryMaxAttempts = newAWSRetryer(c), c.MaxAttempts
		if c.Endpoint != "" {
			so.BaseEndpoint = aws.String(c.Endpoint)
		}
	})
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &AWS{cfg: c, client: client, source: source, log: log}, nil
}

// newAWSRetryer returns a new retryer (each client its own): bounded
// attempts, short jittered waits, no shared retry quota (the attempts are
// bounded already). It retries throttling, 5xx and network errors.
func newAWSRetryer(c AWSConfig) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = c.MaxAttempts
		o.MaxBackoff = c.MaxBackoff
		o.Backoff = retry.BackoffDelayerFunc(func(attempt int, _ error) (time.Duration, error) {
			return backoffDelay(attempt, c.MaxBackoff), nil
		})
		o.RateLimiter = ratelimit.None
	})
}

// backoffDelay is the wait before retry number attempt (from 1): between
// half and all of min(max, 100ms·2^(attempt-1)).
func backoffDelay(attempt int, maxDelay time.Duration) time.Duration {
	d := maxDelay
	if attempt >= 1 && attempt < 16 {
		d = min(maxDelay, firstBackoff<<(attempt-1))
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// markedProvider marks the errors of getting credentials, so that they are
// told apart from the errors of the call itself.
type markedProvider struct{ p aws.CredentialsProvider }

func (m markedProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.p.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{err: err}
	}
	return c, nil
}

// credentialsError is a failure to get credentials for a call.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "get credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// Name returns "aws".
func (a *AWS) Name() string { return protocol.BackendAWS }

// Info returns the backend's non-secret settings: region, and endpoint,
// role_arn and profile when set.
func (a *AWS) Info() protocol.BackendInfo {
	s := map[string]string{"region": a.cfg.Region}
	for k, v := range map[string]string{"endpoint": a.cfg.Endpoint, "role_arn": a.cfg.RoleARN, "profile": a.cfg.Profile} {
		if v != "" {
			s[k] = v
		}
	}
	return protocol.BackendInfo{Name: protocol.BackendAWS, Settings: s}
}

// Resolve reads the secret ref names with GetSecretValue. See the package
// doc for the errors.
func (a *AWS) Resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, error) {
	if ref.Backend != protocol.BackendAWS {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
			"the aws secret backend cannot resolve %s: it names the %s backend", clip(ref.String(), maxNameText), ref.Backend)
	}
	if ref.SecretName == "" || ref.PasswordKey == "" {
		return Credentials{}, protocol.Errorf(protocol.CodeInvalidParams,
			"a reference to the aws secret backend needs secret_name and password_key")
	}
	if err := ctx.Err(); err != nil {
		return Credentials{}, err
	}
	start := time.Now()
	c, detail, err := a.resolve(ctx, ref)
	logCall(a.log, protocol.BackendAWS, ref, start, err, detail)
	return c, err
}

// resolve also returns the SDK's error text for the log, if any.
func (a *AWS) resolve(ctx context.Context, ref protocol.SecretRef) (Credentials, string, error) {
	in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(ref.SecretName)}
	if ref.VersionStage != "" {
		in.VersionStage = aws.String(ref.VersionStage)
	}
	if ref.VersionID != "" {
		in.VersionId = aws.String(ref.VersionID)
	}
	out, err := a.client.GetSecretValue(ctx, in)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Credentials{}, err.Error(), ctxErr
		}
		return Credentials{}, err.Error(), a.callError(ref, err)
	}
	name := clip(ref.SecretName, maxNameText)
	var data []byte
	switch {
	case out.SecretString != nil:
		data = []byte(*out.SecretString)
	case out.SecretBinary != nil:
		data = out.SecretBinary
	default:
		return Credentials{}, "", protocol.Errorf(protocol.CodeSecretMalformed,
			"the secret %s has no value (neither SecretString nor SecretBinary)", name)
	}
	defer clear(data) // the parsed values hold what is needed
	values, problem := parseJSONObject(data)
	if problem != "" {
		return Credentials{}, "", protocol.Errorf(protocol.CodeSecretMalformed,
			`the value of the secret %s %s; store the credentials in it as a JSON object such as {"username": "…", "token": "…"}`,
			name, problem)
	}
	const fix = "add the key to the secret's value in AWS Secrets Manager"
	password, perr := lookupKey(values, name, ref.PasswordKey, "password_key", fix, "", "")
	if perr != nil {
		return Credentials{}, "", perr
	}
	if password.Empty() {
		return Credentials{}, "", protocol.Errorf(protocol.CodeSecretMalformed,
			"the key '%s' of the secret %s is empty", clip(ref.PasswordKey, maxNameText), name)
	}
	c := Credentials{Password: password, VersionID: aws.ToString(out.VersionId)}
	if out.CreatedDate != nil {
		t := out.CreatedDate.UTC()
		c.VersionCreated = &t
	}
	if ref.UsernameKey != "" {
		username, perr := lookupKey(values, name, ref.UsernameKey, "username_key", fix, "", "")
		if perr != nil {
			return Credentials{}, "", perr
		}
		c.Username = username
		c.KeysFound = append(c.KeysFound, KeyUsername)
	}
	c.KeysFound = append(c.KeysFound, KeyPassword)
	return c, "", nil
}

// awsIdentity finds the identity AWS names in an access-denied message
// ("User: arn:aws:sts::111122223333:assumed-role/agent/i-0abc is not
// authorized ..."), and awsBecause its reason ("because no identity-based
// policy allows the secretsmanager:GetSecretValue action").
var (
	awsIdentity = regexp.MustCompile(`arn:aws[a-z-]*:(?:iam|sts)::[0-9]{12}:[A-Za-z0-9+=,.@_/:-]+`)
	awsBecause  = regexp.MustCompile(`because ((?:no|an explicit deny in)[a-zA-Z0-9 :,-]{1,200})`)
)

// Error codes that say AWS refused the credentials themselves.
var awsAuthCodes = map[string]bool{
	"UnrecognizedClientException": true, "InvalidClientTokenId": true, "InvalidSignatureException": true,
	"SignatureDoesNotMatch": true, "IncompleteSignature": true, "MissingAuthenticationToken": true,
	"ExpiredTokenException": true, "ExpiredToken": true, "AuthFailure": true, "InvalidAccessKeyId": true,
}

// callError turns an SDK error (the context still alive) into a
// *protocol.Error whose message says what to change. It never quotes a
// value: a failed call carries none.
func (a *AWS) callError(ref protocol.SecretRef, err error) *protocol.Error {
	name := clip(ref.SecretName, maxNameText)
	region := a.cfg.Region
	attempts := 1
	var mae *retry.MaxAttemptsError
	if errors.As(err, &mae) {
		attempts = mae.Attempt
	}
	requestID := ""
	var rid interface{ ServiceRequestID() string }
	if errors.As(err, &rid) && rid.ServiceRequestID() != "" {
		requestID = " (request id " + clip(rid.ServiceRequestID(), 80) + ")"
	}

	var ce *credentialsError
	if errors.As(err, &ce) {
		return a.credentialsFailure(ce)
	}

	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code := clip(apiErr.ErrorCode(), 80)
		msg := apiErr.ErrorMessage()
		status := 0
		var hs interface{ HTTPStatusCode() int }
		if errors.As(err, &hs) {
			status = hs.HTTPStatusCode()
		}
		switch {
		case code == "ResourceNotFoundException":
			if (ref.VersionStage != "" || ref.VersionID != "") && strings.Contains(msg, "secret value for") {
				setting, v := "version_stage", ref.VersionStage
				if ref.VersionID != "" {
					setting, v = "version_id", ref.VersionID
				}
				return protocol.Errorf(protocol.CodeSecretNotFound,
					"the secret %s in AWS Secrets Manager (region %s) has no version with %s %s; fix %s in the reference",
					name, region, setting, clip(v, 128), setting)
			}
			return protocol.Errorf(protocol.CodeSecretNotFound,
				"AWS Secrets Manager (region %s) has no secret %s; check secret_name in the reference (a secret in another account needs its full ARN) and secrets.aws.region in the agent config",
				region, name)
		case code == "AccessDeniedException":
			who := "the agent's AWS identity (from " + a.source + ")"
			if id := awsIdentity.FindString(msg); id != "" {
				who = "the agent's AWS identity " + strings.TrimRight(id, ".,;:")
			}
			because := ""
			if m := awsBecause.FindStringSubmatch(msg); m != nil {
				because = " because " + clip(strings.TrimSpace(m[1]), 200)
			}
			return protocol.Errorf(protocol.CodeSecretAccessDenied,
				"AWS Secrets Manager denied %s reading the secret %s%s; allow it secretsmanager:GetSecretValue on this secret (identity policy, and the secret's resource policy for another account)%s",
				who, name, because, requestID)
		case code == "DecryptionFailure":
			return protocol.Errorf(protocol.CodeSecretAccessDenied,
				"AWS Secrets Manager cannot decrypt the secret %s for the agent's AWS identity (from %s); grant it kms:Decrypt on the secret's KMS key (a secret read from another account needs a customer-managed key whose key policy allows this identity)%s",
				name, a.source, requestID)
		case code == "InvalidRequestException":
			return protocol.Errorf(protocol.CodeSecretNotFound,
				"AWS Secrets Manager cannot read the secret %s now: %s%s", name, clip(msg, maxServerText), requestID)
		case code == "InvalidParameterException":
			return protocol.Errorf(protocol.CodeInvalidParams,
				"AWS Secrets Manager refused the reference to the secret %s: %s; fix the reference", name, clip(msg, maxServerText))
		case awsAuthCodes[code]:
			return protocol.Errorf(protocol.CodeSecretAccessDenied,
				"AWS rejected the agent's credentials (from %s) with %s: %s; check the credentials and this machine's clock%s",
				a.source, code, clip(msg, maxServerText), requestID)
		case isThrottle(code):
			return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"AWS Secrets Manager throttled reading the secret %s (%s, %d attempts); try again later, or let the agent reuse values with secrets.cache_ttl%s",
				name, code, attempts, requestID)
		case status >= 500 || code == "InternalServiceError":
			return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"AWS Secrets Manager failed reading the secret %s (HTTP %d %s, %d attempts); try again later%s",
				name, status, code, attempts, requestID)
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			return protocol.Errorf(protocol.CodeSecretAccessDenied,
				"AWS Secrets Manager refused reading the secret %s to the agent's AWS identity (from %s): HTTP %d %s%s",
				name, a.source, status, code, requestID)
		default:
			return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"AWS Secrets Manager answered HTTP %d %s reading the secret %s: %s%s",
				status, code, name, clip(msg, maxServerText), requestID)
		}
	}
	return protocol.Errorf(protocol.CodeSecretBackendUnavailable,
		"cannot reach AWS Secrets Manager at %s (%d attempts): %s; check the network path from this machine (proxy, firewall, VPC endpoint)",
		a.endpointText(), attempts, clip(transportReason(err), maxServerText))
}

// credentialsFailure is the error for a call that could not get
// credentials.
func (a *AWS) credentialsFailure(ce *credentialsError) *protocol.Error {
	var apiErr smithy.APIError
	if a.cfg.RoleARN != "" && errors.As(ce.err, &apiErr) {
		who := "the agent's AWS identity"
		if id := awsIdentity.FindString(apiErr.ErrorMessage()); id != "" && !strings.HasPrefix(id, a.cfg.RoleARN) {
			who += " " + strings.TrimRight(id, ".,;:")
		}
		return protocol.Errorf(protocol.CodeSecretAccessDenied,
			"%s cannot assume the role %s (STS: %s); allow it sts:AssumeRole on the role and trust it in the role's trust policy (with the external id, if secrets.aws.external_id is set)",
			who, a.cfg.RoleARN, clip(apiErr.ErrorCode(), 80))
	}
	return protocol.Errorf(protocol.CodeSecretAccessDenied,
		"the agent has no usable AWS credentials from %s: %s; give this machine an instance profile (IMDSv2), or name a profile in secrets.aws.profile (IAM Roles Anywhere: credential_process)",
		a.source, clip(transportReason(ce.err), maxServerText))
}

func isThrottle(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok
}

func (a *AWS) endpointText() string {
	if a.cfg.Endpoint != "" {
		return a.cfg.Endpoint
	}
	return "secretsmanager." + a.cfg.Region + ".amazonaws.com"
}

// transportReason is the most useful part of an SDK error about the
// network: the innermost *url.Error's cause, or else the error's last
// clause.
func transportReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	s := err.Error()
	if i := strings.LastIndex(s, ", "); i >= 0 && i+2 < len(s) {
		return s[i+2:]
	}
	return s
}
