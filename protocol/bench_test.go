package protocol

import (
	"testing"
	"time"
)

// The codec's share of a job round trip: the control plane encodes the job
// and decodes the result; the agent decodes the job and encodes the
// result (plus accepted, result_ack). Run with
//
//	go test -run '^$' -bench . -benchmem ./protocol
//
// The messages are what a resolve_credentials job carries.

func benchJob() *Message {
	return &Message{Type: TypeJob, Job: &Job{
		JobID: "job_01jz4x9q2w8k3v5t7r6y0m1n2p", Kind: KindResolveCredentials,
		Params:   Params{Secret: &SecretRef{Backend: BackendFile, SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"}},
		Deadline: time.Date(2026, 5, 1, 12, 0, 30, 123456789, time.UTC), Attempt: 1,
	}}
}

func benchResult() *Message {
	now := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	created := now.Add(-24 * time.Hour)
	return &Message{Type: TypeResult, Result: &Result{
		JobID: "job_01jz4x9q2w8k3v5t7r6y0m1n2p", Attempt: 1, OK: true, StartedAt: now, FinishedAt: now.Add(3 * time.Millisecond),
		Output: &Output{Credentials: &CredentialsOutput{
			Backend:   BackendFile,
			Reference: SecretRef{Backend: BackendFile, SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"},
			KeysFound: []string{"username", "password"}, VersionID: "v-0001", VersionCreated: &created,
			Fingerprint: "hmac-sha256:0123456789abcdef01234567", Timings: map[string]int64{"secret": 2},
		}},
	}}
}

func benchEncode(b *testing.B, m *Message) {
	b.ReportAllocs()
	frame, err := Encode(m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, err := Encode(m); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, m *Message) {
	b.ReportAllocs()
	frame, err := Encode(m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeJob(b *testing.B)    { benchEncode(b, benchJob()) }
func BenchmarkDecodeJob(b *testing.B)    { benchDecode(b, benchJob()) }
func BenchmarkEncodeResult(b *testing.B) { benchEncode(b, benchResult()) }
func BenchmarkDecodeResult(b *testing.B) { benchDecode(b, benchResult()) }

// BenchmarkRoundTripCodec is one job's whole codec work on both sides: job
// encoded and decoded, accepted, result and result_ack encoded and decoded.
func BenchmarkRoundTripCodec(b *testing.B) {
	b.ReportAllocs()
	job, res := benchJob(), benchResult()
	acc := &Message{Type: TypeAccepted, Accepted: &Accepted{JobID: job.Job.JobID, Attempt: 1}}
	ack := &Message{Type: TypeResultAck, ResultAck: &ResultAck{JobID: job.Job.JobID}}
	for b.Loop() {
		for _, m := range []*Message{job, acc, res, ack} {
			f, err := Encode(m)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Decode(f); err != nil {
				b.Fatal(err)
			}
		}
	}
}
