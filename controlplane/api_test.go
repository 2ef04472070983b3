package controlplane

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

func TestAPIAuth(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"wrong token", "Bearer not-the-admin-token-at-all", http.StatusUnauthorized},
		{"token prefix", "Bearer " + testAdminToken[:len(testAdminToken)-1], http.StatusUnauthorized},
		{"token with a suffix", "Bearer " + testAdminToken + "x", http.StatusUnauthorized},
		{"basic scheme", "Basic " + testAdminToken, http.StatusUnauthorized},
		{"bearer without token", "Bearer ", http.StatusUnauthorized},
		{"token without scheme", testAdminToken, http.StatusUnauthorized},
		{"right token", "Bearer " + testAdminToken, http.StatusOK},
		{"lowercase scheme", "bearer " + testAdminToken, http.StatusOK},
		{"uppercase scheme", "BEARER " + testAdminToken, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c.with(t)
			for _, route := range []struct{ method, path string }{
				{"GET", "/api/v1/agents"}, {"GET", "/api/v1/jobs"},
			} {
				status, hdr, raw := c.request(route.method, route.path, nil, tt.auth)
				if tt.want == http.StatusOK {
					if status != http.StatusOK {
						t.Errorf("%s %s: status %d, want 200: %s", route.method, route.path, status, raw)
					}
					continue
				}
				checkAPIError(t, route.method+" "+route.path, status, hdr, raw, http.StatusUnauthorized, protocol.CodeUnauthorized, "Authorization: Bearer")
				if got := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("%s %s: WWW-Authenticate %q, want a Bearer challenge", route.method, route.path, got)
				}
			}
		})
	}
	// Every admin route checks the token before anything else.
	for _, route := range []struct{ method, path string }{
		{"POST", "/api/v1/agents"}, {"GET", "/api/v1/agents/agt_x"}, {"DELETE", "/api/v1/agents/agt_x"},
		{"POST", "/api/v1/agents/agt_x/enrollment-token"}, {"POST", "/api/v1/jobs"}, {"GET", "/api/v1/jobs/job_x"},
		{"POST", "/api/v1/jobs/job_x/cancel"},
	} {
		status, hdr, raw := c.request(route.method, route.path, `{}`, "")
		checkAPIError(t, route.method+" "+route.path, status, hdr, raw, http.StatusUnauthorized, protocol.CodeUnauthorized)
	}
}

func TestAPIUnknownRoute(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	// "/" itself is the web console's page (console_test.go).
	for _, path := range []string{"/nope", "/api/v2/agents", "/api/v1/nope", "/api/v1/agents/agt_x/keys", "/metricsx"} {
		for _, auth := range []string{"", "Bearer " + testAdminToken} {
			status, hdr, raw := c.request("GET", path, nil, auth)
			checkAPIError(t, "GET "+path, status, hdr, raw, http.StatusNotFound, protocol.CodeNotFound, path)
		}
	}
}

// TestAPIWrongMethod pins what a known path with the wrong method answers.
// The mux's own 405 is plain text; the API answers every error in JSON, so
// such a request must get a JSON method_not_allowed with an Allow header.
func TestAPIWrongMethod(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	tests := []struct {
		method, path string
		allow        []string
	}{
		{"PUT", "/api/v1/agents", []string{"GET", "POST"}},
		{"PATCH", "/api/v1/agents/agt_x", []string{"DELETE", "GET"}},
		{"GET", "/api/v1/agents/agt_x/enrollment-token", []string{"POST"}},
		{"DELETE", "/api/v1/jobs", []string{"GET", "POST"}},
		{"GET", "/api/v1/jobs/job_x/cancel", []string{"POST"}},
		{"POST", "/healthz", []string{"GET"}},
		{"POST", "/readyz", []string{"GET"}},
		{"GET", protocol.EnrollPath, []string{"POST"}},
		{"POST", protocol.ConnectPath, []string{"GET"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			c := c.with(t)
			status, hdr, raw := c.request(tt.method, tt.path, nil, "Bearer "+testAdminToken)
			checkAPIError(t, tt.method+" "+tt.path, status, hdr, raw, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, tt.method)
			var allow []string
			for _, m := range strings.Split(hdr.Get("Allow"), ",") {
				if m = strings.TrimSpace(m); m != "" && m != "HEAD" {
					allow = append(allow, m)
				}
			}
			slices.Sort(allow)
			if !slices.Equal(allow, tt.allow) {
				t.Errorf("Allow = %q, want %v (HEAD aside)", hdr.Get("Allow"), tt.allow)
			}
		})
	}
}

