package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func encodeB64(b []byte) string          { return base64.RawURLEncoding.EncodeToString(b) }
func decodeB64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func TestSigningPayload(t *testing.T) {
	t.Parallel()
	nonce2 := strings.Repeat("Q", 43)
	payloads := map[string][]byte{
		"base":                          SigningPayload(testAgentID, testNonce, Version),
		"other nonce":                   SigningPayload(testAgentID, nonce2, Version),
		"other agent":                   SigningPayload("agt_other", testNonce, Version),
		"other version":                 SigningPayload(testAgentID, testNonce, Version+1),
		"agent id in the nonce's place": SigningPayload(testNonce, testAgentID, Version),
		"prefix of the agent id":        SigningPayload(testAgentID[:5], testNonce, Version),
	}
	seen := map[string]string{}
	for name, p := range payloads {
		if other, ok := seen[string(p)]; ok {
			t.Errorf("payloads %q and %q are equal: %q", name, other, p)
		}
		seen[string(p)] = name
	}
	if !bytes.Equal(SigningPayload(testAgentID, testNonce, Version), payloads["base"]) {
		t.Errorf("SigningPayload is not deterministic")
	}
	// Domain separation: the payload cannot be mistaken for another use of
	// the key.
	if !bytes.HasPrefix(payloads["base"], []byte("orchestrator-agent-session\n")) {
		t.Errorf("payload %q lacks its domain label", payloads["base"])
	}
}

// TestHelloSignature is the handshake in small: the control plane sends a
// nonce, the agent signs the payload with the key it made at enrollment,
// and the control plane verifies against the public key it stored.
func TestHelloSignature(t *testing.T) {
	t.Parallel()
	// Enrollment: the agent makes a key pair and registers the public half.
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	enroll := EnrollRequest{Token: "tok_single_use", PublicKey: EncodePublicKey(pub)}
	if err := enroll.Validate(); err != nil {
		t.Fatalf("EnrollRequest.Validate: %v", err)
	}
	stored, err := ParsePublicKey(enroll.PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	// Session: challenge, then a signed hello.
	challenge := exampleOf(t, "challenge")
	hello := exampleOf(t, "hello")
	sig := ed25519.Sign(priv, SigningPayload(hello.Hello.AgentID, challenge.Challenge.Nonce, hello.Hello.ProtocolVersion))
	hello.Hello.Signature = encodeB64(sig)
	frame, err := Encode(hello)
	if err != nil {
		t.Fatalf("Encode(hello): %v", err)
	}
	got, err := Decode(frame)
	if err != nil {
		t.Fatalf("Decode(hello): %v", err)
	}
	verify := func(agentID, nonce string, version int, sig string) bool {
		raw, err := decodeB64(sig)
		if err != nil {
			return false
		}
		return ed25519.Verify(stored, SigningPayload(agentID, nonce, version), raw)
	}
	h := got.Hello
	if !verify(h.AgentID, challenge.Challenge.Nonce, h.ProtocolVersion, h.Signature) {
		t.Fatalf("the control plane cannot verify a good hello")
	}
	// A replayed hello on a new connection (new nonce) fails, and so does
	// the signature claimed by another agent or for another version.
	if verify(h.AgentID, strings.Repeat("A", 43), h.ProtocolVersion, h.Signature) {
		t.Errorf("a hello signed for another nonce verifies")
	}
	if verify("agt_other", challenge.Challenge.Nonce, h.ProtocolVersion, h.Signature) {
		t.Errorf("a hello signed by another agent verifies")
	}
	if verify(h.AgentID, challenge.Challenge.Nonce, h.ProtocolVersion+1, h.Signature) {
		t.Errorf("a hello signed for another protocol version verifies")
	}
	// And the golden hello carries a real signature by testKey.
	golden := exampleOf(t, "hello").Hello
	raw, err := decodeB64(golden.Signature)
	if err != nil || !ed25519.Verify(testKey.Public().(ed25519.PublicKey), SigningPayload(golden.AgentID, testNonce, golden.ProtocolVersion), raw) {
		t.Errorf("the example hello's signature does not verify (%v)", err)
	}
}

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	seen := map[ErrorCode]bool{}
	for _, c := range ErrorCodes {
		if seen[c] {
			t.Errorf("code %q is listed twice", c)
		}
		seen[c] = true
		if !snake.MatchString(string(c)) {
			t.Errorf("code %q is not snake_case ASCII", c)
		}
		if !c.Known() {
			t.Errorf("%q.Known() = false", c)
		}
	}
	for _, c := range []ErrorCode{"", "made_up_code", "Timeout", "timeout ", "secret_not_found\x00"} {
		if c.Known() {
			t.Errorf("%q.Known() = true", c)
		}
	}

	// Every ErrorCode constant of errors.go is in ErrorCodes: a code added
	// to the constants but not to the list would be refused on the wire.
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := 0
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Type == nil || fmt.Sprint(vs.Type) != "ErrorCode" {
			return true
		}
		for _, v := range vs.Values {
			lit, ok := v.(*ast.BasicLit)
			if !ok {
				continue
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			consts++
			if !seen[ErrorCode(s)] {
				t.Errorf("the constant code %q (%s) is missing from ErrorCodes", s, fset.Position(lit.Pos()))
			}
		}
		return true
	})
	if consts != len(ErrorCodes) {
		t.Errorf("errors.go declares %d ErrorCode constants; ErrorCodes lists %d", consts, len(ErrorCodes))
	}
	// The codes that DESIGN §4 names.
	for _, c := range []ErrorCode{
		"secret_not_found", "secret_access_denied", "secret_malformed", "secret_backend_unavailable",
		"host_not_allowed", "secret_not_allowed", "kind_not_allowed", "github_unreachable", "github_tls",
		"github_bad_credentials", "github_forbidden", "github_sso_required", "github_rate_limited",
		"github_not_found", "timeout", "canceled", "agent_offline", "agent_busy", "invalid_params", "internal",
	} {
		if !c.Known() {
			t.Errorf("DESIGN §4 code %q is not known", c)
		}
	}
}

