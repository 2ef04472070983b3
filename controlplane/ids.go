package controlplane

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// idEncoding is lowercase Crockford-style base32: sortable and unambiguous.
var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newID returns prefix + a random id whose first 48 bits are the time in
// milliseconds, so ids sort by creation.
func newID(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+).
	return prefix + idEncoding.EncodeToString(b[:])
}

// tokenPrefix marks enrollment tokens, so secret scanners can find leaked ones.
const tokenPrefix = "oet_"

// newToken returns a single-use enrollment token: 32 random bytes.
func newToken() string {
	var b [32]byte
	rand.Read(b[:])
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// hashToken is how tokens are stored and looked up.
func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// newNonce returns a challenge nonce.
func newNonce() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