func TestAPIBody(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	big := `{"name":"a","labels":{"k":"` + strings.Repeat("x", maxBody) + `"}}`
	tests := []struct {
		name   string
		path   string
		body   string
		status int
		code   protocol.ErrorCode
		want   []string
	}{
		{"too large", "/api/v1/agents", big, http.StatusRequestEntityTooLarge, protocol.CodeRequestTooLarge, []string{fmt.Sprint(maxBody)}},
		{"too large job", "/api/v1/jobs", `{"agent_id":"` + strings.Repeat("a", maxBody) + `"}`, http.StatusRequestEntityTooLarge, protocol.CodeRequestTooLarge, nil},
		{"unknown field", "/api/v1/agents", `{"name":"a1","lables":{}}`, http.StatusBadRequest, protocol.CodeInvalidParams, []string{`"lables"`}},
		{"unknown job field", "/api/v1/jobs", `{"agent_id":"agt_x","kind":"resolve_credentials","timeout_s":5}`, http.StatusBadRequest, protocol.CodeInvalidParams, []string{`"timeout_s"`}},
		{"unknown nested field", "/api/v1/jobs", `{"agent_id":"agt_x","kind":"resolve_credentials","params":{"secret":{"backend":"file","secretname":"x"}}}`, http.StatusBadRequest, protocol.CodeInvalidParams, []string{`"secretname"`}},
		{"empty body", "/api/v1/agents", ``, http.StatusBadRequest, protocol.CodeInvalidParams, []string{"empty"}},
		{"not JSON", "/api/v1/agents", `name=a1`, http.StatusBadRequest, protocol.CodeInvalidParams, nil},
		{"two values", "/api/v1/agents", `{"name":"a1"}{"name":"a2"}`, http.StatusBadRequest, protocol.CodeInvalidParams, []string{"more than one"}},
		{"wrong type", "/api/v1/agents", `{"name":5}`, http.StatusBadRequest, protocol.CodeInvalidParams, []string{"name"}},
		{"enroll unknown field", protocol.EnrollPath, `{"token":"t","public_key":"k","extra":1}`, http.StatusBadRequest, protocol.CodeInvalidParams, []string{`"extra"`}},
		{"enroll too large", protocol.EnrollPath, `{"token":"` + strings.Repeat("t", maxBody) + `"}`, http.StatusRequestEntityTooLarge, protocol.CodeRequestTooLarge, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c.with(t)
			auth := "Bearer " + testAdminToken
			if tt.path == protocol.EnrollPath {
				auth = ""
			}
			status, hdr, raw := c.request("POST", tt.path, tt.body, auth)
			checkAPIError(t, tt.name, status, hdr, raw, tt.status, tt.code, tt.want...)
		})
	}
	// Nothing of the refused requests was stored.
	var list protocol.AgentList
	c.api("GET", "/api/v1/agents", nil, http.StatusOK, &list)
	if len(list.Agents) != 0 {
		t.Errorf("agents after refused requests: %+v, want none", list.Agents)
	}
}

