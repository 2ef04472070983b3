package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// rawFrame marshals the example called name after change, without
// validating it: what a broken or hostile peer could send.
func rawFrame(t *testing.T, name string, change func(m *Message)) string {
	t.Helper()
	m := exampleOf(t, name)
	if change != nil {
		change(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %s: %v", name, err)
	}
	return string(b)
}

// padded returns a heartbeat frame of exactly n bytes, padded with an
// unknown field.
func padded(t *testing.T, n int) string {
	t.Helper()
	head, tail := `{"type":"heartbeat","heartbeat":{"running":1},"pad":"`, `"}`
	if n < len(head)+len(tail) {
		t.Fatalf("padded(%d): too short", n)
	}
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

// nested returns a valid heartbeat frame whose deepest array sits at depth
// 1+n (the envelope is depth 1).
func nested(n int) string {
	return `{"type":"heartbeat","heartbeat":{"running":1},"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
}

func TestDecodeAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame string
	}{
		{"exactly MaxFrameSize", padded(t, MaxFrameSize)},
		{"nesting at MaxDepth", nested(MaxDepth - 1)},
		{"brackets inside a string do not count", `{"type":"heartbeat","heartbeat":{"running":1},"x":"` + strings.Repeat("[{", 5*MaxDepth) + `"}`},
		{"escaped quote keeps the string open", `{"type":"heartbeat","heartbeat":{"running":1},"x":"\"` + strings.Repeat("[", 5*MaxDepth) + `\""}`},
		{"id of MaxIDLength bytes", `{"type":"heartbeat","id":"` + strings.Repeat("i", MaxIDLength) + `","heartbeat":{"running":0}}`},
		{"no id", `{"type":"heartbeat","heartbeat":{"running":0}}`},
		{"null bodies of other types", `{"type":"heartbeat","heartbeat":{"running":0},"job":null,"error":null}`},
		{"whitespace around", " \n\t{\"type\":\"heartbeat\",\"heartbeat\":{\"running\":0}}\r\n"},
		{"heartbeat interval at the bounds", rawFrame(t, "welcome", func(m *Message) { m.Welcome.HeartbeatInterval = Duration(10 * time.Minute) })},
		{"aws ref with version id", rawFrame(t, "job", func(m *Message) {
			m.Job.Params.Secret.VersionStage, m.Job.Params.Secret.VersionID = "", "v-1"
		})},
		{"aws ref without username_key", rawFrame(t, "job", func(m *Message) { m.Job.Params.Secret.UsernameKey = "" })},
		{"azure ref without username_secret", rawFrame(t, "job-test_connection", func(m *Message) { m.Job.Params.Secret.UsernameSecret = "" })},
		{"http github url with port and path", rawFrame(t, "job-test_connection", func(m *Message) { m.Job.Params.GitHubURL = "http://ghes.internal:8080/github" })},
		{"draining without grace", `{"type":"draining","draining":{"grace":"0s"}}`},
		{"result that failed with output", rawFrame(t, "result-error", func(m *Message) {
			m.Result.Output = &Output{Organizations: &OrganizationsOutput{}}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Decode([]byte(tt.frame)); err != nil {
				t.Errorf("Decode: %v\nframe: %.300s", err, tt.frame)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	job := func(change func(j *Job)) string {
		return rawFrame(t, "job", func(m *Message) { change(m.Job) })
	}
	conn := func(change func(p *Params)) string {
		return rawFrame(t, "job-test_connection", func(m *Message) { change(&m.Job.Params) })
	}
	aws := func(change func(r *SecretRef)) string {
		return rawFrame(t, "job", func(m *Message) { change(m.Job.Params.Secret) })
	}
	azure := func(change func(r *SecretRef)) string {
		return rawFrame(t, "job-test_connection", func(m *Message) { change(m.Job.Params.Secret) })
	}
	hello := func(change func(h *Hello)) string {
		return rawFrame(t, "hello", func(m *Message) { change(m.Hello) })
	}
	result := func(change func(r *Result)) string {
		return rawFrame(t, "result", func(m *Message) { change(m.Result) })
	}

	tests := []struct {
		name  string
		frame string
		code  ErrorCode
		// typ and id are what the DecodeError (and so the reply) names;
		// an empty id is not checked.
		typ Type
		id  string
		// msg holds texts the error must contain: it names the problem.
		msg []string
	}{
		// Limits, before any decoding.
		{name: "frame over MaxFrameSize", frame: padded(t, MaxFrameSize+1), code: CodeFrameTooLarge, msg: []string{"262145 bytes", "frame too large", "limit 262144"}},
		{name: "nesting deeper than MaxDepth", frame: nested(MaxDepth), code: CodeMalformedMessage, msg: []string{"nested deeper than 16"}},
		{name: "deep nesting after an escaped backslash", frame: `{"type":"heartbeat","heartbeat":{"running":1},"s":"\\","x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`, code: CodeMalformedMessage, msg: []string{"nested deeper"}},
		{name: "deep nesting of objects", frame: strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1), code: CodeMalformedMessage, msg: []string{"nested deeper"}},

		// Malformed JSON.
		{name: "truncated JSON", frame: `{"type":"hello","id":"ag-1","hello":{`, code: CodeMalformedMessage, msg: []string{"malformed message", "unexpected end of JSON"}},
		{name: "not JSON", frame: `hello there`, code: CodeMalformedMessage, msg: []string{"invalid character"}},
		{name: "empty frame", frame: ``, code: CodeMalformedMessage, msg: []string{"malformed message"}},
		{name: "array, not object", frame: `[{"type":"heartbeat"}]`, code: CodeMalformedMessage, msg: []string{"cannot unmarshal array"}},
		{name: "trailing garbage", frame: `{"type":"heartbeat","heartbeat":{"running":1}}x`, code: CodeMalformedMessage, msg: []string{"invalid character 'x' after top-level value"}},
		{name: "body of the wrong JSON type keeps type and id", frame: `{"type":"hello","id":"ag-1","hello":{"concurrency":"four"}}`, code: CodeMalformedMessage, typ: TypeHello, id: "ag-1", msg: []string{"cannot unmarshal string", "concurrency"}},
		{name: "body is an array keeps type and id", frame: `{"type":"heartbeat","id":"ag-2","heartbeat":[]}`, code: CodeMalformedMessage, typ: TypeHeartbeat, id: "ag-2", msg: []string{"cannot unmarshal array"}},
		{name: "bad duration keeps type and id", frame: `{"type":"welcome","id":"cp-2","welcome":{"session_id":"s","heartbeat_interval":"soon","server_time":"2026-11-21T12:00:00Z"}}`, code: CodeMalformedMessage, typ: TypeWelcome, id: "cp-2", msg: []string{"soon"}},
		{name: "duration as a number", frame: `{"type":"draining","id":"ag-9","draining":{"grace":30}}`, code: CodeMalformedMessage, typ: TypeDraining, id: "ag-9", msg: []string{"cannot unmarshal number"}},
		{name: "bad time keeps type and id", frame: `{"type":"job","id":"cp-3","job":{"job_id":"j","kind":"resolve_credentials","deadline":"tomorrow","attempt":1}}`, code: CodeMalformedMessage, typ: TypeJob, id: "cp-3", msg: []string{"tomorrow"}},
		{name: "type of the wrong JSON type", frame: `{"type":7,"heartbeat":{"running":1}}`, code: CodeMalformedMessage, msg: []string{"cannot unmarshal number"}},

		// The envelope.
		{name: "missing type", frame: `{"id":"ag-2","heartbeat":{"running":1}}`, code: CodeMalformedMessage, id: "ag-2", msg: []string{"type field is missing"}},
		{name: "null frame", frame: `null`, code: CodeMalformedMessage, msg: []string{"type field is missing"}},
		{name: "empty object", frame: `{}`, code: CodeMalformedMessage, msg: []string{"type field is missing"}},
		{name: "unknown type", frame: `{"type":"teleport","id":"ag-10","teleport":{"to":"mars"}}`, code: CodeUnknownType, typ: "teleport", id: "ag-10", msg: []string{"unknown message type", `"teleport"`}},
		{name: "unknown type with a known body", frame: `{"type":"Heartbeat","heartbeat":{"running":1}}`, code: CodeUnknownType, typ: "Heartbeat", msg: []string{`"Heartbeat"`}},
		{name: "type without its body", frame: `{"type":"heartbeat","id":"ag-2"}`, code: CodeMalformedMessage, typ: TypeHeartbeat, id: "ag-2", msg: []string{`needs its "heartbeat" body`}},
		{name: "type with a null body", frame: `{"type":"job","job":null}`, code: CodeMalformedMessage, typ: TypeJob, msg: []string{`needs its "job" body`}},
		{name: "type with another type's body", frame: `{"type":"heartbeat","cancel":{"job_id":"j"}}`, code: CodeMalformedMessage, typ: TypeHeartbeat, msg: []string{`needs its "heartbeat" body`}},
		{name: "two bodies", frame: `{"type":"heartbeat","heartbeat":{"running":1},"cancel":{"job_id":"j"}}`, code: CodeMalformedMessage, typ: TypeHeartbeat, msg: []string{"carries 2 bodies", "exactly one"}},
		{name: "id with a space", frame: `{"type":"heartbeat","id":"ag 2","heartbeat":{"running":1}}`, code: CodeMalformedMessage, typ: TypeHeartbeat, id: "ag 2", msg: []string{"id holds a space"}},
		{name: "id with a control character", frame: `{"type":"heartbeat","id":"ag\u00002","heartbeat":{"running":1}}`, code: CodeMalformedMessage, typ: TypeHeartbeat, id: "ag\x002", msg: []string{"id holds a space, control"}},
		{name: "id with non-ASCII", frame: `{"type":"heartbeat","id":"agé","heartbeat":{"running":1}}`, code: CodeMalformedMessage, typ: TypeHeartbeat, id: "agé", msg: []string{"non-ASCII"}},
		{name: "id too long", frame: `{"type":"heartbeat","id":"` + strings.Repeat("i", MaxIDLength+1) + `","heartbeat":{"running":1}}`, code: CodeMalformedMessage, typ: TypeHeartbeat, id: strings.Repeat("i", MaxIDLength+1), msg: []string{"id is 129 bytes; at most 128"}},

		// challenge
		{name: "nonce too short", frame: rawFrame(t, "challenge", func(m *Message) { m.Challenge.Nonce = testNonce[:22] }), code: CodeMalformedMessage, typ: TypeChallenge, id: "cp-1", msg: []string{"nonce must be 32 bytes"}},
		{name: "nonce too long", frame: rawFrame(t, "challenge", func(m *Message) { m.Challenge.Nonce = testNonce + "QkJC" }), code: CodeMalformedMessage, typ: TypeChallenge, msg: []string{"nonce must be 32 bytes"}},
		{name: "nonce in padded std base64", frame: rawFrame(t, "challenge", func(m *Message) { m.Challenge.Nonce = testNonce + "=" }), code: CodeMalformedMessage, typ: TypeChallenge, msg: []string{"nonce must be 32 bytes in base64url"}},
		{name: "no nonce", frame: rawFrame(t, "challenge", func(m *Message) { m.Challenge.Nonce = "" }), code: CodeMalformedMessage, typ: TypeChallenge, msg: []string{"nonce"}},

		// hello
		{name: "signature too short", frame: hello(func(h *Hello) { h.Signature = h.Signature[:80] }), code: CodeMalformedMessage, typ: TypeHello, id: "ag-1", msg: []string{"signature must be an Ed25519 signature"}},
		{name: "signature not base64url", frame: hello(func(h *Hello) { h.Signature = strings.Repeat("+", 86) }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"signature must be"}},
		{name: "no signature", frame: hello(func(h *Hello) { h.Signature = "" }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"signature must be"}},
		{name: "no agent id", frame: hello(func(h *Hello) { h.AgentID = "" }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"agent_id is required"}},
		{name: "agent id with a newline", frame: hello(func(h *Hello) { h.AgentID = "agt\nevil" }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"agent_id holds a space, control"}},
		{name: "protocol version 0", frame: hello(func(h *Hello) { h.ProtocolVersion = 0 }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"protocol_version must be 1 or more"}},
		{name: "concurrency 0", frame: hello(func(h *Hello) { h.Concurrency = 0 }), code: CodeMalformedMessage, typ: TypeHello, id: "ag-1", msg: []string{"concurrency is 0", "from 1 to 1024"}},
		{name: "concurrency over the max", frame: hello(func(h *Hello) { h.Concurrency = MaxConcurrency + 1 }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"concurrency is 1025"}},
		{name: "hostname too long", frame: hello(func(h *Hello) { h.Hostname = strings.Repeat("h", 257) }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"hostname is 257 bytes"}},
		{name: "backend without name", frame: hello(func(h *Hello) { h.Backends[0].Name = "" }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"backend name is required"}},
		{name: "backend setting too long", frame: hello(func(h *Hello) { h.Backends[0].Settings["region"] = strings.Repeat("r", 1024) }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"backend setting region is 1030 bytes"}},
		{name: "kind with a space", frame: hello(func(h *Hello) { h.Kinds = append(h.Kinds, "bad kind") }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"kind holds a space"}},
		{name: "held job id empty", frame: hello(func(h *Hello) { h.Held = []string{""} }), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"job id is required"}},
		{name: "too many running ids", frame: hello(func(h *Hello) {
			h.Running = make([]string, MaxListLength+1)
			for i := range h.Running {
				h.Running[i] = "j"
			}
		}), code: CodeMalformedMessage, typ: TypeHello, msg: []string{"running has 10001 entries"}},

		// welcome, heartbeat, draining
		{name: "welcome without session id", frame: rawFrame(t, "welcome", func(m *Message) { m.Welcome.SessionID = "" }), code: CodeMalformedMessage, typ: TypeWelcome, msg: []string{"session_id is required"}},
		{name: "heartbeat interval too short", frame: rawFrame(t, "welcome", func(m *Message) { m.Welcome.HeartbeatInterval = Duration(50 * time.Millisecond) }), code: CodeMalformedMessage, typ: TypeWelcome, msg: []string{"heartbeat_interval 50ms is outside"}},
		{name: "heartbeat interval too long", frame: rawFrame(t, "welcome", func(m *Message) { m.Welcome.HeartbeatInterval = Duration(11 * time.Minute) }), code: CodeMalformedMessage, typ: TypeWelcome, msg: []string{"heartbeat_interval 11m0s is outside"}},
		{name: "negative heartbeat running", frame: `{"type":"heartbeat","heartbeat":{"running":-1}}`, code: CodeMalformedMessage, typ: TypeHeartbeat, msg: []string{"running is -1"}},
		{name: "negative grace", frame: `{"type":"draining","draining":{"grace":"-1s"}}`, code: CodeMalformedMessage, typ: TypeDraining, msg: []string{"grace must not be negative"}},
		{name: "draining reason too long", frame: rawFrame(t, "draining", func(m *Message) { m.Draining.Reason = strings.Repeat("r", MaxMessageText+1) }), code: CodeMalformedMessage, typ: TypeDraining, msg: []string{"reason is 4097 bytes"}},

		// job
		{name: "job without deadline", frame: job(func(j *Job) { j.Deadline = time.Time{} }), code: CodeMalformedMessage, typ: TypeJob, id: "cp-3", msg: []string{"job job_0003 has no deadline"}},
		{name: "job with zero deadline in another zone", frame: `{"type":"job","job":{"job_id":"j","kind":"x","deadline":"0001-01-01T01:00:00+01:00","attempt":1}}`, code: CodeMalformedMessage, typ: TypeJob, msg: []string{"has no deadline"}},
		{name: "job attempt 0", frame: job(func(j *Job) { j.Attempt = 0 }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"attempt must be 1 or more"}},
		{name: "job without id", frame: job(func(j *Job) { j.JobID = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"job_id is required"}},
		{name: "job id with a space", frame: job(func(j *Job) { j.JobID = "job 3" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"job_id holds a space"}},
		{name: "job without kind", frame: job(func(j *Job) { j.Kind = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"kind is required"}},
		{name: "job without secret", frame: job(func(j *Job) { j.Params.Secret = nil }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.secret is required for resolve_credentials"}},
		{name: "test_connection without secret", frame: conn(func(p *Params) { p.Secret = nil }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.secret is required for test_connection"}},

		// SecretRef
		{name: "ref without backend", frame: aws(func(r *SecretRef) { r.Backend = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.backend is required"}},
		{name: "ref of unknown backend", frame: aws(func(r *SecretRef) { r.Backend = "vault" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{`secret.backend "vault" is not one of aws, azure, file`}},
		{name: "aws ref without secret_name", frame: aws(func(r *SecretRef) { r.SecretName = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.secret_name is required for the aws backend"}},
		{name: "aws ref without password_key", frame: aws(func(r *SecretRef) { r.PasswordKey = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.password_key is required for the aws backend"}},
		{name: "file ref without password_key", frame: rawFrame(t, "job-list_organizations", func(m *Message) { m.Job.Params.Secret.PasswordKey = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.password_key is required for the file backend"}},
		{name: "aws ref with vault_name", frame: aws(func(r *SecretRef) { r.VaultName = "kv" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"are for the azure backend", `not "aws"`}},
		{name: "aws ref with password_secret", frame: aws(func(r *SecretRef) { r.PasswordSecret = "tok" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"are for the azure backend"}},
		{name: "aws ref with stage and version id", frame: aws(func(r *SecretRef) { r.VersionID = "v-1" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"version_stage or secret.version_id, not both"}},
		{name: "aws ref with a control character", frame: aws(func(r *SecretRef) { r.SecretName = "ci/git\x1bhub" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.secret_name holds a control character"}},
		{name: "aws ref field too long", frame: aws(func(r *SecretRef) { r.SecretName = strings.Repeat("a", MaxRefField+1) }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.secret_name is 2049 bytes"}},
		{name: "azure ref without vault_name", frame: azure(func(r *SecretRef) { r.VaultName = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.vault_name is required for the azure backend"}},
		{name: "azure ref without password_secret", frame: azure(func(r *SecretRef) { r.PasswordSecret = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.password_secret is required for the azure backend"}},
		{name: "azure ref with secret_name", frame: azure(func(r *SecretRef) { r.SecretName = "ci/github" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"are for the aws and file backends, not azure"}},
		{name: "azure ref with version_stage", frame: azure(func(r *SecretRef) { r.VersionStage = "AWSCURRENT" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"not azure"}},
		{name: "azure ref with DEL", frame: azure(func(r *SecretRef) { r.PasswordSecret = "tok\x7f" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"secret.password_secret holds a control character"}},

		// GitHub params
		{name: "github url with user info", frame: conn(func(p *Params) { p.GitHubURL = "https://user:pat@git.example.com" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"must not hold user info"}},
		{name: "github url with a user only", frame: conn(func(p *Params) { p.GitHubURL = "https://user@git.example.com" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"must not hold user info"}},
		{name: "github url with a query", frame: conn(func(p *Params) { p.GitHubURL = "https://git.example.com/?access_token=x" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"must not hold a query or fragment"}},
		{name: "github url with an empty query", frame: conn(func(p *Params) { p.GitHubURL = "https://git.example.com/?" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"must not hold a query or fragment"}},
		{name: "github url with a fragment", frame: conn(func(p *Params) { p.GitHubURL = "https://git.example.com/#x" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"must not hold a query or fragment"}},
		{name: "github url of ftp scheme", frame: conn(func(p *Params) { p.GitHubURL = "ftp://git.example.com" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"must start with https://", `"ftp"`}},
		{name: "github url without scheme", frame: conn(func(p *Params) { p.GitHubURL = "git.example.com" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"must start with https://"}},
		{name: "github url without host", frame: conn(func(p *Params) { p.GitHubURL = "https:///path" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"has no host"}},
		{name: "github url with a port but no host", frame: conn(func(p *Params) { p.GitHubURL = "https://:443" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"has no host"}},
		{name: "github url opaque", frame: conn(func(p *Params) { p.GitHubURL = "https:git.example.com" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"has no host"}},
		{name: "github url not a URL", frame: conn(func(p *Params) { p.GitHubURL = "https://git.example.com:port" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"is not a URL"}},
		{name: "github url missing", frame: conn(func(p *Params) { p.GitHubURL = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.github_url is required"}},
		{name: "github url too long", frame: conn(func(p *Params) { p.GitHubURL = "https://git.example.com/" + strings.Repeat("p", 2048) }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.github_url is 2072 bytes"}},
		{name: "bad github kind", frame: conn(func(p *Params) { p.GitHubKind = "gitlab" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{`params.github_kind must be "ghes" or "github_cloud"`}},
		{name: "missing github kind", frame: rawFrame(t, "job-list_organizations", func(m *Message) { m.Job.Params.GitHubKind = "" }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.github_kind must be"}},
		{name: "scope with a space", frame: conn(func(p *Params) { p.RequiredScopes = []string{"repo", "read org"} }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.required_scopes entry holds a space"}},
		{name: "empty scope", frame: conn(func(p *Params) { p.RequiredScopes = []string{""} }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.required_scopes entry is required"}},
		{name: "organization too long", frame: conn(func(p *Params) { p.Organization = strings.Repeat("o", 257) }), code: CodeMalformedMessage, typ: TypeJob, msg: []string{"params.organization is 257 bytes"}},

		// accepted, rejected, result, result_ack, cancel, error
		{name: "accepted without job id", frame: `{"type":"accepted","id":"ag-3","accepted":{"attempt":1}}`, code: CodeMalformedMessage, typ: TypeAccepted, id: "ag-3", msg: []string{"job_id is required"}},
		{name: "rejected with unknown code", frame: rawFrame(t, "rejected", func(m *Message) { m.Rejected.Error.Code = "too_lazy" }), code: CodeMalformedMessage, typ: TypeRejected, msg: []string{`error code "too_lazy" is not one of the protocol's codes`}},
		{name: "rejected without code", frame: rawFrame(t, "rejected", func(m *Message) { m.Rejected.Error.Code = "" }), code: CodeMalformedMessage, typ: TypeRejected, msg: []string{`error code "" is not one`}},
		{name: "result with ok and error", frame: result(func(r *Result) { r.Error = &Error{Code: CodeInternal, Message: "x"} }), code: CodeMalformedMessage, typ: TypeResult, id: "ag-5", msg: []string{"result of job job_0003 must have either ok or an error"}},
		{name: "result with neither ok nor error", frame: result(func(r *Result) { r.OK = false }), code: CodeMalformedMessage, typ: TypeResult, msg: []string{"either ok or an error"}},
		{name: "result with unknown error code", frame: rawFrame(t, "result-error", func(m *Message) { m.Result.Error.Code = "github_on_fire" }), code: CodeMalformedMessage, typ: TypeResult, msg: []string{`error code "github_on_fire"`}},
		{name: "result error message too long", frame: rawFrame(t, "result-error", func(m *Message) { m.Result.Error.Message = strings.Repeat("m", MaxMessageText+1) }), code: CodeMalformedMessage, typ: TypeResult, msg: []string{"error message is 4097 bytes"}},
		{name: "result without job id", frame: result(func(r *Result) { r.JobID = "" }), code: CodeMalformedMessage, typ: TypeResult, msg: []string{"job_id is required"}},
		{name: "result with too many keys found", frame: result(func(r *Result) { r.Output.Credentials.KeysFound = make([]string, MaxListLength+1) }), code: CodeMalformedMessage, typ: TypeResult, msg: []string{"credentials.keys_found has 10001 entries"}},
		{name: "result_ack without job id", frame: `{"type":"result_ack","result_ack":{}}`, code: CodeMalformedMessage, typ: TypeResultAck, msg: []string{"job_id is required"}},
		{name: "cancel with job id too long", frame: rawFrame(t, "cancel", func(m *Message) { m.Cancel.JobID = strings.Repeat("j", MaxIDLength+1) }), code: CodeMalformedMessage, typ: TypeCancel, msg: []string{"job_id is 129 bytes"}},
		{name: "cancel reason too long", frame: rawFrame(t, "cancel", func(m *Message) { m.Cancel.Reason = strings.Repeat("r", MaxMessageText+1) }), code: CodeMalformedMessage, typ: TypeCancel, msg: []string{"reason is 4097 bytes"}},
		{name: "error with unknown code", frame: rawFrame(t, "error", func(m *Message) { m.Error.Code = "oops" }), code: CodeMalformedMessage, typ: TypeError, id: "cp-8", msg: []string{`error code "oops"`}},
		{name: "error with ref_id with a space", frame: rawFrame(t, "error", func(m *Message) { m.Error.RefID = "ag 10" }), code: CodeMalformedMessage, typ: TypeError, msg: []string{"ref_id holds a space"}},
		{name: "error with ref_type too long", frame: rawFrame(t, "error", func(m *Message) { m.Error.RefType = Type(strings.Repeat("t", MaxIDLength+1)) }), code: CodeMalformedMessage, typ: TypeError, msg: []string{"ref_type is 129 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := Decode([]byte(tt.frame))
			if err == nil {
				t.Fatalf("Decode succeeded: %+v\nframe: %.300s", m, tt.frame)
			}
			if m != nil {
				t.Errorf("Decode returned a message with its error: %+v", m)
			}
			de, ok := err.(*DecodeError)
			if !ok {
				t.Fatalf("Decode error is a %T, not a *DecodeError: %v", err, err)
			}
			if de.Code != tt.code {
				t.Errorf("code = %s; want %s (error: %v)", de.Code, tt.code, err)
			}
			if de.Type != tt.typ || (tt.id != "" && de.ID != tt.id) {
				t.Errorf("DecodeError names type %q id %.40q; want type %q id %.40q", de.Type, de.ID, tt.typ, tt.id)
			}
			for _, want := range tt.msg {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// The sentinel matches the code.
			sentinel := map[ErrorCode]error{CodeFrameTooLarge: ErrFrameTooLarge, CodeMalformedMessage: ErrMalformed, CodeUnknownType: ErrUnknownType}[de.Code]
			if !errors.Is(err, sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", err, sentinel)
			}
			checkReply(t, de)
		})
	}
}

// checkReply checks that the reply to a frame that failed is a valid error
// message that the peer can read, and names what it answers when that can
// travel.
func checkReply(t *testing.T, de *DecodeError) {
	t.Helper()
	r := de.Reply()
	if r.Type != TypeError || r.Error == nil {
		t.Fatalf("Reply() = %+v; want an error message", r)
	}
	if r.Error.Code != de.Code {
		t.Errorf("reply code = %s; want %s", r.Error.Code, de.Code)
	}
	if r.Error.Message == "" {
		t.Errorf("reply has no message")
	}
	if checkID("id", de.ID, false) == nil && r.Error.RefID != de.ID {
		t.Errorf("reply ref_id = %q; want %q", r.Error.RefID, de.ID)
	}
	if len(de.Type) <= MaxIDLength && utf8.ValidString(string(de.Type)) && r.Error.RefType != de.Type {
		t.Errorf("reply ref_type = %q; want %q", r.Error.RefType, de.Type)
	}
	b, err := Encode(r)
	if err != nil {
		t.Fatalf("Encode(Reply()) = %v\nreply: %+v", err, r.Error)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("the peer cannot read the reply: %v\nreply: %.300s", err, b)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("reply changed on the wire (-want +got):\n-%+v\n+%+v", r.Error, got.Error)
	}
}

// TestReplyToHostileFrames feeds Decode frames made to break the error
// reply: its type, id and error text all come from the peer.
func TestReplyToHostileFrames(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("T", MaxFrameSize-100)
	longKey := strings.Repeat("é", 3000) // a multi-byte rune across the MaxMessageText cut
	tests := []struct {
		name    string
		frame   string
		refType Type
		refID   string
	}{
		{name: "huge unknown type", frame: `{"type":"` + huge + `","id":"x-1"}`, refID: "x-1"},
		{name: "huge type in malformed JSON", frame: `{"type":"` + huge + `","id":"x-1","hello":7}`, refID: "x-1"},
		{name: "type at MaxIDLength", frame: `{"type":"` + strings.Repeat("t", MaxIDLength) + `"}`, refType: Type(strings.Repeat("t", MaxIDLength))},
		{name: "type with control characters", frame: `{"type":"a\u0000\u001b[31mred\n","id":"x-2"}`, refType: "a\x00\x1b[31mred\n", refID: "x-2"},
		{name: "type with invalid UTF-8", frame: "{\"type\":\"\xff\xfe\",\"id\":\"x-3\"}", refType: "\ufffd\ufffd", refID: "x-3"},
		{name: "id with control characters", frame: `{"type":"heartbeat","id":"x\u0000\r\n","heartbeat":{"running":1}}`, refType: TypeHeartbeat},
		{name: "id with spaces", frame: `{"type":"heartbeat","id":"x y","heartbeat":{"running":1}}`, refType: TypeHeartbeat},
		{name: "id with spaces in malformed JSON", frame: `{"type":"hello","id":"x y","hello":7}`, refType: TypeHello},
		{name: "id with spaces and an unknown type", frame: `{"type":"nope","id":"x y"}`, refType: "nope"},
		{name: "id too long", frame: `{"type":"heartbeat","id":"` + strings.Repeat("i", MaxIDLength+1) + `","heartbeat":{"running":1}}`, refType: TypeHeartbeat},
		{name: "huge id", frame: `{"type":"heartbeat","id":"` + huge + `"}`, refType: TypeHeartbeat},
		{name: "long error text with multi-byte runes", frame: `{"type":"hello","id":"x-4","hello":{"agent_id":"a","signature":"` + strings.Repeat("A", 86) +
			`","protocol_version":1,"concurrency":1,"backends":[{"name":"aws","settings":{"` + longKey + `":"v"}}]}}`, refType: TypeHello, refID: "x-4"},
		{name: "long error text cut after one byte of a rune", frame: `{"type":"hello","id":"x-5","hello":{"agent_id":"a","signature":"` + strings.Repeat("A", 86) +
			`","protocol_version":1,"concurrency":1,"backends":[{"name":"aws","settings":{"x` + longKey + `":"v"}}]}}`, refType: TypeHello, refID: "x-5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(tt.frame))
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode error = %v; want a *DecodeError", err)
			}
			checkReply(t, de)
			r := de.Reply().Error
			if r.RefType != tt.refType || r.RefID != tt.refID {
				t.Errorf("reply refers to type %.40q id %.40q; want type %.40q id %.40q", r.RefType, r.RefID, tt.refType, tt.refID)
			}
		})
	}
}

// TestReplyOfAnyDecodeError: Reply is exported, so it must hold for a
// DecodeError built by hand too, whatever its text and type hold.
func TestReplyOfAnyDecodeError(t *testing.T) {
	t.Parallel()
	for _, de := range []*DecodeError{
		{Code: CodeMalformedMessage, Type: "\xff", ID: "x-1", Err: errors.New(strings.Repeat("\xff", MaxMessageText+10))},
		{Code: CodeUnknownType, Type: Type(strings.Repeat("é", MaxIDLength)), ID: "x\ty", Err: errors.New("a\x00b" + strings.Repeat("€", 2000))},
		{Code: CodeFrameTooLarge, Err: ErrFrameTooLarge},
	} {
		checkReply(t, de)
		r := de.Reply().Error
		if !utf8.ValidString(r.Message) || len(r.Message) > MaxMessageText {
			t.Errorf("reply message of %d bytes, valid UTF-8 %v", len(r.Message), utf8.ValidString(r.Message))
		}
	}
}

func TestReplyNamesUnknownType(t *testing.T) {
	t.Parallel()
	_, err := Decode([]byte(`{"type":"teleport","id":"ag-10","teleport":{}}`))
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("Decode error = %v; want a *DecodeError", err)
	}
	want := &Message{Type: TypeError, Error: &ErrorBody{
		Error: Error{Code: CodeUnknownType, Message: `unknown message type "teleport"`}, RefID: "ag-10", RefType: "teleport",
	}}
	if got := de.Reply(); !reflect.DeepEqual(got, want) {
		t.Errorf("Reply() (-want +got):\n-%+v\n+%+v", want.Error, got.Error)
	}
}

func TestEncodeRefuses(t *testing.T) {
	t.Parallel()
	bigOrgs := make([]Organization, 3000)
	for i := range bigOrgs {
		bigOrgs[i] = Organization{Login: "org", ID: int64(i), Description: strings.Repeat("d", 100)}
	}
	tests := []struct {
		name string
		msg  *Message
		want string
		is   error
	}{
		{name: "no type", msg: &Message{Heartbeat: &Heartbeat{}}, want: "type field is missing", is: ErrMalformed},
		{name: "unknown type", msg: &Message{Type: "teleport"}, want: "unknown message type", is: ErrUnknownType},
		{name: "no body", msg: &Message{Type: TypeHeartbeat}, want: "needs its", is: ErrMalformed},
		{name: "two bodies", msg: &Message{Type: TypeHeartbeat, Heartbeat: &Heartbeat{}, Cancel: &Cancel{JobID: "j"}}, want: "2 bodies", is: ErrMalformed},
		{name: "concurrency 0", msg: func() *Message { m := exampleOf(t, "hello"); m.Hello.Concurrency = 0; return m }(), want: "concurrency is 0", is: ErrMalformed},
		{name: "job without deadline", msg: func() *Message { m := exampleOf(t, "job"); m.Job.Deadline = time.Time{}; return m }(), want: "no deadline", is: ErrMalformed},
		{name: "bad id", msg: &Message{Type: TypeHeartbeat, ID: "a b", Heartbeat: &Heartbeat{}}, want: "id holds a space", is: ErrMalformed},
		{name: "over MaxFrameSize", msg: &Message{Type: TypeResult, Result: &Result{JobID: "j", OK: true,
			Output: &Output{Organizations: &OrganizationsOutput{Organizations: bigOrgs}}}}, want: "limit 262144", is: ErrFrameTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := Encode(tt.msg)
			if err == nil {
				t.Fatalf("Encode succeeded: %.200s", b)
			}
			if b != nil {
				t.Errorf("Encode returned %d bytes with its error", len(b))
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "encode ") {
				t.Errorf("Encode error %q does not say %q", err, tt.want)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
		})
	}
}

func TestCheckDepth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{`[[[]]]`, true},
		{`[[[[]]]]`, false},
		{`{"a":{"b":[{}]}}`, false},
		{`{"a":{"b":[1]}}`, true},
		{`"[[[[[[[["`, true},
		{`["\"[[[[["]`, true},
		{`["\\",[[[]]]]`, false},
		{`["\\\"",[[]]]`, true},
		{`]]]][[[[`, true}, // never valid JSON: left to encoding/json
	}
	for _, tt := range tests {
		err := checkDepth([]byte(tt.in), 3)
		if (err == nil) != tt.ok {
			t.Errorf("checkDepth(%s, 3) = %v; want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"}, // é is 2 bytes: cut before it, not inside
		{"héllo", 3, "hé"},
		{"a€", 3, "a"}, // € is 3 bytes
		{"a😀", 4, "a"}, // 😀 is 4 bytes
		{"a😀", 5, "a😀"},
		{"é", 1, ""},
		{"abc", 0, ""},
		{"\x80\x80\x80\x80\x80", 4, "\x80"}, // invalid UTF-8: backs off at most 3 bytes
	}
	for _, tt := range tests {
		if got := truncate(tt.s, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q; want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
