package controlplane

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/orchestrator/orchestrator/protocol"
)

// openAPIPath serves the API's OpenAPI 3 document, without authentication.
const openAPIPath = "/api/v1/openapi.json"

// openAPIYAML is the document as written (readable, with comments); it is
// served as JSON.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// openAPIJSON converts the document once.
var openAPIJSON = sync.OnceValues(func() ([]byte, error) { return yamlToJSON(openAPIYAML) })

// yamlToJSON converts a YAML document to indented JSON.
func yamlToJSON(b []byte) ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	doc, err := jsonable(doc)
	if err != nil {
		return nil, err
	}
	// The closed lists come from protocol/, so that they cannot drift.
	if m, ok := doc.(map[string]any); ok {
		if comps, ok := m["components"].(map[string]any); ok {
			if schemas, ok := comps["schemas"].(map[string]any); ok {
				if sc, ok := schemas["ErrorCode"].(map[string]any); ok {
					sc["enum"] = protocol.ErrorCodes
				}
				if sc, ok := schemas["JobKind"].(map[string]any); ok {
					sc["enum"] = protocol.JobKinds
				}
			}
		}
	}
	return json.MarshalIndent(doc, "", "  ")
}

// jsonable turns YAML's maps into maps with string keys.
func jsonable(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			v[k] = j
		}
		return v, nil
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("openapi.yaml: key %v is not a string; quote it", k)
			}
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			m[ks] = j
		}
		return m, nil
	case []any:
		for i, e := range v {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			v[i] = j
		}
		return v, nil
	}
	return v, nil
}

func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request) {
	b, err := openAPIJSON()
	if err != nil {
		s.log.Error("openapi document", zap.Error(err))
		writeError(w, http.StatusInternalServerError, protocol.Errorf(protocol.CodeInternal, "the OpenAPI document is broken"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(b)
}