func TestAPIRegisterAgent(t *testing.T) {
	t.Parallel()
	c := newCP(t, withOptions(func(o *Options) { o.EnrollmentTokenTTL = time.Hour }))

	before := time.Now()
	var r protocol.RegisterAgentResponse
	c.api("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "edge-1.paris_A", Labels: map[string]string{"env": "prod", "site": ""}}, http.StatusCreated, &r)
	if !strings.HasPrefix(r.Agent.ID, "agt_") || r.Agent.Name != "edge-1.paris_A" || r.Agent.Status != protocol.AgentPending {
		t.Errorf("agent = %+v, want agt_ id, the name, status pending", r.Agent)
	}
	if r.Agent.Labels["env"] != "prod" || len(r.Agent.Labels) != 2 {
		t.Errorf("labels = %v, want env=prod site=\"\"", r.Agent.Labels)
	}
	if !strings.HasPrefix(r.EnrollmentToken.Token, tokenPrefix) || len(r.EnrollmentToken.Token) < len(tokenPrefix)+43 {
		t.Errorf("token %q: want oet_ and 32 random bytes", r.EnrollmentToken.Token)
	}
	if exp := r.EnrollmentToken.ExpiresAt; exp.Before(before.Add(time.Hour-time.Second)) || exp.After(time.Now().Add(time.Hour+time.Second)) {
		t.Errorf("token expires at %s, want an hour from now", exp)
	}
	// The token is never shown again.
	raw := c.api("GET", "/api/v1/agents/"+r.Agent.ID, nil, http.StatusOK, nil)
	if strings.Contains(string(raw), r.EnrollmentToken.Token) {
		t.Errorf("GET agent shows the enrollment token: %s", raw)
	}

	long := strings.Repeat("a", 64)
	c.register(long) // 64 characters is the maximum
	c.apiError("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "edge-1.paris_A"}, http.StatusConflict, protocol.CodeConflict, "edge-1.paris_A")

	names := map[string]string{
		"empty":          "",
		"too long":       long + "b",
		"leading dash":   "-edge",
		"leading dot":    ".edge",
		"space":          "edge 1",
		"slash":          "edge/1",
		"non-ASCII":      "édge",
		"control":        "edge\n1",
		"leading under":  "_edge",
		"quote":          `edge"1`,
		"percent escape": "edge%201",
	}
	for name, n := range names {
		t.Run("name "+name, func(t *testing.T) {
			c := c.with(t)
			c.apiError("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: n}, http.StatusBadRequest, protocol.CodeInvalidParams, "name must be")
		})
	}

	many := map[string]string{}
	for i := range 33 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	labels := map[string]map[string]string{
		"too many":         many,
		"bad key":          {"bad key": "v"},
		"empty key":        {"": "v"},
		"long value":       {"k": strings.Repeat("v", 257)},
		"key with a slash": {"a/b": "v"},
	}
	for name, l := range labels {
		t.Run("labels "+name, func(t *testing.T) {
			c := c.with(t)
			c.apiError("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "lbl-" + strings.ReplaceAll(name, " ", "-"), Labels: l}, http.StatusBadRequest, protocol.CodeInvalidParams, "labels")
		})
	}
	ok := map[string]string{"k": strings.Repeat("v", 256)}
	for i := range 31 {
		ok[fmt.Sprintf("k%d", i)] = ""
	}
	c.api("POST", "/api/v1/agents", protocol.RegisterAgentRequest{Name: "labels-max", Labels: ok}, http.StatusCreated, nil)

	var list protocol.AgentList
	c.api("GET", "/api/v1/agents", nil, http.StatusOK, &list)
	var got []string
	for _, a := range list.Agents {
		got = append(got, a.Name)
	}
	want := []string{long, "edge-1.paris_A", "labels-max"}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("agents = %v, want %v", got, want)
	}
}

func TestAPIAgentStatus(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	reg := c.register("status-1")
	id := reg.Agent.ID

	var list protocol.AgentList
	c.api("GET", "/api/v1/agents", nil, http.StatusOK, &list)
	if len(list.Agents) != 1 || list.Agents[0].Status != protocol.AgentPending || list.Agents[0].ID != id {
		t.Fatalf("list before enrollment = %+v, want one pending agent", list.Agents)
	}
	if v := c.agentView(id); v.Status != protocol.AgentPending || v.EnrolledAt != nil {
		t.Errorf("before enrollment: %+v, want pending and no enrolled_at", v)
	}

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	if status, _, raw := c.enroll(reg.EnrollmentToken.Token, pub); status != http.StatusOK {
		t.Fatalf("enroll: %d %s", status, raw)
	}
	k := agentKey{id: id, key: priv}
	if v := c.agentView(id); v.Status != protocol.AgentOffline || v.EnrolledAt == nil {
		t.Errorf("enrolled, not connected: %+v, want offline with enrolled_at", v)
	}

	a := c.connect(k, func(h *protocol.Hello) { h.Concurrency = 3; h.Hostname = "vm-17" })
	v := c.agentView(id)
	if v.Status != protocol.AgentOnline || v.SessionID != a.welcome.SessionID || v.ConnectedSince == nil || v.LastSeen == nil {
		t.Errorf("during a session: %+v, want online with session %s, connected_since, last_seen", v, a.welcome.SessionID)
	}
	if v.Hostname != "vm-17" || v.Concurrency != 3 || v.AgentVersion != "fake-1.0" || v.OS != "linux/amd64" ||
		!slices.Equal(v.Kinds, protocol.JobKinds) || len(v.Backends) != 1 || v.Backends[0].Name != "file" {
		t.Errorf("during a session: %+v, want what the hello said", v)
	}
	c.api("GET", "/api/v1/agents", nil, http.StatusOK, &list)
	if list.Agents[0].Status != protocol.AgentOnline {
		t.Errorf("list during a session: %s, want online", list.Agents[0].Status)
	}

	a.send(&protocol.Message{Type: protocol.TypeDraining, Draining: &protocol.Draining{Grace: protocol.Duration(time.Second), Reason: "test"}})
	c.waitStatus(id, protocol.AgentDraining)

	a.drop()
	v = c.waitStatus(id, protocol.AgentOffline)
	if v.LastSeen == nil || v.SessionID != "" || v.ConnectedSince != nil || v.Hostname != "vm-17" {
		t.Errorf("after the session: %+v, want offline with last_seen and the last hostname, no session", v)
	}

	c.apiError("GET", "/api/v1/agents/agt_unknown", nil, http.StatusNotFound, protocol.CodeNotFound, "agent")
}

func TestAPIRevoke(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("revoke-1")
	a := c.connect(k, func(h *protocol.Hello) { h.Concurrency = 1 })
	running := c.submit(k.id, time.Minute)
	j := a.expectJob()
	a.accept(j)
	c.waitState(running.ID, protocol.JobRunning)
	queued := c.submit(k.id, time.Minute) // waits behind the running one

	var v protocol.AgentView
	c.api("DELETE", "/api/v1/agents/"+k.id, nil, http.StatusOK, &v)
	if v.Status != protocol.AgentRevoked || v.RevokedAt == nil {
		t.Errorf("DELETE answered %+v, want status revoked with revoked_at", v)
	}
	if code := a.closeCode(5 * time.Second); code != protocol.CloseRevoked {
		t.Errorf("the session closed with %d, want CloseRevoked (%d)", code, protocol.CloseRevoked)
	}
	if v := c.agentView(k.id); v.Status != protocol.AgentRevoked {
		t.Errorf("GET after revoke: %s, want revoked", v.Status)
	}
	for _, id := range []string{running.ID, queued.ID} {
		jv := c.job(id)
		if jv.State != protocol.JobFailed || jv.Error == nil || jv.Error.Code != protocol.CodeAgentRevoked {
			t.Errorf("job %s after revoke: %s %v, want failed agent_revoked", id, jv.State, jv.Error)
		}
	}

	// The key is no longer accepted.
	conn := c.dial(protocol.Subprotocol)
	writeMsg(t, conn, helloFor(k, readChallenge(t, conn), nil))
	if code, _ := readClose(t, conn, 5*time.Second); code != protocol.CloseRevoked {
		t.Errorf("a revoked agent's hello got close %d, want CloseRevoked", code)
	}
	c.apiError("POST", "/api/v1/agents/"+k.id+"/enrollment-token", nil, http.StatusConflict, protocol.CodeAgentRevoked, "revoked")
	c.apiError("POST", "/api/v1/jobs", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: resolveParams()},
		http.StatusConflict, protocol.CodeAgentRevoked, k.id)
	c.apiError("DELETE", "/api/v1/agents/agt_unknown", nil, http.StatusNotFound, protocol.CodeNotFound)

	// Revoking again changes nothing.
	var again protocol.AgentView
	c.api("DELETE", "/api/v1/agents/"+k.id, nil, http.StatusOK, &again)
	if again.Status != protocol.AgentRevoked || again.RevokedAt == nil || !again.RevokedAt.Equal(*v.RevokedAt) {
		t.Errorf("second DELETE: %s revoked_at %v, want revoked at %v still", again.Status, again.RevokedAt, v.RevokedAt)
	}
	// A pending agent can be revoked; its token dies with it.
	p := c.register("revoke-pending")
	c.api("DELETE", "/api/v1/agents/"+p.Agent.ID, nil, http.StatusOK, nil)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	status, hdr, raw := c.enroll(p.EnrollmentToken.Token, pub)
	checkAPIError(t, "enroll a revoked agent", status, hdr, raw, http.StatusUnauthorized, protocol.CodeTokenInvalid)
}

// offsetClock is a clock that a test moves forward.
type offsetClock struct{ off atomic.Int64 }

func (k *offsetClock) now() time.Time          { return time.Now().Add(time.Duration(k.off.Load())) }
func (k *offsetClock) advance(d time.Duration) { k.off.Add(int64(d)) }

func TestAPIEnrollmentTokenExpires(t *testing.T) {
	t.Parallel()
	clock := &offsetClock{}
	c := newCP(t, withOptions(func(o *Options) { o.Now = clock.now; o.EnrollmentTokenTTL = time.Hour }))
	reg := c.register("ttl-1")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	clock.advance(time.Hour + time.Second)
	status, hdr, raw := c.enroll(reg.EnrollmentToken.Token, pub)
	checkAPIError(t, "enroll with an expired token", status, hdr, raw, http.StatusUnauthorized, protocol.CodeTokenInvalid, "expired")
	// A new token, within its hour, works.
	var nt protocol.RegisterAgentResponse
	c.api("POST", "/api/v1/agents/"+reg.Agent.ID+"/enrollment-token", nil, http.StatusCreated, &nt)
	clock.advance(59 * time.Minute)
	if status, _, raw := c.enroll(nt.EnrollmentToken.Token, pub); status != http.StatusOK {
		t.Errorf("enroll within the TTL: %d %s", status, raw)
	}
}

func TestAPIEnrollmentToken(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	reg := c.register("tok-1")
	id := reg.Agent.ID
	oldToken := reg.EnrollmentToken.Token

	var nt protocol.RegisterAgentResponse
	c.api("POST", "/api/v1/agents/"+id+"/enrollment-token", nil, http.StatusCreated, &nt)
	if nt.Agent.ID != id || nt.EnrollmentToken.Token == "" || nt.EnrollmentToken.Token == oldToken {
		t.Fatalf("new token answer %+v: want the agent and a new token", nt)
	}

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	status, hdr, raw := c.enroll(oldToken, pub)
	checkAPIError(t, "enroll with the voided token", status, hdr, raw, http.StatusUnauthorized, protocol.CodeTokenInvalid, "enrollment-token")
	if status, _, raw := c.enroll(nt.EnrollmentToken.Token, pub); status != http.StatusOK {
		t.Fatalf("enroll with the new token: %d %s", status, raw)
	}
	status, hdr, raw = c.enroll(nt.EnrollmentToken.Token, pub)
	checkAPIError(t, "enroll twice with one token", status, hdr, raw, http.StatusUnauthorized, protocol.CodeTokenInvalid)
	status, hdr, raw = c.enroll("oet_made-up", pub)
	checkAPIError(t, "enroll with a made-up token", status, hdr, raw, http.StatusUnauthorized, protocol.CodeTokenInvalid)

	// Re-enrolling (a new VM) ends the old key's session and its key.
	k1 := agentKey{id: id, key: priv}
	a := c.connect(k1, nil)
	var again protocol.RegisterAgentResponse
	c.api("POST", "/api/v1/agents/"+id+"/enrollment-token", nil, http.StatusCreated, &again)
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	if status, _, raw := c.enroll(again.EnrollmentToken.Token, pub2); status != http.StatusOK {
		t.Fatalf("re-enroll: %d %s", status, raw)
	}
	if code := a.closeCode(5 * time.Second); code != protocol.CloseSuperseded {
		t.Errorf("the old key's session closed with %d, want CloseSuperseded", code)
	}
	conn := c.dial(protocol.Subprotocol)
	writeMsg(t, conn, helloFor(k1, readChallenge(t, conn), nil))
	if code, _ := readClose(t, conn, 5*time.Second); code != protocol.CloseAuthFailed {
		t.Errorf("the old key after re-enrollment: close %d, want CloseAuthFailed", code)
	}
	c.connect(agentKey{id: id, key: priv2}, nil)

	c.apiError("POST", "/api/v1/agents/agt_unknown/enrollment-token", nil, http.StatusNotFound, protocol.CodeNotFound)

	for name, body := range map[string]any{
		"no token":    protocol.EnrollRequest{PublicKey: protocol.EncodePublicKey(pub)},
		"bad key":     protocol.EnrollRequest{Token: "oet_x", PublicKey: "bm90IGEga2V5"},
		"short key":   protocol.EnrollRequest{Token: "oet_x", PublicKey: protocol.EncodePublicKey(pub[:16])},
		"long token":  protocol.EnrollRequest{Token: strings.Repeat("t", 257), PublicKey: protocol.EncodePublicKey(pub)},
		"long host":   protocol.EnrollRequest{Token: "oet_x", PublicKey: protocol.EncodePublicKey(pub), Hostname: strings.Repeat("h", 257)},
		"empty token": protocol.EnrollRequest{Token: "", PublicKey: ""},
	} {
		status, hdr, raw := c.request("POST", protocol.EnrollPath, body, "")
		checkAPIError(t, "enroll "+name, status, hdr, raw, http.StatusBadRequest, protocol.CodeInvalidParams)
	}
}

func TestAPISubmitJobValidation(t *testing.T) {
	t.Parallel()
	c := newCP(t, withOptions(func(o *Options) { o.MaxJobTimeout = 10 * time.Minute; o.DefaultJobTimeout = 30 * time.Second }))
	k := c.newAgent("submit-1")
	conn := protocol.Params{Secret: fileRef(), GitHubURL: "https://git.example.com", GitHubKind: protocol.GitHubEnterpriseServer}
	tests := []struct {
		name   string
		body   any
		status int
		code   protocol.ErrorCode
		want   []string
	}{
		{"unknown kind", protocol.SubmitJobRequest{AgentID: k.id, Kind: "workflow_dispatch", Params: resolveParams()}, 400, protocol.CodeInvalidParams, []string{`"workflow_dispatch"`, "resolve_credentials"}},
		{"no kind", protocol.SubmitJobRequest{AgentID: k.id, Params: resolveParams()}, 400, protocol.CodeInvalidParams, []string{"kind"}},
		{"no secret", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials}, 400, protocol.CodeInvalidParams, []string{"params.secret"}},
		{"bad backend", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "vault", SecretName: "x", PasswordKey: "p"}}}, 400, protocol.CodeInvalidParams, []string{"secret.backend"}},
		{"no password key", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "aws", SecretName: "x"}}}, 400, protocol.CodeInvalidParams, []string{"secret.password_key"}},
		{"azure fields on aws", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: protocol.Params{Secret: &protocol.SecretRef{Backend: "aws", SecretName: "x", PasswordKey: "p", VaultName: "v"}}}, 400, protocol.CodeInvalidParams, []string{"secret.vault_name"}},
		{"http github url with user", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindTestConnection, Params: protocol.Params{Secret: fileRef(), GitHubKind: protocol.GitHubCloud, GitHubURL: "https://u:p@github.com"}}, 400, protocol.CodeInvalidParams, []string{"params.github_url", "user info"}},
		{"ftp github url", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindListOrganizations, Params: protocol.Params{Secret: fileRef(), GitHubKind: protocol.GitHubCloud, GitHubURL: "ftp://github.com"}}, 400, protocol.CodeInvalidParams, []string{"params.github_url"}},
		{"no github kind", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindTestConnection, Params: protocol.Params{Secret: fileRef(), GitHubURL: "https://github.com"}}, 400, protocol.CodeInvalidParams, []string{"params.github_kind"}},
		{"bad scope", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindTestConnection, Params: protocol.Params{Secret: fileRef(), GitHubURL: "https://github.com", GitHubKind: protocol.GitHubCloud, RequiredScopes: []string{"repo", "a b"}}}, 400, protocol.CodeInvalidParams, []string{"params.required_scopes"}},
		{"timeout over max", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: resolveParams(), Timeout: protocol.Duration(11 * time.Minute)}, 400, protocol.CodeInvalidParams, []string{"timeout", "10m0s"}},
		{"negative timeout", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: resolveParams(), Timeout: protocol.Duration(-time.Second)}, 400, protocol.CodeInvalidParams, []string{"timeout"}},
		{"timeout not a duration", `{"agent_id":"` + k.id + `","kind":"resolve_credentials","params":{"secret":{"backend":"file","secret_name":"a","password_key":"b"}},"timeout":"soon"}`, 400, protocol.CodeInvalidParams, []string{"soon"}},
		{"unknown agent", protocol.SubmitJobRequest{AgentID: "agt_unknown", Kind: protocol.KindResolveCredentials, Params: resolveParams()}, 404, protocol.CodeNotFound, []string{"agt_unknown"}},
		{"no agent", protocol.SubmitJobRequest{Kind: protocol.KindResolveCredentials, Params: resolveParams()}, 404, protocol.CodeNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c.with(t)
			c.apiError("POST", "/api/v1/jobs", tt.body, tt.status, tt.code, tt.want...)
		})
	}
	var none protocol.JobList
	c.api("GET", "/api/v1/jobs", nil, http.StatusOK, &none)
	if len(none.Jobs) != 0 {
		t.Errorf("jobs after refused submissions: %d, want 0", len(none.Jobs))
	}

	// Valid submissions: the default timeout, the maximum, each kind.
	var v protocol.JobView
	before := time.Now()
	c.api("POST", "/api/v1/jobs", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: resolveParams()}, http.StatusCreated, &v)
	if v.Timeout.D() != 30*time.Second || v.Deadline.Before(before.Add(29*time.Second)) || v.State != protocol.JobQueued || v.Attempts != 0 || !strings.HasPrefix(v.ID, "job_") {
		t.Errorf("job with the default timeout: %+v", v)
	}
	c.api("POST", "/api/v1/jobs", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindTestConnection, Params: conn, Timeout: protocol.Duration(10 * time.Minute)}, http.StatusCreated, &v)
	if v.Timeout.D() != 10*time.Minute || v.Params.GitHubURL != conn.GitHubURL {
		t.Errorf("test_connection job: %+v", v)
	}
	c.api("POST", "/api/v1/jobs", protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindListOrganizations, Params: conn}, http.StatusCreated, nil)
	// A pending agent (registered, never enrolled) can be given jobs.
	pending := c.register("submit-pending")
	c.api("POST", "/api/v1/jobs", protocol.SubmitJobRequest{AgentID: pending.Agent.ID, Kind: protocol.KindResolveCredentials, Params: resolveParams()}, http.StatusCreated, nil)
}