func TestError(t *testing.T) {
	t.Parallel()
	e := Errorf(CodeSecretMalformed, "the secret %s has no key %q; keys found: %s", "ci/github", "token", "username, pat")
	if got, want := e.Error(), `secret_malformed: the secret ci/github has no key "token"; keys found: username, pat`; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	if err := e.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	var target *Error
	if !errors.As(fmt.Errorf("job: %w", e), &target) || target.Code != CodeSecretMalformed {
		t.Errorf("errors.As does not find the *Error")
	}
	b, err := json.Marshal(APIError{Error: *e})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"error":{"code":"secret_malformed","message":"the secret ci/github has no key \"token\"; keys found: username, pat"}}`
	if string(b) != want {
		t.Errorf("APIError JSON = %s; want %s", b, want)
	}
}

func TestDurationText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		out  string // MarshalText of the value
	}{
		{"30s", 30 * time.Second, "30s"},
		{"1m30s", 90 * time.Second, "1m30s"},
		{"90s", 90 * time.Second, "1m30s"},
		{"1.5h", 90 * time.Minute, "1h30m0s"},
		{"100ms", 100 * time.Millisecond, "100ms"},
		{"0", 0, "0s"},
		{"-5s", -5 * time.Second, "-5s"},
		{"1h2m3.004005006s", time.Hour + 2*time.Minute + 3*time.Second + 4005006, "1h2m3.004005006s"},
		{"2562047h47m16.854775807s", time.Duration(1<<63 - 1), "2562047h47m16.854775807s"},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil {
			t.Errorf("UnmarshalText(%q): %v", tt.in, err)
			continue
		}
		if d.D() != tt.want {
			t.Errorf("UnmarshalText(%q) = %v; want %v", tt.in, d.D(), tt.want)
		}
		out, err := d.MarshalText()
		if err != nil || string(out) != tt.out {
			t.Errorf("MarshalText(%v) = %q, %v; want %q", d.D(), out, err, tt.out)
		}
		var back Duration
		if err := back.UnmarshalText(out); err != nil || back != d {
			t.Errorf("UnmarshalText(MarshalText(%v)) = %v, %v", d.D(), back.D(), err)
		}
	}

	for _, in := range []string{"", "5", "abc", "1x", "5 s", "s", "-", "1e3s", "9999999999999999999h", "1h" + strings.Repeat("0", 63) + "s"} {
		d := Duration(42)
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) = %v; want an error", in, d.D())
		} else if d != 42 {
			t.Errorf("UnmarshalText(%q) failed but changed the value to %v", in, d.D())
		}
	}

	// In JSON a Duration is a string.
	type wrap struct {
		D Duration `json:"d"`
	}
	b, err := json.Marshal(wrap{Duration(15 * time.Second)})
	if err != nil || string(b) != `{"d":"15s"}` {
		t.Errorf("json.Marshal = %s, %v; want {\"d\":\"15s\"}", b, err)
	}
	for _, in := range []string{`{"d":15}`, `{"d":"15"}`, `{"d":true}`, `{"d":"soon"}`} {
		var w wrap
		if err := json.Unmarshal([]byte(in), &w); err == nil {
			t.Errorf("json.Unmarshal(%s) = %v; want an error", in, w.D.D())
		}
	}
}

// TestSecretRefString checks that a reference prints where the secret is
// (backend, names, version) and nothing else: not the keys inside it, and
// never anything that could be a value.
func TestSecretRefString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ref  SecretRef
		want string
	}{
		{SecretRef{Backend: BackendAWS, SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"}, "aws:ci/github"},
		{SecretRef{Backend: BackendAWS, SecretName: "ci/github", PasswordKey: "token", VersionStage: "AWSPREVIOUS"}, "aws:ci/github@AWSPREVIOUS"},
		{SecretRef{Backend: BackendAWS, SecretName: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ci/github-AbCdEf", PasswordKey: "token", VersionID: "v-1"}, "aws:arn:aws:secretsmanager:eu-west-1:123456789012:secret:ci/github-AbCdEf@v-1"},
		{SecretRef{Backend: BackendFile, SecretName: "/etc/orchestrator/github.json", UsernameKey: "user", PasswordKey: "pat"}, "file:/etc/orchestrator/github.json"},
		{SecretRef{Backend: BackendAzure, VaultName: "kv-platform-prod", UsernameSecret: "github-user", PasswordSecret: "github-token"}, "azure:kv-platform-prod/github-token"},
		{SecretRef{}, ":"},
	}
	for _, tt := range tests {
		if got := tt.ref.String(); got != tt.want {
			t.Errorf("%#v.String() = %q; want %q", tt.ref, got, tt.want)
		}
		// fmt prints the reference the same way, by value or by pointer.
		if got := fmt.Sprintf("%v %s", tt.ref, &tt.ref); got != tt.want+" "+tt.want {
			t.Errorf("fmt of %#v = %q", tt.ref, got)
		}
	}

	// Whatever the fields hold, String shows only the backend, the secret
	// or vault name, the password secret's name and the version.
	ref := SecretRef{
		Backend: BackendAWS, SecretName: "NAME", UsernameKey: "CANARY-UK", PasswordKey: "CANARY-PK", VersionStage: "STAGE",
		VaultName: "CANARY-VAULT", UsernameSecret: "CANARY-US", PasswordSecret: "CANARY-PS",
	}
	for _, backend := range []string{BackendAWS, BackendFile, BackendAzure, "other"} {
		ref.Backend = backend
		s := ref.String()
		if backend == BackendAzure {
			s = strings.Replace(s, "CANARY-VAULT/CANARY-PS", "", 1)
		}
		if strings.Contains(s, "CANARY") {
			t.Errorf("String() of a %s reference = %q: shows fields beyond its name", backend, ref.String())
		}
	}
}

func TestCheckGitHubURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"https://github.com", "https://github.com/", "https://git.example.com", "https://git.example.com:8443/",
		"http://ghes.internal", "https://10.0.0.5", "https://[fd00::5]:443", "https://git.example.com/api/v3",
	} {
		if err := CheckGitHubURL(u); err != nil {
			t.Errorf("CheckGitHubURL(%q) = %v", u, err)
		}
	}
	for _, u := range []string{
		"", "github.com", "//github.com", "ftp://github.com", "file:///etc/passwd", "javascript:alert(1)",
		"https://", "https://:443", "https://user@github.com", "https://x:y@github.com", "https://github.com?",
		"https://github.com/?a=b", "https://github.com/#a", "https://git hub.com", "https://github.com/\n",
	} {
		if err := CheckGitHubURL(u); err == nil {
			t.Errorf("CheckGitHubURL(%q) = nil; want an error", u)
		} else if !strings.HasPrefix(err.Error(), "params.github_url ") {
			t.Errorf("CheckGitHubURL(%q) = %v; the error must name params.github_url", u, err)
		}
	}
}

func TestEnrollRequest(t *testing.T) {
	t.Parallel()
	pub := testKey.Public().(ed25519.PublicKey)
	valid := EnrollRequest{Token: "tok_8f3a", PublicKey: EncodePublicKey(pub), Hostname: "build-01", AgentVersion: "1.0.0"}
	if err := valid.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	b, err := json.Marshal(valid)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"token":"tok_8f3a","public_key":"` + EncodePublicKey(pub) + `","hostname":"build-01","agent_version":"1.0.0"}`; string(b) != want {
		t.Errorf("JSON = %s; want %s", b, want)
	}
	tests := []struct {
		name   string
		change func(r *EnrollRequest)
		want   string
	}{
		{"no token", func(r *EnrollRequest) { r.Token = "" }, "token is required"},
		{"token too long", func(r *EnrollRequest) { r.Token = strings.Repeat("t", 257) }, "at most 256"},
		{"no key", func(r *EnrollRequest) { r.PublicKey = "" }, "public_key must be"},
		{"key too short", func(r *EnrollRequest) { r.PublicKey = r.PublicKey[:40] }, "public_key must be"},
		{"key in std base64", func(r *EnrollRequest) { r.PublicKey = r.PublicKey + "=" }, "public_key must be"},
		{"hostname too long", func(r *EnrollRequest) { r.Hostname = strings.Repeat("h", 257) }, "hostname is 257 bytes"},
		{"agent version too long", func(r *EnrollRequest) { r.AgentVersion = strings.Repeat("v", 257) }, "agent_version is 257 bytes"},
	}
	for _, tt := range tests {
		r := valid
		tt.change(&r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v; want an error saying %q", tt.name, err, tt.want)
		}
	}
}

func TestParsePublicKey(t *testing.T) {
	t.Parallel()
	pub := testKey.Public().(ed25519.PublicKey)
	s := EncodePublicKey(pub)
	if len(s) != 43 || strings.ContainsAny(s, "+/=") {
		t.Errorf("EncodePublicKey = %q; want 43 characters of unpadded base64url", s)
	}
	got, err := ParsePublicKey(s)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParsePublicKey(EncodePublicKey(k)) = %x, %v; want %x", got, err, pub)
	}
	for name, in := range map[string]string{
		"empty":                    "",
		"short":                    s[:42],
		"long":                     s + "A",
		"padded":                   s + "=",
		"std alphabet":             strings.Repeat("+", 43),
		"a 64-byte private key":    encodeB64(testKey),
		"space inside":             s[:20] + " " + s[20:],
		"33 bytes":                 encodeB64(append([]byte{0}, pub...)),
		"hex instead of base64url": fmt.Sprintf("%x", []byte(pub)),
	} {
		if k, err := ParsePublicKey(in); err == nil {
			t.Errorf("ParsePublicKey(%s: %q) = %x; want an error", name, in, k)
		}
	}
}
