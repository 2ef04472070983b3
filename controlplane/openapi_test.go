package controlplane

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/orchestrator/orchestrator/protocol"
)

// openAPIDoc is the part of an OpenAPI 3 document the tests read.
type openAPIDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]openAPISchema `json:"schemas"`
	} `json:"components"`
}

type openAPISchema struct {
	Type       string                     `json:"type"`
	Required   []string                   `json:"required"`
	Properties map[string]json.RawMessage `json:"properties"`
	Enum       []string                   `json:"enum"`
}

// fetchOpenAPI reads the served document, without the admin token.
func fetchOpenAPI(t *testing.T, c *testCP) (openAPIDoc, []byte) {
	t.Helper()
	status, hdr, raw := c.request("GET", openAPIPath, nil, "")
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: status %d, Content-Type %q: %.200s", openAPIPath, status, hdr.Get("Content-Type"), raw)
	}
	var doc openAPIDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("the document is not JSON of OpenAPI's shape: %v", err)
	}
	return doc, raw
}

// TestOpenAPIRoutes: every route the server registers is in the document,
// and every path and method the document lists is registered.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	doc, _ := fetchOpenAPI(t, c)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
	}

	methods := []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for key := range item {
			if slices.Contains(methods, key) {
				documented[strings.ToUpper(key)+" "+path] = true
			}
		}
	}
	registered := map[string]bool{}
	for _, p := range c.srv.patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok || method == "" || !strings.HasPrefix(path, "/") {
			t.Errorf("pattern %q has no method: every route names its method", p)
			continue
		}
		if c.srv.pages[p] {
			// The web console's page and files: HTML, CSS and JavaScript
			// for browsers, not API, so not in the document; never under
			// /api/.
			if strings.HasPrefix(path, "/api/") || documented[p] {
				t.Errorf("console page %s is under /api/ or in the OpenAPI document: pages are not API", p)
			}
			continue
		}
		registered[p] = true
		if !documented[p] {
			t.Errorf("the server serves %s, but the OpenAPI document (controlplane/openapi.yaml) does not list it", p)
		}
	}
	for p := range documented {
		if !registered[p] {
			t.Errorf("the OpenAPI document lists %s, but the server does not serve it", p)
		}
	}
	if len(registered) < 20 {
		t.Errorf("only %d routes registered: %v", len(registered), c.srv.patterns)
	}

	// Each documented route reaches its own handler, not the catch-all:
	// without the admin token, admin routes answer 401 and the others do
	// not answer 404 or 405.
	for p := range documented {
		method, path, _ := strings.Cut(p, " ")
		path = strings.NewReplacer("{id}", "x").Replace(path)
		if method == "POST" && path == protocol.EnrollPath || method == "GET" && path == protocol.ConnectPath {
			continue // answered with 400s of their own
		}
		status, _, raw := c.request(method, path, nil, "")
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			var ae protocol.APIError
			_ = json.Unmarshal(raw, &ae)
			if ae.Error.Code == protocol.CodeMethodNotAllowed || strings.HasPrefix(ae.Error.Message, "no route") {
				t.Errorf("%s %s: %d %s: the catch-all answered", method, path, status, raw)
			}
		}
	}
}

