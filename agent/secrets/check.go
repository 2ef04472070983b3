package secrets

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/orchestrator/orchestrator/protocol"
)

// This file holds the checks `agent doctor` runs against the cloud
// backends: each proves that the agent's identity can reach the secret
// manager and see a secret, without reading the secret's value.

// SecretInfo is what a check learned about a secret, never its value.
type SecretInfo struct {
	// Name is the secret's name; ID its ARN or Key Vault id.
	Name, ID string
	// Changed is when the secret last changed, if the backend says.
	Changed *time.Time
}

// Describe checks that the agent's AWS identity sees the secret name (or
// ARN), with DescribeSecret: the secret's metadata, not its value. It
// returns a *protocol.Error (secret_not_found, secret_access_denied,
// secret_backend_unavailable) whose message names the fix, or ctx.Err().
//
// DescribeSecret is a permission of its own: the agent's jobs need only
// secretsmanager:GetSecretValue; `agent doctor` needs DescribeSecret too
// (deploy/aws-iam-policy.json grants both).
func (a *AWS) Describe(ctx context.Context, name string) (SecretInfo, error) {
	start := time.Now()
	ref := protocol.SecretRef{Backend: protocol.BackendAWS, SecretName: name}
	out, err := a.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			logCall(a.log, protocol.BackendAWS, ref, start, ctxErr, err.Error())
			return SecretInfo{}, ctxErr
		}
		perr := a.describeError(ref, err)
		logCall(a.log, protocol.BackendAWS, ref, start, perr, err.Error())
		return SecretInfo{}, perr
	}
	logCall(a.log, protocol.BackendAWS, ref, start, nil, "")
	info := SecretInfo{Name: aws.ToString(out.Name), ID: aws.ToString(out.ARN)}
	if out.LastChangedDate != nil {
		t := out.LastChangedDate.UTC()
		info.Changed = &t
	}
	return info, nil
}

// describeError is callError for DescribeSecret: the same words, but an
// access denied names the DescribeSecret permission.
func (a *AWS) describeError(ref protocol.SecretRef, err error) *protocol.Error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "AccessDeniedException" {
		who := "the agent's AWS identity (from " + a.source + ")"
		if id := awsIdentity.FindString(apiErr.ErrorMessage()); id != "" {
			who = "the agent's AWS identity " + strings.TrimRight(id, ".,;:")
		}
		return protocol.Errorf(protocol.CodeSecretAccessDenied,
			"AWS Secrets Manager denied %s describing the secret %s; allow it secretsmanager:DescribeSecret (for agent doctor) and secretsmanager:GetSecretValue (for jobs) on this secret, as in deploy/aws-iam-policy.json",
			who, clip(ref.SecretName, maxNameText))
	}
	return a.callError(ref, err)
}

// Properties checks that the agent's Azure identity sees the secret in the
// vault (its name or https URL), by listing the secret's versions: their
// properties only, never a value. It returns a *protocol.Error whose
// message names the fix, or ctx.Err(). Listing needs the
// Microsoft.KeyVault/vaults/secrets/readMetadata/action data action, which
// the Key Vault Secrets User role holds (with an access policy: the List
// permission).
func (z *Azure) Properties(ctx context.Context, vaultName, secretName string) (info SecretInfo, err error) {
	ref := protocol.SecretRef{Backend: protocol.BackendAzure, VaultName: vaultName, PasswordSecret: secretName}
	if !azureSecretName.MatchString(secretName) {
		return SecretInfo{}, protocol.Errorf(protocol.CodeInvalidParams,
			"%q is not a Key Vault secret name (1 to 127 letters, digits and hyphens)", clip(secretName, 128))
	}
	vaultURL, perr := z.vault(vaultName)
	if perr != nil {
		return SecretInfo{}, perr
	}
	client, cerr := z.client(vaultURL)
	if cerr != nil {
		return SecretInfo{}, protocol.Errorf(protocol.CodeInvalidParams,
			"the vault URL %s cannot be used: %s", clip(vaultURL, 256), clip(cerr.Error(), maxServerText))
	}
	start := time.Now()
	defer func() {
		// As in get: a malformed challenge must not bring the agent down.
		if r := recover(); r != nil {
			info, err = SecretInfo{}, protocol.Errorf(protocol.CodeSecretBackendUnavailable,
				"the Key Vault %s sent an answer the Azure SDK could not handle (a malformed authentication challenge?)", clip(vaultName, maxNameText))
		}
		logCall(z.log, protocol.BackendAzure, ref, start, err, "")
	}()
	pager := client.NewListSecretPropertiesVersionsPager(secretName, nil)
	page, lerr := pager.NextPage(ctx)
	if lerr != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return SecretInfo{}, ctxErr
		}
		e := z.callError(ref, secretName, "the secret name", lerr)
		if e.Code == protocol.CodeSecretAccessDenied {
			e.Message = strings.Replace(e.Message, "the secret Get permission", "the secret Get and List permissions", 1)
		}
		return SecretInfo{}, e
	}
	if len(page.Value) == 0 {
		return SecretInfo{}, protocol.Errorf(protocol.CodeSecretNotFound,
			"the Key Vault %s has no secret %s", clip(vaultName, maxNameText), secretName)
	}
	info.Name = secretName
	for _, p := range page.Value {
		if p == nil || p.Attributes == nil || p.Attributes.Updated == nil {
			continue
		}
		if t := p.Attributes.Updated.UTC(); info.Changed == nil || t.After(*info.Changed) {
			info.Changed = &t
		}
		if p.ID != nil {
			info.ID = string(*p.ID)
		}
	}
	return info, nil
}

// Has reports whether the secrets file holds a secret named name (the
// file's mode and syntax are checked as for Resolve). For `agent doctor`.
func (f *File) Has(name string) (bool, error) {
	secrets, _, perr := f.load()
	if perr != nil {
		return false, perr
	}
	_, ok := secrets[name]
	return ok, nil
}
