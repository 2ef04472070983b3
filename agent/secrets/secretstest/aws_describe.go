package secretstest

import (
	"encoding/json"
	"net/http"
	"slices"
)

// DescribeSecret: the metadata of a secret, never its value (agent doctor).

// FailDescribe makes every DescribeSecret call fail with e; nil stops
// failing. GetSecretValue is not affected.
func (f *AWS) FailDescribe(e *AWSError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.descFail = e
}

// Describes returns the DescribeSecret calls received, in order. They are
// not counted in Calls or Requests.
func (f *AWS) Describes() []AWSRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.describes)
}

func (f *AWS) serveDescribe(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct{ SecretId string }
	if err := json.Unmarshal(body, &in); err != nil {
		writeAWSError(w, AWSError{Status: 400, Type: "SerializationException", Message: "not JSON"})
		return
	}
	req := AWSRequest{SecretID: in.SecretId, AccessKeyID: accessKeyID(r)}
	f.mu.Lock()
	f.describes = append(f.describes, req)
	fail := f.descFail
	f.mu.Unlock()
	if !f.wait(r) {
		return
	}
	if fail != nil {
		writeAWSError(w, *fail)
		return
	}
	f.mu.Lock()
	var found *AWSSecret
	for i := range f.versions {
		v := f.versions[i]
		if (v.Name == in.SecretId || v.ARN == in.SecretId) && slices.Contains(v.Stages, "AWSCURRENT") {
			found = &v
		}
	}
	f.mu.Unlock()
	if found == nil {
		writeAWSError(w, AWSError{Status: 400, Type: "ResourceNotFoundException", Message: "Secrets Manager can't find the specified secret."})
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", "fake-describe")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"ARN":                found.ARN,
		"Name":               found.Name,
		"LastChangedDate":    float64(found.Created.UnixMilli()) / 1000,
		"VersionIdsToStages": map[string][]string{found.VersionID: found.Stages},
	})
}