// openAPITypes are the protocol types the document describes, by schema
// name.
var openAPITypes = []reflect.Type{
	reflect.TypeFor[protocol.Error](), reflect.TypeFor[protocol.APIError](), reflect.TypeFor[protocol.Health](),
	reflect.TypeFor[protocol.EnrollRequest](), reflect.TypeFor[protocol.EnrollResponse](),
	reflect.TypeFor[protocol.RegisterAgentRequest](), reflect.TypeFor[protocol.EnrollmentToken](),
	reflect.TypeFor[protocol.RegisterAgentResponse](), reflect.TypeFor[protocol.BackendInfo](),
	reflect.TypeFor[protocol.AgentView](), reflect.TypeFor[protocol.AgentList](),
	reflect.TypeFor[protocol.SecretRef](), reflect.TypeFor[protocol.Params](),
	reflect.TypeFor[protocol.SubmitJobRequest](), reflect.TypeFor[protocol.Organization](),
	reflect.TypeFor[protocol.CredentialsOutput](), reflect.TypeFor[protocol.ConnectionOutput](),
	reflect.TypeFor[protocol.OrganizationsOutput](), reflect.TypeFor[protocol.Output](),
	reflect.TypeFor[protocol.JobView](), reflect.TypeFor[protocol.JobList](),
	reflect.TypeFor[protocol.CreateConnectionRequest](), reflect.TypeFor[protocol.UpdateConnectionRequest](),
	reflect.TypeFor[protocol.ConnectionTest](), reflect.TypeFor[protocol.ConnectionView](),
	reflect.TypeFor[protocol.ConnectionList](), reflect.TypeFor[protocol.ConnectionTestAnswer](),
	reflect.TypeFor[protocol.ConnectionOrganizations](),
	reflect.TypeFor[protocol.SignInRequest](), reflect.TypeFor[protocol.ConsoleSession](),
}

// jsonFields returns a struct's JSON field names and those always present
// (no omitempty).
func jsonFields(t reflect.Type) (all, always []string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			always = append(always, name)
		}
	}
	sort.Strings(all)
	sort.Strings(always)
	return all, always
}

// TestOpenAPISchemas: each object schema has the JSON fields of its Go
// type, and lists as required exactly the fields that are always sent.
func TestOpenAPISchemas(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	doc, raw := fetchOpenAPI(t, c)
	types := map[string]reflect.Type{}
	for _, typ := range openAPITypes {
		types[typ.Name()] = typ
	}
	for name, sc := range doc.Components.Schemas {
		if sc.Type != "object" || len(sc.Properties) == 0 {
			continue
		}
		typ, ok := types[name]
		if !ok {
			t.Errorf("schema %s has no Go type in openAPITypes", name)
			continue
		}
		all, always := jsonFields(typ)
		var props []string
		for p := range sc.Properties {
			props = append(props, p)
		}
		sort.Strings(props)
		required := slices.Sorted(slices.Values(sc.Required))
		if !slices.Equal(props, all) {
			t.Errorf("schema %s (controlplane/openapi.yaml) has properties %v; protocol.%s has %v", name, props, name, all)
		}
		if !slices.Equal(required, always) {
			t.Errorf("schema %s (controlplane/openapi.yaml) requires %v; protocol.%s always sends %v", name, required, name, always)
		}
	}
	for name := range types {
		if _, ok := doc.Components.Schemas[name]; !ok {
			t.Errorf("protocol.%s has no schema in controlplane/openapi.yaml", name)
		}
	}

	// The closed lists come from protocol/.
	var codes []string
	for _, c := range protocol.ErrorCodes {
		codes = append(codes, string(c))
	}
	if got := doc.Components.Schemas["ErrorCode"].Enum; !slices.Equal(got, codes) {
		t.Errorf("ErrorCode enum = %v, want %v", got, codes)
	}
	if got := doc.Components.Schemas["JobKind"].Enum; len(got) != len(protocol.JobKinds) {
		t.Errorf("JobKind enum = %v, want %v", got, protocol.JobKinds)
	}

	// Every reference resolves.
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if ref, ok := e.(string); ok && k == "$ref" {
					if !resolves(tree, ref) {
						t.Errorf("$ref %q does not resolve", ref)
					}
				}
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(tree)
}

// resolves reports whether a local JSON pointer ("#/a/b") names a value.
func resolves(tree any, ref string) bool {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	cur := tree
	for _, part := range strings.Split(p, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[strings.NewReplacer("~1", "/", "~0", "~").Replace(part)]; !ok {
			return false
		}
	}
	return true
}
