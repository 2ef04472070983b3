package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden and the golden seeds of testdata/fuzz/FuzzDecode from the examples")

// Fixed inputs of the examples, so that the golden files are stable.
var (
	testTime    = time.Date(2026, time.November, 21, 12, 0, 0, 0, time.UTC)
	testKey     = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	testNonce   = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0x42}, NonceSize))
	testAgentID = "agt_01JD8Z3K4M5N6P7Q8R9S0T1V2W"
)

// testSignature is a real hello signature: testKey over the payload of
// testAgentID, testNonce and Version.
func testSignature() string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(testKey, SigningPayload(testAgentID, testNonce, Version)))
}

type example struct {
	// name is the golden file's name: the message type, then for variants
	// a dash and what varies.
	name string
	msg  *Message
}

// examples returns one valid message of every type, and variants for the
// job kinds and results. Each call builds new values, so callers may change
// them.
func examples() []example {
	at := func(d time.Duration) time.Time { return testTime.Add(d) }
	versionCreated := at(-48 * time.Hour)
	rateReset := at(time.Hour)
	tokenExpires := at(90 * 24 * time.Hour)
	awsRef := &SecretRef{Backend: BackendAWS, SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token", VersionStage: "AWSCURRENT"}
	azureRef := &SecretRef{Backend: BackendAzure, VaultName: "kv-platform-prod", UsernameSecret: "github-user", PasswordSecret: "github-token"}
	fileRef := &SecretRef{Backend: BackendFile, SecretName: "/etc/orchestrator/github.json", PasswordKey: "token"}
	orgs := []Organization{{Login: "platform", ID: 1001, Description: "Platform team"}, {Login: "payments", ID: 1002}}
	return []example{
		{"challenge", &Message{Type: TypeChallenge, ID: "cp-1", Challenge: &Challenge{Nonce: testNonce, ServerTime: testTime}}},
		{"hello", &Message{Type: TypeHello, ID: "ag-1", Hello: &Hello{
			AgentID:         testAgentID,
			Signature:       testSignature(),
			ProtocolVersion: Version,
			AgentVersion:    "1.0.0",
			Hostname:        "build-01.corp.example",
			OS:              "linux/amd64",
			Backends: []BackendInfo{
				{Name: BackendAWS, Settings: map[string]string{"region": "eu-west-1"}},
				{Name: BackendAzure, Settings: map[string]string{"cloud": "AzurePublicCloud"}},
				{Name: BackendFile},
			},
			Kinds:       []JobKind{KindResolveCredentials, KindTestConnection, KindListOrganizations},
			Concurrency: 4,
			Running:     []string{"job_0002"},
			Held:        []string{"job_0001"},
		}}},
		{"welcome", &Message{Type: TypeWelcome, ID: "cp-2", Welcome: &Welcome{SessionID: "ses_01JD8Z5", HeartbeatInterval: Duration(15 * time.Second), ServerTime: testTime}}},
		{"heartbeat", &Message{Type: TypeHeartbeat, ID: "ag-2", Heartbeat: &Heartbeat{Running: 1}}},
		{"job", &Message{Type: TypeJob, ID: "cp-3", Job: &Job{
			JobID: "job_0003", Kind: KindResolveCredentials, Params: Params{Secret: awsRef},
			Deadline: at(30 * time.Second), Attempt: 1,
		}}},
		{"job-test_connection", &Message{Type: TypeJob, ID: "cp-4", Job: &Job{
			JobID: "job_0004", Kind: KindTestConnection,
			Params: Params{
				Secret: azureRef, GitHubURL: "https://git.example.com", GitHubKind: GitHubEnterpriseServer,
				RequiredScopes: []string{"repo", "read:org", "workflow"}, Organization: "platform",
			},
			Deadline: at(time.Minute), Attempt: 2,
		}}},
		{"job-list_organizations", &Message{Type: TypeJob, ID: "cp-5", Job: &Job{
			JobID: "job_0005", Kind: KindListOrganizations,
			Params:   Params{Secret: fileRef, GitHubURL: "https://github.com", GitHubKind: GitHubCloud},
			Deadline: at(time.Minute), Attempt: 1,
		}}},
		{"accepted", &Message{Type: TypeAccepted, ID: "ag-3", Accepted: &Accepted{JobID: "job_0003", Attempt: 1}}},
		{"rejected", &Message{Type: TypeRejected, ID: "ag-4", Rejected: &Rejected{JobID: "job_0006", Attempt: 1,
			Error: Error{Code: CodeAgentBusy, Message: "the agent runs 4 jobs, its concurrency; try again later"}}}},
		{"result", &Message{Type: TypeResult, ID: "ag-5", Result: &Result{
			JobID: "job_0003", Attempt: 1, OK: true,
			Output: &Output{Credentials: &CredentialsOutput{
				Backend: BackendAWS, Reference: *awsRef, KeysFound: []string{"username", "password"},
				VersionID: "a1b2c3d4-5678-90ab-cdef-111111111111", VersionCreated: &versionCreated,
				Fingerprint: "hmac-sha256:3f9a0c5e1b7d2468",
			}},
			StartedAt: at(time.Second), FinishedAt: at(1200 * time.Millisecond),
		}}},
		{"result-test_connection", &Message{Type: TypeResult, ID: "ag-6", Result: &Result{
			JobID: "job_0004", Attempt: 2, OK: true,
			Output: &Output{Connection: &ConnectionOutput{
				APIURL: "https://git.example.com/api/v3/", GHESVersion: "3.14.2", Login: "svc-orchestrator",
				TokenType: "classic_pat", ScopesListable: true,
				Scopes: []string{"repo", "read:org"}, MissingScopes: []string{"workflow"},
				Organizations: orgs, SSOOrganizationIDs: []int64{1003},
				RateLimitRemaining: 4990, RateLimitReset: &rateReset, TokenExpiresAt: &tokenExpires,
				Warnings: []string{"GitHub left out 1 organization(s) that enforce SAML single sign-on and for which the token is not authorized (ids in sso_organization_ids); authorize the token for them on GitHub (token settings, Configure SSO)"},
				Timings:  map[string]int64{"secret": 85, "user": 120, "orgs": 95, "github": 215},
			}},
			StartedAt: at(time.Second), FinishedAt: at(1300 * time.Millisecond),
		}}},
		{"result-list_organizations", &Message{Type: TypeResult, ID: "ag-7", Result: &Result{
			JobID: "job_0005", Attempt: 1, OK: true,
			Output:    &Output{Organizations: &OrganizationsOutput{Organizations: orgs}},
			StartedAt: at(time.Second), FinishedAt: at(1500 * time.Millisecond),
		}}},
		{"result-error", &Message{Type: TypeResult, ID: "ag-8", Result: &Result{
			JobID: "job_0007", Attempt: 1,
			Error:     &Error{Code: CodeGitHubBadCredentials, Message: "GitHub refused the token in aws:ci/github@AWSCURRENT (401 Bad credentials); rotate the secret or fix password_key"},
			StartedAt: at(time.Second), FinishedAt: at(1100 * time.Millisecond),
		}}},
		{"result_ack", &Message{Type: TypeResultAck, ID: "cp-6", ResultAck: &ResultAck{JobID: "job_0003"}}},
		{"cancel", &Message{Type: TypeCancel, ID: "cp-7", Cancel: &Cancel{JobID: "job_0004", Reason: "canceled through the API by admin@example.com"}}},
		{"draining", &Message{Type: TypeDraining, ID: "ag-9", Draining: &Draining{Grace: Duration(30 * time.Second), Reason: "SIGTERM"}}},
		{"error", &Message{Type: TypeError, ID: "cp-8", Error: &ErrorBody{
			Error: Error{Code: CodeUnknownType, Message: `unknown message type "teleport"`}, RefID: "ag-10", RefType: "teleport",
		}}},
	}
}

// allTypes lists every message type of protocol v1.
var allTypes = []Type{
	TypeChallenge, TypeHello, TypeWelcome, TypeHeartbeat, TypeJob, TypeAccepted,
	TypeRejected, TypeResult, TypeResultAck, TypeCancel, TypeDraining, TypeError,
}

func exampleOf(t *testing.T, name string) *Message {
	t.Helper()
	for _, e := range examples() {
		if e.name == name {
			return e.msg
		}
	}
	t.Fatalf("no example %q", name)
	return nil
}

func TestExamplesCoverEveryType(t *testing.T) {
	t.Parallel()
	seen := map[Type]bool{}
	for _, e := range examples() {
		seen[e.msg.Type] = true
		if base, _, _ := strings.Cut(e.name, "-"); Type(base) != e.msg.Type {
			t.Errorf("example %s is a %s message; its name must start with its type", e.name, e.msg.Type)
		}
	}
	for _, typ := range allTypes {
		if !seen[typ] {
			t.Errorf("no example of a %s message", typ)
		}
	}
	for _, k := range JobKinds {
		found := false
		for _, e := range examples() {
			if e.msg.Job != nil && e.msg.Job.Kind == k {
				found = true
			}
		}
		if !found {
			t.Errorf("no example of a %s job", k)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range examples() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			b, err := Encode(e.msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, e.msg) {
				t.Errorf("Decode(Encode(m)) differs (-want +got):\n-%#v\n+%#v", e.msg, got)
			}
			again, err := Encode(got)
			if err != nil {
				t.Fatalf("Encode(decoded): %v", err)
			}
			if !bytes.Equal(again, b) {
				t.Errorf("re-encoding differs (-want +got):\n-%s\n+%s", b, again)
			}
		})
	}
}

