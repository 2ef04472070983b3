// Package secretstest holds fake secret-manager servers for tests: a fake
// AWS Secrets Manager (with STS AssumeRole) that speaks AWS JSON 1.1 over
// HTTP, a fake Azure Key Vault that speaks the Key Vault REST API over TLS
// with its 401 bearer challenge, and a fake Azure token credential. The
// real SDK clients talk to them, so the tests exercise the SDKs' own
// serialization, signing, challenge handling, retries and error decoding.
//
// The fakes count the calls they get, so that a test can prove that a
// refused reference made none, and can be told to fail in each way the real
// services fail.
//
// It is for tests only: no package outside _test.go files imports it.
package secretstest

import (
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fake AWS identities and keys.
const (
	// AWSAccount is the fake account that owns the secrets.
	AWSAccount = "111122223333"
	// AWSAccessKeyID and AWSSecretAccessKey are static credentials for the
	// client; the fake does not check signatures, only which key signed.
	AWSAccessKeyID     = "AKIAFAKEAGENT0000001"
	AWSSecretAccessKey = "fake-secret-access-key"
	// AWSAssumedAccessKeyID is the key of the credentials AssumeRole hands
	// out.
	AWSAssumedAccessKeyID = "ASIAFAKEASSUMED00001"
)

// AWSSecret is one version of a secret in the fake Secrets Manager.
type AWSSecret struct {
	// Name is the secret's name, such as "ci/github".
	Name string
	// ARN defaults to arn:aws:secretsmanager:REGION:AWSAccount:secret:NAME-AbCdEf.
	ARN string
	// VersionID defaults to a fixed UUID-like id derived from the version's
	// place.
	VersionID string
	// Stages default to ["AWSCURRENT"]. Putting a version with a stage
	// moves the stage from the older versions.
	Stages []string
	// String is the SecretString; Binary, when not nil, is sent as
	// SecretBinary instead.
	String string
	Binary []byte
	// Created is the version's CreatedDate; default 2024-05-06T07:08:09Z.
	Created time.Time
}

// AWSError is an error the fake answers with: an HTTP status and AWS's
// JSON error shape {"__type": Type, "message": Message}.
type AWSError struct {
	Status  int
	Type    string
	Message string
}

// AWSRequest is one GetSecretValue call the fake received.
type AWSRequest struct {
	SecretID     string
	VersionID    string
	VersionStage string
	// AccessKeyID is the key that signed the request (from Authorization).
	AccessKeyID string
}

// AssumeRoleRequest is one STS AssumeRole call the fake received.
type AssumeRoleRequest struct {
	RoleARN, RoleSessionName, ExternalID string
	AccessKeyID                          string
}

// AWS is a fake AWS Secrets Manager and STS endpoint.
type AWS struct {
	// URL is the endpoint (http://127.0.0.1:PORT): secrets.aws.endpoint and
	// secrets.aws.sts_endpoint.
	URL string
	// Region is the region in the ARNs: us-east-1 unless changed before the
	// first Put.
	Region string

	srv *httptest.Server

	mu         sync.Mutex // guards the fields below
	versions   []AWSSecret
	fail       func(call int, r AWSRequest) *AWSError
	stsFail    *AWSError
	delay      time.Duration
	requests   []AWSRequest
	assumeRole []AssumeRoleRequest
	describes  []AWSRequest // DescribeSecret calls (aws_describe.go)
	descFail   *AWSError
}

// NewAWS starts a fake AWS endpoint, closed when the test ends.
func NewAWS(t testing.TB) *AWS {
	t.Helper()
	f := &AWS{Region: "us-east-1"}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// Client returns an HTTP client for the fake, whose idle connections are
// closed with it.
func (f *AWS) Client() *http.Client { return f.srv.Client() }

// Put adds a version of a secret and returns it with its defaults filled.
func (f *AWS) Put(s AWSSecret) AWSSecret {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.ARN == "" {
		s.ARN = f.ARN(s.Name)
	}
	if s.VersionID == "" {
		s.VersionID = fmt.Sprintf("00000000-0000-4000-8000-%012d", len(f.versions)+1)
	}
	if s.Stages == nil {
		s.Stages = []string{"AWSCURRENT"}
	}
	if s.Created.IsZero() {
		s.Created = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	}
	for i, v := range f.versions {
		if v.Name != s.Name {
			continue
		}
		f.versions[i].Stages = slices.DeleteFunc(slices.Clone(v.Stages), func(st string) bool { return slices.Contains(s.Stages, st) })
		if slices.Contains(s.Stages, "AWSCURRENT") && slices.Contains(v.Stages, "AWSCURRENT") {
			f.versions[i].Stages = append(f.versions[i].Stages, "AWSPREVIOUS")
		}
	}
	f.versions = append(f.versions, s)
	return s
}

// ARN returns the ARN the fake gives a secret name.
func (f *AWS) ARN(name string) string {
	return "arn:aws:secretsmanager:" + f.Region + ":" + AWSAccount + ":secret:" + name + "-AbCdEf"
}

// Fail makes GetSecretValue fail with what fn returns for the n-th call
// (from 1) and its request; nil from fn lets the call through. Fail(nil)
// stops failing.
func (f *AWS) Fail(fn func(call int, r AWSRequest) *AWSError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// FailAlways makes every GetSecretValue call fail with e.
func (f *AWS) FailAlways(e AWSError) {
	f.Fail(func(int, AWSRequest) *AWSError { return &e })
}

// FailAssumeRole makes AssumeRole fail with e (in STS's XML error shape);
// nil stops failing.
func (f *AWS) FailAssumeRole(e *AWSError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stsFail = e
}

// Delay makes every call, once counted, wait d (or until the client gives
// up) before answering.
func (f *AWS) Delay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// Calls is how many GetSecretValue calls the fake received.
func (f *AWS) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// Requests returns the GetSecretValue calls received, in order.
func (f *AWS) Requests() []AWSRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// AssumeRoleCalls returns the AssumeRole calls received, in order.
func (f *AWS) AssumeRoleCalls() []AssumeRoleRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.assumeRole)
}

func (f *AWS) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		f.serveSTS(w, r, body)
		return
	}
	if r.Header.Get("X-Amz-Target") == "secretsmanager.DescribeSecret" {
		f.serveDescribe(w, r, body)
		return
	}
	if got := r.Header.Get("X-Amz-Target"); got != "secretsmanager.GetSecretValue" {
		writeAWSError(w, AWSError{Status: 400, Type: "UnknownOperationException", Message: "unknown operation " + got})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		writeAWSError(w, AWSError{Status: 400, Type: "SerializationException", Message: "content type " + ct})
		return
	}
	var in struct{ SecretId, VersionId, VersionStage string }
	if err := json.Unmarshal(body, &in); err != nil {
		writeAWSError(w, AWSError{Status: 400, Type: "SerializationException", Message: "not JSON"})
		return
	}
	req := AWSRequest{SecretID: in.SecretId, VersionID: in.VersionId, VersionStage: in.VersionStage, AccessKeyID: accessKeyID(r)}

	f.mu.Lock()
	f.requests = append(f.requests, req)
	call, fail := len(f.requests), f.fail
	f.mu.Unlock()
	if !f.wait(r) {
		return
	}
	if fail != nil {
		if e := fail(call, req); e != nil {
			writeAWSError(w, *e)
			return
		}
	}
	if req.SecretID == "" {
		writeAWSError(w, AWSError{Status: 400, Type: "InvalidParameterException", Message: "SecretId is required"})
		return
	}
	v, e := f.find(req)
	if e != nil {
		writeAWSError(w, *e)
		return
	}
	out := map[string]any{
		"ARN":           v.ARN,
		"Name":          v.Name,
		"VersionId":     v.VersionID,
		"VersionStages": v.Stages,
		"CreatedDate":   float64(v.Created.UnixMilli()) / 1000,
	}
	if v.Binary != nil {
		out["SecretBinary"] = base64.StdEncoding.EncodeToString(v.Binary)
	} else {
		out["SecretString"] = v.String
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", fmt.Sprintf("fake-request-%d", call))
	_ = json.NewEncoder(w).Encode(out)
}

