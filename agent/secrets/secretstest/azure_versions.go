package secretstest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// serveVersions answers GET /secrets/{name}/versions: the properties of the
// secret's versions, never a value (agent doctor).
func (f *KeyVault) serveVersions(w http.ResponseWriter, r *http.Request, name string) {
	f.mu.Lock()
	var items []map[string]any
	for _, v := range f.versions {
		if !strings.EqualFold(v.Name, name) {
			continue
		}
		items = append(items, map[string]any{
			"id": "https://" + r.Host + "/secrets/" + v.Name + "/" + v.Version,
			"attributes": map[string]any{
				"enabled": !v.Disabled,
				"created": v.Created.Unix(),
				"updated": v.Updated.Unix(),
			},
		})
	}
	f.mu.Unlock()
	if len(items) == 0 {
		writeKeyVaultError(w, KeyVaultError{Status: 404, Code: "SecretNotFound",
			Message: fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", name)})
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"value": items, "nextLink": nil})
}