// TestGolden pins the wire form of every example in testdata/golden. The
// files are indented for people to read; the wire form is the same JSON
// compacted (field order and escaping included), which the test checks
// byte for byte. Run with -update after a deliberate change of the
// contract, and review the diff: other teams read these files.
func TestGolden(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for _, e := range examples() {
		path := filepath.Join(dir, e.name+".json")
		want[e.name+".json"] = true
		t.Run(e.name, func(t *testing.T) {
			wire, err := Encode(e.msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if *update {
				var ind bytes.Buffer
				if err := json.Indent(&ind, wire, "", "  "); err != nil {
					t.Fatal(err)
				}
				ind.WriteByte('\n')
				if err := os.WriteFile(path, ind.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./protocol -run TestGolden -update)", err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, golden); err != nil {
				t.Fatalf("%s is not JSON: %v", path, err)
			}
			if !bytes.Equal(compact.Bytes(), wire) {
				t.Errorf("wire form of %s changed (-%s +Encode):\n-%s\n+%s\nif the change is deliberate, run with -update and review the diff", e.name, path, compact.Bytes(), wire)
			}
			// The file as it stands (indented) is a frame the peer accepts.
			got, err := Decode(golden)
			if err != nil {
				t.Fatalf("Decode(%s): %v", path, err)
			}
			if !reflect.DeepEqual(got, e.msg) {
				t.Errorf("Decode(%s) differs from the example (-want +got):\n-%#v\n+%#v", path, e.msg, got)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		if !want[ent.Name()] {
			t.Errorf("%s has no example; remove it or add the example", filepath.Join(dir, ent.Name()))
		}
	}
}

// TestFuzzSeedsMatchGolden keeps one seed per example in the FuzzDecode
// corpus: the exact wire form of the golden file.
func TestFuzzSeedsMatchGolden(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range examples() {
		wire, err := Encode(e.msg)
		if err != nil {
			t.Fatalf("Encode %s: %v", e.name, err)
		}
		want := fuzzSeedFile(wire)
		path := filepath.Join(dir, "golden-"+e.name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (run go test ./protocol -run TestFuzzSeedsMatchGolden -update)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale (-want +got):\n-%s\n+%s", path, want, got)
		}
	}
}

func TestUnknownFieldsAreIgnored(t *testing.T) {
	t.Parallel()
	for _, e := range examples() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			wire, err := Encode(e.msg)
			if err != nil {
				t.Fatal(err)
			}
			// Add a field to the envelope and one to the body: what a newer
			// peer would send.
			var env map[string]any
			if err := json.Unmarshal(wire, &env); err != nil {
				t.Fatal(err)
			}
			env["trace"] = map[string]any{"span": "abc", "sampled": true, "tags": []any{1, "x", nil}}
			body := env[string(e.msg.Type)].(map[string]any)
			body["added_in_v1_7"] = []any{"future", 2}
			frame, err := json.Marshal(env)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(frame)
			if err != nil {
				t.Fatalf("Decode(%s): %v", frame, err)
			}
			if !reflect.DeepEqual(got, e.msg) {
				t.Errorf("Decode with unknown fields differs (-want +got):\n-%#v\n+%#v", e.msg, got)
			}
		})
	}
}

func TestJobOfUnknownKindDecodes(t *testing.T) {
	t.Parallel()
	// A kind from a later version, with params this version would refuse:
	// the agent must get the job to reject it with kind_not_allowed.
	frame := `{"type":"job","id":"cp-9","job":{"job_id":"job_0100","kind":"workflow_dispatch",` +
		`"params":{"secret":{"backend":"vault"},"github_url":"ftp://x","github_kind":"gitlab","workflow":"ci.yml"},` +
		`"deadline":"2026-11-21T12:01:00Z","attempt":1}}`
	m, err := Decode([]byte(frame))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if m.Job.Kind.Known() {
		t.Fatalf("kind %q is known; pick another for this test", m.Job.Kind)
	}
	if got := m.Job.Params.Secret.Backend; got != "vault" {
		t.Errorf("params.secret.backend = %q; want the params kept as sent", got)
	}
	if err := m.Job.Params.Validate(m.Job.Kind); err == nil || !strings.Contains(err.Error(), "workflow_dispatch") {
		t.Errorf("Params.Validate(unknown kind) = %v; want an error naming the kind", err)
	}

	// The same params under a known kind are refused.
	known := strings.Replace(frame, "workflow_dispatch", string(KindTestConnection), 1)
	if _, err := Decode([]byte(known)); err == nil {
		t.Errorf("Decode of a %s job with bad params succeeded", KindTestConnection)
	}
}

func TestJobKinds(t *testing.T) {
	t.Parallel()
	for _, k := range JobKinds {
		if !k.Known() {
			t.Errorf("%s.Known() = false", k)
		}
	}
	for _, k := range []JobKind{"", "workflow_dispatch", "Resolve_Credentials", "resolve_credentials "} {
		if k.Known() {
			t.Errorf("JobKind(%q).Known() = true", k)
		}
	}
}

func TestJobStates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s               JobState
		valid, terminal bool
	}{
		{JobQueued, true, false},
		{JobDispatched, true, false},
		{JobRunning, true, false},
		{JobSucceeded, true, true},
		{JobFailed, true, true},
		{JobExpired, true, true},
		{JobCanceled, true, true},
		{"", false, false},
		{"done", false, false},
		{"cancelled", false, false},
	}
	for _, tt := range tests {
		if got := tt.s.Valid(); got != tt.valid {
			t.Errorf("JobState(%q).Valid() = %v; want %v", tt.s, got, tt.valid)
		}
		if got := tt.s.Terminal(); got != tt.terminal {
			t.Errorf("JobState(%q).Terminal() = %v; want %v", tt.s, got, tt.terminal)
		}
	}
}