// wait waits for the delay set with Delay; false if the client gave up.
func (f *AWS) wait(r *http.Request) bool {
	f.mu.Lock()
	delay := f.delay
	f.mu.Unlock()
	if delay <= 0 {
		return true
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// find picks the version a request names, as Secrets Manager does: by name
// or ARN, then by version id, stage, or AWSCURRENT.
func (f *AWS) find(r AWSRequest) (AWSSecret, *AWSError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	known := false
	for _, v := range f.versions {
		if v.Name != r.SecretID && v.ARN != r.SecretID {
			continue
		}
		known = true
		switch {
		case r.VersionID != "":
			if v.VersionID == r.VersionID {
				return v, nil
			}
		case slices.Contains(v.Stages, cmpOr(r.VersionStage, "AWSCURRENT")):
			return v, nil
		}
	}
	notFound := &AWSError{Status: 400, Type: "ResourceNotFoundException", Message: "Secrets Manager can't find the specified secret."}
	if known && r.VersionID != "" {
		notFound.Message = "Secrets Manager can't find the specified secret value for VersionId: " + r.VersionID
	} else if known {
		notFound.Message = "Secrets Manager can't find the specified secret value for staging label: " + cmpOr(r.VersionStage, "AWSCURRENT")
	}
	return AWSSecret{}, notFound
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func writeAWSError(w http.ResponseWriter, e AWSError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", "fake-request-error")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.Type, "message": e.Message})
}

// accessKeyID reads the key id from a SigV4 Authorization header:
// "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, ...".
func accessKeyID(r *http.Request) string {
	_, rest, ok := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return id
}

// serveSTS answers AssumeRole in STS's query protocol (form in, XML out).
func (f *AWS) serveSTS(w http.ResponseWriter, r *http.Request, body []byte) {
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") != "AssumeRole" {
		writeSTSError(w, AWSError{Status: 400, Type: "InvalidAction", Message: "only AssumeRole is faked"})
		return
	}
	req := AssumeRoleRequest{RoleARN: form.Get("RoleArn"), RoleSessionName: form.Get("RoleSessionName"),
		ExternalID: form.Get("ExternalId"), AccessKeyID: accessKeyID(r)}
	f.mu.Lock()
	f.assumeRole = append(f.assumeRole, req)
	fail := f.stsFail
	f.mu.Unlock()
	if !f.wait(r) {
		return
	}
	if fail != nil {
		writeSTSError(w, *fail)
		return
	}
	type credentials struct {
		AccessKeyID     string `xml:"AccessKeyId"`
		SecretAccessKey string `xml:"SecretAccessKey"`
		SessionToken    string `xml:"SessionToken"`
		Expiration      string `xml:"Expiration"`
	}
	type result struct {
		XMLName xml.Name `xml:"AssumeRoleResponse"`
		Xmlns   string   `xml:"xmlns,attr"`
		Result  struct {
			Credentials     credentials `xml:"Credentials"`
			AssumedRoleUser struct {
				Arn           string `xml:"Arn"`
				AssumedRoleID string `xml:"AssumedRoleId"`
			} `xml:"AssumedRoleUser"`
		} `xml:"AssumeRoleResult"`
		RequestID string `xml:"ResponseMetadata>RequestId"`
	}
	var out result
	out.Xmlns = "https://sts.amazonaws.com/doc/2011-06-15/"
	out.Result.Credentials = credentials{
		AccessKeyID: AWSAssumedAccessKeyID, SecretAccessKey: "fake-assumed-secret", SessionToken: "fake-session-token",
		Expiration: time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	}
	role := req.RoleARN[strings.LastIndex(req.RoleARN, "/")+1:]
	out.Result.AssumedRoleUser.Arn = "arn:aws:sts::" + AWSAccount + ":assumed-role/" + role + "/" + req.RoleSessionName
	out.Result.AssumedRoleUser.AssumedRoleID = "AROAFAKE:" + req.RoleSessionName
	out.RequestID = "fake-sts-request"
	w.Header().Set("Content-Type", "text/xml")
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(out)
}

func writeSTSError(w http.ResponseWriter, e AWSError) {
	type errorResponse struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Error   struct {
			Type    string `xml:"Type"`
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		} `xml:"Error"`
		RequestID string `xml:"RequestId"`
	}
	var out errorResponse
	out.Error.Type, out.Error.Code, out.Error.Message = "Sender", e.Type, e.Message
	out.RequestID = "fake-sts-error"
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.Status)
	_ = xml.NewEncoder(w).Encode(out)
}
