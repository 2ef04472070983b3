package agent

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// resolveCredentials reads the referenced secret, after the policy allows
// it, and reports what was found: never the values, only a fingerprint.
func (a *Agent) resolveCredentials(ctx context.Context, log *zap.Logger, j *protocol.Job) (*protocol.Output, error) {
	ref := *j.Params.Secret
	if e := a.policy.CheckSecret(ref); e != nil {
		return nil, e
	}
	start := time.Now()
	creds, err := a.secrets.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	return &protocol.Output{Credentials: &protocol.CredentialsOutput{
		Timings:        map[string]int64{"secret": time.Since(start).Milliseconds()},
		Backend:        ref.Backend,
		Reference:      ref,
		KeysFound:      creds.KeysFound,
		VersionID:      creds.VersionID,
		VersionCreated: creds.VersionCreated,
		Fingerprint:    fingerprint(a.id.FingerprintKey, creds.Username, creds.Password),
	}}, nil
}

// fingerprint is a truncated HMAC-SHA256 of the credentials under a key only
// this agent holds: equal credentials give equal fingerprints on this
// agent, rotation changes it, and it reveals nothing about the values.
func fingerprint(key []byte, username, password redact.Secret) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(username.Reveal()))
	m.Write([]byte{0})
	m.Write([]byte(password.Reveal()))
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil)[:12])
}