func TestAPIWait(t *testing.T) {
	t.Parallel()
	c := newCP(t, withOptions(func(o *Options) { o.MaxWait = 300 * time.Millisecond }))
	k := c.newAgent("wait-1")
	body := protocol.SubmitJobRequest{AgentID: k.id, Kind: protocol.KindResolveCredentials, Params: resolveParams()}

	for _, w := range []string{"abc", "-1s", "10", "1x", "%20"} {
		c.apiError("POST", "/api/v1/jobs?wait="+w, body, http.StatusBadRequest, protocol.CodeInvalidParams, "wait=")
		c.apiError("GET", "/api/v1/jobs/job_x?wait="+w, nil, http.StatusBadRequest, protocol.CodeInvalidParams, "wait=")
	}

	// The agent is offline: the wait runs out, capped by MaxWait.
	start := time.Now()
	var v protocol.JobView
	c.api("POST", "/api/v1/jobs?wait=1h", body, http.StatusCreated, &v)
	if el := time.Since(start); el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("submit ?wait=1h took %s, want MaxWait (300ms)", el)
	}
	if v.State != protocol.JobQueued {
		t.Errorf("after the wait: %s, want queued", v.State)
	}
	start = time.Now()
	c.api("GET", "/api/v1/jobs/"+v.ID+"?wait=1h", nil, http.StatusOK, &v)
	if el := time.Since(start); el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("GET ?wait=1h took %s, want MaxWait (300ms)", el)
	}
	c.api("GET", "/api/v1/jobs/"+v.ID+"?wait=0s", nil, http.StatusOK, nil)

	// An online agent answers within the wait: the answer holds the result.
	a := c.connect(k, nil)
	j := a.expectJob() // the first job, dispatched on connect
	a.succeed(j.JobID, j.Attempt, "hmac-sha256:000000000000000000000001")
	a.expectAck(j.JobID)
	type reply struct {
		v   protocol.JobView
		raw []byte
	}
	done := make(chan reply, 1)
	ctx := testCtx(t)
	go func() {
		// A goroutine of its own: the fake agent answers while the API waits.
		// It must not call t.Fatal: plain net/http.
		var r reply
		b, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, "POST", c.ts.URL+"/api/v1/jobs?wait=10s", strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := c.ts.Client().Do(req)
		if err != nil {
			r.raw = []byte(err.Error())
			done <- r
			return
		}
		defer resp.Body.Close()
		r.raw, _ = io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusCreated {
			_ = json.Unmarshal(r.raw, &r.v)
		}
		done <- r
	}()
	j2 := a.expectJob()
	a.succeed(j2.JobID, j2.Attempt, "hmac-sha256:000000000000000000000002")
	a.expectAck(j2.JobID)
	r := <-done
	if r.v.ID != j2.JobID || r.v.State != protocol.JobSucceeded || r.v.Result == nil || r.v.FinishedAt == nil || r.v.DurationMS == nil {
		t.Errorf("submit ?wait=10s answered %s, want job %s succeeded with its result", r.raw, j2.JobID)
	}
	// A terminal job answers a wait at once.
	start = time.Now()
	c.api("GET", "/api/v1/jobs/"+j.JobID+"?wait=1h", nil, http.StatusOK, &v)
	if el := time.Since(start); el > 250*time.Millisecond || v.State != protocol.JobSucceeded {
		t.Errorf("GET ?wait on a finished job: %s after %s, want succeeded at once", v.State, el)
	}
	c.apiError("GET", "/api/v1/jobs/job_unknown?wait=1s", nil, http.StatusNotFound, protocol.CodeNotFound, "job")
}

