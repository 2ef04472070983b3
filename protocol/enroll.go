package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
)

// EnrollRequest is the body of POST EnrollPath: the agent trades its
// single-use enrollment token for its agent id, and registers the public
// half of the key pair it made. The private key never leaves the agent.
type EnrollRequest struct {
	// Token is the single-use enrollment token from the platform admin.
	Token string `json:"token"`
	// PublicKey is the agent's Ed25519 public key, base64url without padding.
	PublicKey string `json:"public_key"`
	// Hostname and AgentVersion describe the enrolling machine.
	Hostname     string `json:"hostname,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// Validate checks an enrollment request.
func (r *EnrollRequest) Validate() error {
	if r.Token == "" || len(r.Token) > 256 {
		return fmt.Errorf("token is required (at most 256 bytes)")
	}
	if _, err := ParsePublicKey(r.PublicKey); err != nil {
		return err
	}
	if err := checkLen("hostname", r.Hostname, 256); err != nil {
		return err
	}
	return checkLen("agent_version", r.AgentVersion, 256)
}

// EnrollResponse answers a successful enrollment.
type EnrollResponse struct {
	AgentID string `json:"agent_id"`
	Name    string `json:"name"`
}

// EncodePublicKey writes an Ed25519 public key as it travels.
func EncodePublicKey(k ed25519.PublicKey) string { return base64.RawURLEncoding.EncodeToString(k) }

// ParsePublicKey reads an Ed25519 public key written by EncodePublicKey.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public_key must be an Ed25519 public key in base64url")
	}
	return ed25519.PublicKey(b), nil
}
