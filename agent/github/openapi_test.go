package github_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/github/githubtest"
)

// GitHub's own OpenAPI descriptions (testdata/openapi, from
// shared/github-openapi) keep the fake honest: every request the agent
// makes is an operation GitHub describes, for GHES 3.19 and for github.com,
// and the fake's 200 answers hold every field the schemas require, with
// the types they say.

type openapiSpec struct {
	name  string
	Paths map[string]map[string]json.RawMessage `json:"paths"`
}

func loadSpecs(t *testing.T) []openapiSpec {
	t.Helper()
	var specs []openapiSpec
	for _, name := range []string{"ghes-3.19.subset.json", "api.github.com.subset.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "openapi", name))
		if err != nil {
			t.Fatal(err)
		}
		s := openapiSpec{name: name}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(s.Paths) == 0 {
			t.Fatalf("%s: no paths", name)
		}
		specs = append(specs, s)
	}
	return specs
}

// schema200 returns the JSON schema of an operation's 200 answer.
func (s openapiSpec) schema200(t *testing.T, method, tmpl string) map[string]any {
	t.Helper()
	raw, ok := s.Paths[tmpl][strings.ToLower(method)]
	if !ok {
		t.Fatalf("%s does not describe %s %s", s.name, method, tmpl)
	}
	var op struct {
		Responses map[string]struct {
			Content map[string]struct {
				Schema map[string]any `json:"schema"`
			} `json:"content"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(raw, &op); err != nil {
		t.Fatal(err)
	}
	c, ok := op.Responses["200"].Content["application/json"]
	if !ok {
		t.Fatalf("%s: %s %s has no JSON 200 answer", s.name, method, tmpl)
	}
	return c.Schema
}

// TestAgentCallsAreDescribed runs every scenario of the agent's GitHub jobs
// against both modes of the fake and checks what the agent asked for.
func TestAgentCallsAreDescribed(t *testing.T) {
	t.Parallel()
	specs := loadSpecs(t)
	ctx := testCtx(t)
	seen := map[string]bool{}
	for _, mode := range []githubtest.Mode{githubtest.GHES, githubtest.Cloud} {
		f := newFixture(t, mode, withFake(func(o *githubtest.Options) { o.NoVersionHeader = true }),
			withFaults(githubtest.Fault{Kind: githubtest.NotFound, Path: "/user", Times: 1}))
		for _, tok := range []string{tokClassic, tokFullScopes, tokNoOrgScope, tokFineGrained, tokApp} {
			_, _ = f.test(ctx, tok, github.TestOptions{Organization: "platform"})
			_, _ = f.list(ctx, tok)
		}
		_, _ = f.test(ctx, tokFullScopes, github.TestOptions{Organization: "octo-sso"})
		_, _ = f.test(ctx, tokFault, github.TestOptions{}) // 404, then the probe
		_, _ = f.test(ctx, tokUnknown, github.TestOptions{})
		for _, r := range f.fake.Requests() {
			if r.Template == "" {
				t.Errorf("the agent called %s %s, which the fake does not serve as an API path", r.Method, r.Path)
				continue
			}
			seen[r.Method+" "+r.Template] = true
		}
	}
	if len(seen) < 5 {
		t.Errorf("only %d operations seen: %v", len(seen), seen)
	}
	for op := range seen {
		method, tmpl, _ := strings.Cut(op, " ")
		for _, s := range specs {
			if _, ok := s.Paths[tmpl][strings.ToLower(method)]; !ok {
				t.Errorf("the agent calls %s, which %s does not describe", op, s.name)
			}
		}
	}
	t.Logf("operations the agent calls: %v", keys(seen))
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestFakeAnswersMatchSchemas fetches each operation from the fake and
// checks the answer against both descriptions.
func TestFakeAnswersMatchSchemas(t *testing.T) {
	t.Parallel()
	specs := loadSpecs(t)
	for _, mode := range []githubtest.Mode{githubtest.GHES, githubtest.Cloud} {
		fake := githubtest.New(githubtest.Options{Mode: mode, PublicOrgs: []githubtest.Org{orgPublic}})
		defer fake.Close()
		addTokens(fake, nil)
		pool := x509.NewCertPool()
		pool.AddCert(fake.TLS.Certificate())
		client := fake.TLS.Client()
		defer client.CloseIdleConnections()
		for i, c := range []struct{ tmpl, path, token string }{
			{"/user", "/user", tokClassic},
			{"/user", "/user", tokFineGrained},
			{"/user/orgs", "/user/orgs?per_page=1&page=2", tokClassic},
			{"/user/orgs", "/user/orgs", tokFineGrained},
			{"/installation/repositories", "/installation/repositories", tokApp},
			{"/orgs/{org}", "/orgs/platform", tokClassic},
			{"/meta", "/meta", ""},
			{"/rate_limit", "/rate_limit", tokClassic},
		} {
			name := fmt.Sprintf("mode %d, case %d: %s", mode, i, c.path)
			ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(fake.APIURL(), "/")+c.path, nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := client.Do(req)
			if err != nil {
				cancel()
				t.Fatalf("%s: %v", name, err)
			}
			var body any
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode != http.StatusOK || err != nil {
				t.Errorf("%s: status %d, decode %v", name, resp.StatusCode, err)
				continue
			}
			for _, s := range specs {
				if problems := shape(s.schema200(t, http.MethodGet, c.tmpl), body, "$", 0); len(problems) > 0 {
					t.Errorf("%s does not match %s:\n  %s", name, s.name, strings.Join(problems, "\n  "))
				}
			}
		}
	}
}

// shape checks v against a (dereferenced) OpenAPI 3.0 schema: required
// properties, types, nullability, allOf/oneOf/anyOf, arrays. It returns the
// problems found.
func shape(s map[string]any, v any, at string, depth int) []string {
	if depth > 6 || s == nil {
		return nil
	}
	if v == nil {
		if s["nullable"] == true || s["type"] == nil && s["allOf"] == nil && s["oneOf"] == nil && s["anyOf"] == nil {
			return nil
		}
		if alts, ok := s["anyOf"].([]any); ok && slices.ContainsFunc(alts, func(a any) bool { m, _ := a.(map[string]any); return m["nullable"] == true }) {
			return nil
		}
		return []string{at + ": null, but the schema is not nullable"}
	}
	var out []string
	if all, ok := s["allOf"].([]any); ok {
		for _, sub := range all {
			m, _ := sub.(map[string]any)
			out = append(out, shape(m, v, at, depth+1)...)
		}
	}
	for _, key := range []string{"oneOf", "anyOf"} {
		alts, ok := s[key].([]any)
		if !ok {
			continue
		}
		var best []string
		matched := false
		for _, sub := range alts {
			m, _ := sub.(map[string]any)
			p := shape(m, v, at, depth+1)
			if len(p) == 0 {
				matched = true
				break
			}
			if best == nil || len(p) < len(best) {
				best = p
			}
		}
		if !matched {
			out = append(out, fmt.Sprintf("%s: matches none of %s; closest: %v", at, key, best))
		}
	}
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return append(out, fmt.Sprintf("%s: %T, want an object", at, v))
		}
		req, _ := s["required"].([]any)
		for _, r := range req {
			if _, ok := m[r.(string)]; !ok {
				out = append(out, fmt.Sprintf("%s: required %q missing", at, r))
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, pv := range m {
			if ps, ok := props[k].(map[string]any); ok {
				out = append(out, shape(ps, pv, at+"."+k, depth+1)...)
			}
		}
	case "array":
		l, ok := v.([]any)
		if !ok {
			return append(out, fmt.Sprintf("%s: %T, want an array", at, v))
		}
		items, _ := s["items"].(map[string]any)
		for i, e := range l {
			out = append(out, shape(items, e, fmt.Sprintf("%s[%d]", at, i), depth+1)...)
		}
	case "string":
		if _, ok := v.(string); !ok {
			out = append(out, fmt.Sprintf("%s: %T, want a string", at, v))
		}
	case "integer":
		if n, ok := v.(float64); !ok || n != float64(int64(n)) {
			out = append(out, fmt.Sprintf("%s: %v, want an integer", at, v))
		}
	case "number":
		if _, ok := v.(float64); !ok {
			out = append(out, fmt.Sprintf("%s: %T, want a number", at, v))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			out = append(out, fmt.Sprintf("%s: %T, want a boolean", at, v))
		}
	}
	return out
}

// TestOpenAPICopiesMatchShared checks testdata/openapi against the
// project's shared/github-openapi, when that folder is there.
func TestOpenAPICopiesMatchShared(t *testing.T) {
	t.Parallel()
	shared := filepath.Join("..", "..", "..", "shared", "github-openapi")
	if _, err := os.Stat(shared); err != nil {
		t.Skipf("no %s here", shared)
	}
	for _, name := range []string{"ghes-3.19.subset.json", "api.github.com.subset.json"} {
		var full, ours struct {
			Paths map[string]map[string]any `json:"paths"`
		}
		for _, x := range []struct {
			path string
			into any
		}{{filepath.Join(shared, name), &full}, {filepath.Join("testdata", "openapi", name), &ours}} {
			b, err := os.ReadFile(x.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, x.into); err != nil {
				t.Fatal(err)
			}
		}
		for p, ops := range ours.Paths {
			for m, op := range ops {
				a, _ := json.Marshal(op)
				b, _ := json.Marshal(full.Paths[p][m])
				if string(a) != string(b) {
					t.Errorf("%s: %s %s differs from the shared copy", name, m, p)
				}
			}
		}
	}
}
