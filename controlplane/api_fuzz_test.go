package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/orchestrator/orchestrator/controlplane/store"
	"github.com/orchestrator/orchestrator/controlplane/store/sqlite"
	"github.com/orchestrator/orchestrator/protocol"
)

// fuzzRoutes are the routes that read a request body, by the fuzzer's
// route number (modulo their count).
var fuzzRoutes = []struct{ method, path string }{
	{http.MethodPost, "/api/v1/agents"},
	{http.MethodPost, "/api/v1/jobs"},
	{http.MethodPost, protocol.EnrollPath},
	{http.MethodPost, "/api/v1/connections"},
	{http.MethodPut, "/api/v1/connections/{connection}"},
	{http.MethodPost, "/api/v1/connections:test"},
	{http.MethodPost, "/api/v1/session"},
}

// FuzzAPIRequestBodies sends any body to each route of the HTTP API that
// reads one, through the real handler on the real SQLite store (with an
// enrolled agent and a saved connection to refer to). Properties: no panic;
// no 5xx (a bad body is the client's error, never the server's); a refusal
// is the API's error shape with a code from the closed list; an answer is
// JSON. The seed corpus (testdata/fuzz/FuzzAPIRequestBodies) holds a valid
// body and hostile ones for each route. Run it longer with:
//
//	go test ./controlplane -run='^$' -fuzz='^FuzzAPIRequestBodies$' -fuzztime=10m
func FuzzAPIRequestBodies(f *testing.F) {
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	st, err := sqlite.Open(ctx, f.TempDir(), sqlite.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	srv, err := New(Options{Store: st, AdminToken: testAdminToken, PasswordCost: bcrypt.MinCost})
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Close(c)
	})
	now := time.Now().UTC()
	agent := store.Agent{ID: "agt_fuzz", Name: "fuzz-agent", CreatedAt: now}
	if err := st.CreateAgent(ctx, agent, store.Token{Hash: hashToken("oet_fuzz"), AgentID: agent.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		f.Fatal(err)
	}
	conn := store.Connection{
		ID: "con_fuzz", Name: "Fuzz GHES", Kind: protocol.GitHubEnterpriseServer, GitHubURL: "https://git.example.com", AgentID: agent.ID,
		Secret: protocol.SecretRef{Backend: protocol.BackendFile, SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"},
		Active: true, Revision: 1, CreatedAt: now, UpdatedAt: now,
	}
	if err := st.CreateConnection(ctx, conn); err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		path := strings.ReplaceAll(rt.path, "{connection}", conn.ID)
		req := httptest.NewRequest(rt.method, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		out := rec.Body.Bytes()
		if rec.Code >= 500 {
			t.Fatalf("%s %s answered %d to %q: %s", rt.method, path, rec.Code, body, out)
		}
		if rec.Code >= 400 {
			var e protocol.APIError
			if err := json.Unmarshal(out, &e); err != nil || !e.Error.Code.Known() || e.Error.Message == "" {
				t.Fatalf("%s %s answered %d with %q, not an API error with a known code (%v)", rt.method, path, rec.Code, out, err)
			}
			return
		}
		if len(out) > 0 && !json.Valid(out) {
			t.Fatalf("%s %s answered %d with %q, not JSON", rt.method, path, rec.Code, out)
		}
	})
}