func TestAPIListJobs(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k1 := c.newAgent("list-1")
	k2 := c.newAgent("list-2")
	j1 := c.submit(k1.id, time.Minute)
	j2 := c.submit(k1.id, time.Minute)
	j3 := c.submit(k2.id, time.Minute)
	c.api("POST", "/api/v1/jobs/"+j2.ID+"/cancel", nil, http.StatusOK, nil)

	ids := func(q string) []string {
		t.Helper()
		var l protocol.JobList
		c.api("GET", "/api/v1/jobs"+q, nil, http.StatusOK, &l)
		out := []string{}
		for _, j := range l.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{j3.ID, j2.ID, j1.ID}}, // newest first
		{"?agent_id=" + k1.id, []string{j2.ID, j1.ID}},
		{"?agent_id=" + k2.id, []string{j3.ID}},
		{"?agent_id=agt_unknown", []string{}},
		{"?state=queued", []string{j3.ID, j1.ID}},
		{"?state=canceled", []string{j2.ID}},
		{"?state=succeeded", []string{}},
		{"?agent_id=" + k1.id + "&state=queued", []string{j1.ID}},
		{"?limit=1", []string{j3.ID}},
		{"?limit=1000", []string{j3.ID, j2.ID, j1.ID}},
	}
	for _, tt := range tests {
		if got := ids(tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("GET /api/v1/jobs%s = %v, want %v", tt.query, got, tt.want)
		}
	}
	for _, q := range []string{"?state=done", "?state=QUEUED", "?state=" + strings.Repeat("x", 100)} {
		c.apiError("GET", "/api/v1/jobs"+q, nil, http.StatusBadRequest, protocol.CodeInvalidParams, "state=", "queued")
	}
	for _, q := range []string{"?limit=0", "?limit=-1", "?limit=1001", "?limit=ten", "?limit=1.5"} {
		c.apiError("GET", "/api/v1/jobs"+q, nil, http.StatusBadRequest, protocol.CodeInvalidParams, "limit", "1000")
	}
}

