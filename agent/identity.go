package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// IdentityFile is the name of the identity file in the state directory.
const IdentityFile = "identity.json"

// Identity is who the agent is: the id it got at enrollment and the key it
// made for itself. It lives in the state directory, mode 0600; the private
// key never leaves it.
type Identity struct {
	AgentID      string    `json:"agent_id"`
	ControlPlane string    `json:"control_plane"`
	EnrolledAt   time.Time `json:"enrolled_at"`
	// PrivateKey is the Ed25519 seed.
	PrivateKey []byte `json:"private_key"`
	// FingerprintKey keys the HMAC that fingerprints resolved credentials.
	FingerprintKey []byte `json:"fingerprint_key"`
}

// Signer returns the private key.
func (id *Identity) Signer() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(id.PrivateKey) }

// LoadIdentity reads the identity from dir, refusing a file that others
// could read.
func LoadIdentity(dir string) (Identity, error) {
	var id Identity
	path := filepath.Join(dir, IdentityFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return id, fmt.Errorf("state_dir: no identity in %s; enroll first: agent enroll --control-plane URL --token TOKEN --state-dir %s", dir, dir)
	}
	if err := checkFileMode(path, 0o077, "the identity file"); err != nil {
		return id, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return id, fmt.Errorf("read identity: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("identity file %s is damaged (%v); enroll again", path, err)
	}
	if id.AgentID == "" || len(id.PrivateKey) != ed25519.SeedSize || len(id.FingerprintKey) < 32 {
		return id, fmt.Errorf("identity file %s is incomplete; enroll again", path)
	}
	return id, nil
}

// saveIdentity writes the identity atomically: a 0600 temporary file in a
// 0700 directory, synced, then renamed over the old one.
func saveIdentity(dir string, id Identity) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, IdentityFile)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// EnrollOptions configure Enroll.
type EnrollOptions struct {
	// ControlPlane, InsecureAllowWS and HTTPClient reach the control plane.
	ControlPlane    string
	InsecureAllowWS bool
	HTTPClient      *http.Client
	// Token is the single-use enrollment token.
	Token string
	// StateDir receives the identity.
	StateDir string
	// Force replaces an existing identity.
	Force bool
	// Hostname and Version describe this machine to the control plane.
	Hostname string
	Version  string
}

// Enroll makes a new key pair, trades the token for the agent's id, and
// writes the identity to the state directory.
func Enroll(ctx context.Context, o EnrollOptions) (Identity, error) {
	var id Identity
	if _, err := os.Stat(filepath.Join(o.StateDir, IdentityFile)); err == nil && !o.Force {
		return id, fmt.Errorf("%s already holds an identity; pass --force to replace it", o.StateDir)
	}
	u, err := HTTPURL(o.ControlPlane, o.InsecureAllowWS, protocol.EnrollPath)
	if err != nil {
		return id, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return id, err
	}
	fp := make([]byte, 32)
	rand.Read(fp)
	body, _ := json.Marshal(protocol.EnrollRequest{
		Token: o.Token, PublicKey: protocol.EncodePublicKey(pub), Hostname: o.Hostname, AgentVersion: o.Version,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return id, err
	}
	req.Header.Set("Content-Type", "application/json")
	client := o.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return id, fmt.Errorf("enroll at %s: %w", o.ControlPlane, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return id, fmt.Errorf("enroll: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae protocol.APIError
		if json.Unmarshal(rb, &ae) == nil && ae.Error.Code != "" {
			return id, fmt.Errorf("enroll refused (%d): %w", resp.StatusCode, &ae.Error)
		}
		return id, fmt.Errorf("enroll refused: HTTP %d", resp.StatusCode)
	}
	var er protocol.EnrollResponse
	if err := json.Unmarshal(rb, &er); err != nil || er.AgentID == "" {
		return id, fmt.Errorf("enroll: the control plane's answer is not an enrollment response")
	}
	id = Identity{
		AgentID: er.AgentID, ControlPlane: o.ControlPlane, EnrolledAt: time.Now().UTC(),
		PrivateKey: priv.Seed(), FingerprintKey: fp,
	}
	if err := saveIdentity(o.StateDir, id); err != nil {
		return Identity{}, fmt.Errorf("enrolled as %s but could not save the identity: %w", er.AgentID, err)
	}
	return id, nil
}
