package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The files here are reviewed by people and read by machines: they must at
// least parse, and keep the properties the README promises.

func TestIAMPolicyParses(t *testing.T) {
	b, err := os.ReadFile("aws-iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Version   string
		Statement []struct {
			Effect   string
			Action   any
			Resource any
		}
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("aws-iam-policy.json: %v", err)
	}
	actions := map[string]bool{}
	for _, s := range p.Statement {
		if s.Effect != "Allow" {
			t.Errorf("statement %v is not an Allow", s)
		}
		if a, ok := s.Action.(string); ok {
			actions[a] = true
		}
		if r, ok := s.Resource.(string); ok && strings.Contains(r, "*") {
			t.Errorf("a wildcard resource: %s", r)
		}
	}
	for _, a := range []string{"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"} {
		if !actions[a] {
			t.Errorf("the policy does not grant %s", a)
		}
	}
	if len(actions) != 3 {
		t.Errorf("the policy grants %v; least privilege is those three", actions)
	}
}

func TestKubernetesManifest(t *testing.T) {
	b, err := os.ReadFile("controlplane/kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kubernetes.yaml: %v", err)
		}
		kinds[doc["kind"].(string)] = true
	}
	for _, k := range []string{"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"} {
		if !kinds[k] {
			t.Errorf("no %s in kubernetes.yaml", k)
		}
	}
	for _, want := range []string{"runAsNonRoot: true", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false", "drop: [ALL]"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("kubernetes.yaml lacks %q", want)
		}
	}
}