func TestAPICancel(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	k := c.newAgent("cancel-1")
	q := c.submit(k.id, time.Minute)

	var v protocol.JobView
	c.api("POST", "/api/v1/jobs/"+q.ID+"/cancel", nil, http.StatusOK, &v)
	if v.State != protocol.JobCanceled || v.Error == nil || v.Error.Code != protocol.CodeCanceled || v.FinishedAt == nil {
		t.Errorf("cancel a queued job: %+v, want canceled with error canceled", v)
	}
	c.apiError("POST", "/api/v1/jobs/"+q.ID+"/cancel", nil, http.StatusConflict, protocol.CodeJobNotCancellable, q.ID, "canceled")
	c.apiError("POST", "/api/v1/jobs/job_unknown/cancel", nil, http.StatusNotFound, protocol.CodeNotFound, "job")

	// The canceled job never reaches the agent; a running one is canceled
	// on the agent, and its late result is acknowledged and dropped.
	a := c.connect(k, nil)
	r := c.submit(k.id, time.Minute)
	j := a.expectJob()
	if j.JobID != r.ID {
		t.Fatalf("dispatched %s, want %s (the canceled job must not be sent)", j.JobID, r.ID)
	}
	a.accept(j)
	c.waitState(r.ID, protocol.JobRunning)
	c.api("POST", "/api/v1/jobs/"+r.ID+"/cancel", nil, http.StatusOK, &v)
	if v.State != protocol.JobCanceled {
		t.Errorf("cancel a running job: %s, want canceled", v.State)
	}
	m := a.expect(protocol.TypeCancel)
	if m.Cancel.JobID != r.ID || m.Cancel.Reason == "" {
		t.Errorf("cancel message %+v, want job %s with a reason", m.Cancel, r.ID)
	}
	a.send(errResult(j.JobID, j.Attempt, protocol.CodeCanceled))
	a.expectAck(j.JobID)
	if v := c.job(r.ID); v.State != protocol.JobCanceled || v.Error.Message != "the job was canceled through the API" {
		t.Errorf("after the late result: %s %v, want canceled through the API", v.State, v.Error)
	}
	// The slot is free again.
	n := c.submit(k.id, time.Minute)
	if j := a.expectJob(); j.JobID != n.ID {
		t.Errorf("next job %s, want %s", j.JobID, n.ID)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	c := newCP(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		status, hdr, raw := c.request("GET", path, nil, "")
		var h protocol.Health
		if err := json.Unmarshal(raw, &h); status != http.StatusOK || err != nil || h.Status != "ok" || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %s, want 200 {\"status\":\"ok\"}", path, status, raw)
		}
	}
	if err := c.st.Close(); err != nil {
		t.Fatal(err)
	}
	status, _, raw := c.request("GET", "/readyz", nil, "")
	var h protocol.Health
	if err := json.Unmarshal(raw, &h); status != http.StatusServiceUnavailable || err != nil || h.Status != "unavailable" || h.Detail == "" {
		t.Errorf("GET /readyz with the store closed: %d %s, want 503 unavailable with a detail", status, raw)
	}
	if status, _, _ := c.request("GET", "/healthz", nil, ""); status != http.StatusOK {
		t.Errorf("GET /healthz with the store closed: %d, want 200 (liveness does not depend on the store)", status)
	}
	// The API says the store is unavailable rather than failing obscurely.
	c.apiError("GET", "/api/v1/agents", nil, http.StatusServiceUnavailable, protocol.CodeUnavailable)
}
