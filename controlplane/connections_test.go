package controlplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/orchestrator/orchestrator/protocol"
)

// The saved connections' API, against the real store and a scripted agent
// (the fake agent of main_test.go). Helpers here start with conn.

// connCanary is a secret value that must never come back or be logged.
const connCanary = "ghp_canary-3c1e7a90-DO-NOT-LEAK"

const connPassword = "correct horse battery"

// connClock is a clock the test moves forward (for the password window).
type connClock struct{ offset atomic.Int64 }

func (k *connClock) now() time.Time          { return time.Now().Add(time.Duration(k.offset.Load())) }
func (k *connClock) advance(d time.Duration) { k.offset.Add(int64(d)) }

// newConnCP is a control plane with a cheap bcrypt cost.
func newConnCP(t *testing.T, opts ...func(*Options)) *testCP {
	t.Helper()
	return newCP(t, withOptions(func(o *Options) {
		o.PasswordCost = bcrypt.MinCost
		for _, f := range opts {
			f(o)
		}
	}))
}

// connResponse is an answer of the API.
type connResponse struct {
	status int
	header http.Header
	body   []byte
}

// connDo sends a request with the admin token and, when password is not
// empty, the connection's password. It returns an error rather than
// failing the test, so that it can run outside the test's goroutine.
func connDo(c *testCP, method, path string, body any, password string) (connResponse, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return connResponse{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.ts.URL+path, rd)
	if err != nil {
		return connResponse{}, err
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	if password != "" {
		req.Header.Set(protocol.PasswordHeader, password)
	}
	resp, err := c.ts.Client().Do(req)
	if err != nil {
		return connResponse{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return connResponse{status: resp.StatusCode, header: resp.Header, body: raw}, err
}

// connCall is connDo that fails the test on a transport error.
func connCall(t *testing.T, c *testCP, method, path string, body any, password string) connResponse {
	t.Helper()
	r, err := connDo(c, method, path, body, password)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// connOK calls and checks the status, decoding the answer into out.
func connOK(t *testing.T, c *testCP, method, path string, body any, password string, status int, out any) connResponse {
	t.Helper()
	r := connCall(t, c, method, path, body, password)
	if r.status != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s: decode: %v: %s", method, path, err, r.body)
		}
	}
	return r
}

// connError calls and checks for an API error.
func connError(t *testing.T, c *testCP, method, path string, body any, password string, status int, code protocol.ErrorCode, want ...string) protocol.Error {
	t.Helper()
	r := connCall(t, c, method, path, body, password)
	return checkAPIError(t, method+" "+path, r.status, r.header, r.body, status, code, want...)
}

// connAsync runs a request in the background; wait returns its answer.
func connAsync(c *testCP, method, path string, body any, password string) (wait func(t *testing.T) connResponse) {
	type answer struct {
		r   connResponse
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		r, err := connDo(c, method, path, body, password)
		ch <- answer{r, err}
	}()
	return func(t *testing.T) connResponse {
		t.Helper()
		select {
		case a := <-ch:
			if a.err != nil {
				t.Fatalf("%s %s: %v", method, path, a.err)
			}
			return a.r
		case <-time.After(30 * time.Second):
			t.Fatalf("%s %s: no answer within 30s", method, path)
			return connResponse{}
		}
	}
}

// connAgent registers, enrolls and connects a fake agent with the file
// backend (as helloFor says) unless mod changes it.
func connAgent(c *testCP, name string, mod func(*protocol.Hello)) (agentKey, *fakeAgent) {
	c.t.Helper()
	k := c.newAgent(name)
	return k, c.connect(k, mod)
}

// connRequest is a valid creation request for agent id.
func connRequest(name, agentID string) protocol.CreateConnectionRequest {
	return protocol.CreateConnectionRequest{
		Name: name, Kind: protocol.GitHubEnterpriseServer, GitHubURL: "https://Git.Example.com/api/v3/", AgentID: agentID,
		Secret: protocol.SecretRef{SecretName: "ci/github", UsernameKey: "username", PasswordKey: "token"},
	}
}

func connCreate(t *testing.T, c *testCP, req protocol.CreateConnectionRequest) protocol.ConnectionView {
	t.Helper()
	var v protocol.ConnectionView
	connOK(t, c, "POST", "/api/v1/connections", req, "", http.StatusCreated, &v)
	return v
}

// connTestResult is the agent's ok result for a test_connection job.
func connTestResult(j *protocol.Job, login string, orgs ...string) *protocol.Message {
	now := time.Now().UTC()
	out := &protocol.ConnectionOutput{
		APIURL: j.Params.GitHubURL + "/api/v3/", GHESVersion: "3.19.1", Login: login, TokenType: "classic_pat",
		ScopesListable: true, Scopes: []string{"repo", "read:org"}, MissingScopes: []string{"workflow"}, RateLimitRemaining: -1,
	}
	for i, o := range orgs {
		out.Organizations = append(out.Organizations, protocol.Organization{Login: o, ID: int64(i + 1)})
	}
	return &protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{
		JobID: j.JobID, Attempt: j.Attempt, OK: true, StartedAt: now, FinishedAt: now, Output: &protocol.Output{Connection: out},
	}}
}

// connOrgsResult is the agent's ok result for a list_organizations job.
func connOrgsResult(j *protocol.Job, orgs ...string) *protocol.Message {
	now := time.Now().UTC()
	out := &protocol.OrganizationsOutput{Organizations: []protocol.Organization{}}
	for i, o := range orgs {
		out.Organizations = append(out.Organizations, protocol.Organization{Login: o, ID: int64(i + 1), Description: "org " + o})
	}
	return &protocol.Message{Type: protocol.TypeResult, Result: &protocol.Result{
		JobID: j.JobID, Attempt: j.Attempt, OK: true, StartedAt: now, FinishedAt: now, Output: &protocol.Output{Organizations: out},
	}}
}

// connAnswer has the fake agent take the next job, check its kind, and
// send result(job).
func connAnswer(t *testing.T, a *fakeAgent, kind protocol.JobKind, result func(*protocol.Job) *protocol.Message) *protocol.Job {
	t.Helper()
	j := a.expectJob()
	if j.Kind != kind {
		t.Fatalf("the agent got a %s job, want %s", j.Kind, kind)
	}
	a.accept(j)
	a.send(result(j))
	a.expectAck(j.JobID)
	return j
}

// connFetchOrgs fetches the organizations of connection id, the fake
// agent answering with orgs.
func connFetchOrgs(t *testing.T, c *testCP, a *fakeAgent, id, password string, orgs ...string) protocol.ConnectionOrganizations {
	t.Helper()
	wait := connAsync(c, "GET", "/api/v1/connections/"+id+"/organizations", nil, password)
	connAnswer(t, a, protocol.KindListOrganizations, func(j *protocol.Job) *protocol.Message { return connOrgsResult(j, orgs...) })
	r := wait(t)
	if r.status != http.StatusOK {
		t.Fatalf("organizations: status %d: %s", r.status, r.body)
	}
	var out protocol.ConnectionOrganizations
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// connLogsHave reports whether a log line has msg and the fields.
func connLogsHave(c *testCP, msg string, fields map[string]string) bool {
	for _, e := range c.logs.All() {
		if e.Message != msg {
			continue
		}
		ok := true
		for k, v := range fields {
			if fmt.Sprint(e.ContextMap()[k]) != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// connNoLeak fails if the canary is in the control plane's logs.
func connNoLeak(t *testing.T, c *testCP, secrets ...string) {
	t.Helper()
	for _, e := range c.logs.All() {
		line := fmt.Sprintf("%s %v", e.Message, e.ContextMap())
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("a log line holds a secret: %s", line)
			}
		}
	}
}

func TestConnectionCreate(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, _ := connAgent(c, "vm-1", nil)

	before := time.Now()
	v := connCreate(t, c, connRequest("Prod GHES", k.id))
	if !strings.HasPrefix(v.ID, "con_") || v.Name != "Prod GHES" || v.Kind != protocol.GitHubEnterpriseServer || v.AgentID != k.id {
		t.Errorf("created %+v", v)
	}
	if v.GitHubURL != "https://git.example.com" {
		t.Errorf("github_url = %q, want it normalised to https://git.example.com", v.GitHubURL)
	}
	if v.Secret == nil || v.Secret.Backend != protocol.BackendFile || v.Secret.SecretName != "ci/github" || v.Secret.PasswordKey != "token" {
		t.Errorf("secret = %+v, want the file backend filled in from the agent", v.Secret)
	}
	if !v.Active || v.Protected || v.Locked || v.LastTest != nil || v.CreatedAt.Before(before.Add(-time.Second)) || !v.UpdatedAt.Equal(v.CreatedAt) {
		t.Errorf("created %+v", v)
	}
	var got protocol.ConnectionView
	connOK(t, c, "GET", "/api/v1/connections/"+v.ID, nil, "", http.StatusOK, &got)
	if got.ID != v.ID || got.GitHubURL != v.GitHubURL || *got.Secret != *v.Secret {
		t.Errorf("GET = %+v, want %+v", got, v)
	}
	if !connLogsHave(c, "connection created", map[string]string{"connection_id": v.ID, "connection": "Prod GHES", "agent_id": k.id}) {
		t.Errorf("no log line names the new connection")
	}

	// Names are unique, ignoring case.
	connError(t, c, "POST", "/api/v1/connections", connRequest("prod ghes", k.id), "", http.StatusConflict, protocol.CodeConflict, `"prod ghes" already exists`)

	// Inactive, cloud, scopes, organization.
	cloud := connRequest("cloud", k.id)
	cloud.Kind, cloud.GitHubURL, cloud.Active = protocol.GitHubCloud, "https://api.github.com/", new(bool)
	cloud.RequiredScopes, cloud.Organization = []string{"repo", "read:org"}, "acme"
	v = connCreate(t, c, cloud)
	if v.GitHubURL != "https://github.com" || v.Active || v.Organization != "acme" || len(v.RequiredScopes) != 2 {
		t.Errorf("cloud connection = %+v", v)
	}
}

func TestConnectionCreateInvalid(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, _ := connAgent(c, "vm-1", nil)
	multi, _ := connAgent(c, "vm-multi", func(h *protocol.Hello) {
		h.Backends = []protocol.BackendInfo{{Name: "aws", Settings: map[string]string{"region": "eu-west-3"}}, {Name: "azure"}}
	})
	never := c.register("vm-never").Agent.ID
	revoked := c.newAgent("vm-revoked").id
	c.api("DELETE", "/api/v1/agents/"+revoked, nil, http.StatusOK, nil)

	mod := func(f func(*protocol.CreateConnectionRequest)) protocol.CreateConnectionRequest {
		r := connRequest("c", k.id)
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name string
		body any
		want []string
	}{
		{"no name", mod(func(r *protocol.CreateConnectionRequest) { r.Name = "" }), []string{"name is required"}},
		{"name with spaces around", mod(func(r *protocol.CreateConnectionRequest) { r.Name = " x" }), []string{"name starts or ends with a space"}},
		{"name too long", mod(func(r *protocol.CreateConnectionRequest) { r.Name = strings.Repeat("n", 129) }), []string{"at most 128"}},
		{"no kind", mod(func(r *protocol.CreateConnectionRequest) { r.Kind = "" }), []string{"kind is required"}},
		{"bad kind", mod(func(r *protocol.CreateConnectionRequest) { r.Kind = "gitlab" }), []string{`kind "gitlab"`}},
		{"no url", mod(func(r *protocol.CreateConnectionRequest) { r.GitHubURL = "" }), []string{"github_url is required"}},
		{"url with user info", mod(func(r *protocol.CreateConnectionRequest) {
			r.GitHubURL = "https://bot:" + connCanary + "@git.example.com"
		}), []string{"github_url", "user info"}},
		{"url with a path", mod(func(r *protocol.CreateConnectionRequest) { r.GitHubURL = "https://git.example.com/orgs/acme" }), []string{"github_url", "path"}},
		{"ghes at github.com", mod(func(r *protocol.CreateConnectionRequest) { r.GitHubURL = "https://github.com" }), []string{"github_cloud"}},
		{"no agent", mod(func(r *protocol.CreateConnectionRequest) { r.AgentID = "" }), []string{"agent_id is required"}},
		{"unknown agent", mod(func(r *protocol.CreateConnectionRequest) { r.AgentID = "agt_nope" }), []string{"agent_id", "agt_nope"}},
		{"revoked agent", mod(func(r *protocol.CreateConnectionRequest) { r.AgentID = revoked }), []string{"agent_id", "revoked"}},
		{"agent never connected", mod(func(r *protocol.CreateConnectionRequest) { r.AgentID = never }), []string{"secret.backend", "never connected"}},
		{"backend the agent lacks", mod(func(r *protocol.CreateConnectionRequest) { r.Secret.Backend = "aws" }), []string{`secret.backend "aws"`, "it has: file"}},
		{"several backends", mod(func(r *protocol.CreateConnectionRequest) { r.AgentID = multi.id }), []string{"secret.backend is required", "aws, azure"}},
		{"no password key", mod(func(r *protocol.CreateConnectionRequest) { r.Secret.PasswordKey = "" }), []string{"secret.password_key is required"}},
		{"azure fields on file", mod(func(r *protocol.CreateConnectionRequest) { r.Secret.VaultName = "kv" }), []string{"secret.vault_name"}},
		{"bad scope", mod(func(r *protocol.CreateConnectionRequest) { r.RequiredScopes = []string{"repo", "Not A Scope"} }), []string{"required_scopes", "Not A Scope"}},
		{"bad organization", mod(func(r *protocol.CreateConnectionRequest) { r.Organization = "acme/inc" }), []string{"organization", "acme/inc"}},
		{"short password", mod(func(r *protocol.CreateConnectionRequest) { r.Password = "short" }), []string{"password is too short"}},
		{"password with a newline", mod(func(r *protocol.CreateConnectionRequest) { r.Password = "long enough\n" }), []string{"control character"}},
		{"long password", mod(func(r *protocol.CreateConnectionRequest) { r.Password = strings.Repeat("p", 73) }), []string{"at most 72"}},
		{"unknown field", `{"name":"x","kind":"ghes","github_url":"https://g.example","agent_id":"` + k.id + `","secret":{"secret_name":"s","password_key":"t"},"colour":"red"}`, []string{`unknown field "colour"`}},
		{"not json", `{"name":`, []string{"not valid"}},
		{"empty", ``, []string{"empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := connError(t, c, "POST", "/api/v1/connections", tc.body, "", http.StatusBadRequest, protocol.CodeInvalidParams, tc.want...)
			if strings.Contains(e.Message, connCanary) {
				t.Errorf("the message repeats the secret: %s", e.Message)
			}
		})
	}
	var list protocol.ConnectionList
	connOK(t, c, "GET", "/api/v1/connections", nil, "", http.StatusOK, &list)
	if len(list.Connections) != 0 {
		t.Errorf("invalid requests saved %d connections", len(list.Connections))
	}
	connNoLeak(t, c, connCanary)
}

// TestConnectionSecretValuesRefused: a connection holds references; a
// request that carries a value is refused with a message that says what to
// do, and the value goes nowhere.
func TestConnectionSecretValuesRefused(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, _ := connAgent(c, "vm-1", nil)
	saved := connCreate(t, c, connRequest("saved", k.id))
	secret := func(extra string) string {
		return `{"name":"x","kind":"ghes","github_url":"https://git.example.com","agent_id":"` + k.id +
			`","secret":{"secret_name":"ci/github","password_key":"token",` + extra + `}}`
	}
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"secret.token", secret(`"token":"` + connCanary + `"`), []string{"secret.token", "references", "password_key"}},
		{"secret.password", secret(`"password":"` + connCanary + `"`), []string{"secret.password", "never their values"}},
		{"secret.value", secret(`"value":"` + connCanary + `"`), []string{"secret.value"}},
		{"secret.secret_value", secret(`"secret_value":"` + connCanary + `"`), []string{"secret.secret_value"}},
		{"secret.Token", secret(`"Token":"` + connCanary + `"`), []string{"secret.Token"}},
		{"secret.username", secret(`"username":"octo-bot"`), []string{"secret.username", "username_key"}},
		{"secret.pat as an object", secret(`"pat":{"v":"` + connCanary + `"}`), []string{"secret.pat"}},
		{"top-level token", `{"name":"x","token":"` + connCanary + `"}`, []string{"token:", "references"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, route := range []struct{ method, path string }{
				{"POST", "/api/v1/connections"}, {"POST", "/api/v1/connections:test"}, {"PUT", "/api/v1/connections/" + saved.ID},
			} {
				r := connCall(t, c, route.method, route.path, tc.body, "")
				e := checkAPIError(t, route.method+" "+route.path, r.status, r.header, r.body, http.StatusBadRequest, protocol.CodeInvalidParams, tc.want...)
				if bytes.Contains(r.body, []byte(connCanary)) || strings.Contains(e.Message, "unknown field") {
					t.Errorf("%s %s: %s", route.method, route.path, r.body)
				}
			}
		})
	}
	connNoLeak(t, c, connCanary)
}

func TestConnectionListAndGet(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k1, _ := connAgent(c, "vm-1", nil)
	k2, _ := connAgent(c, "vm-2", nil)
	open := connCreate(t, c, connRequest("zeta", k1.id))
	req := connRequest("Alpha", k2.id)
	req.Password = connPassword
	locked := connCreate(t, c, req)
	if !locked.Protected || locked.Locked || locked.Secret == nil {
		t.Errorf("the creator sees %+v, want the whole protected connection", locked)
	}
	for _, r := range [][]byte{connCall(t, c, "GET", "/api/v1/connections", nil, "").body} {
		if bytes.Contains(r, []byte(connPassword)) || bytes.Contains(r, []byte("$2a$")) {
			t.Errorf("the answer holds the password or its hash: %s", r)
		}
	}

	var list protocol.ConnectionList
	connOK(t, c, "GET", "/api/v1/connections", nil, "", http.StatusOK, &list)
	if len(list.Connections) != 2 || list.Connections[0].Name != "Alpha" || list.Connections[1].Name != "zeta" {
		t.Fatalf("list = %+v, want Alpha and zeta, by name", list)
	}
	l := list.Connections[0]
	if !l.Locked || !l.Protected || l.GitHubURL != "" || l.Secret != nil || l.ID != locked.ID || l.AgentID != k2.id {
		t.Errorf("a protected connection is listed as %+v, want its identity only", l)
	}
	if o := list.Connections[1]; o.Locked || o.Secret == nil || o.GitHubURL == "" {
		t.Errorf("an open connection is listed as %+v", o)
	}
	for _, tc := range []struct{ query, want string }{
		{"?name=ALPHA", "Alpha"}, {"?name=nope", ""}, {"?agent_id=" + k1.id, "zeta"}, {"?agent_id=" + k1.id + "&name=alpha", ""},
	} {
		connOK(t, c, "GET", "/api/v1/connections"+tc.query, nil, "", http.StatusOK, &list)
		var names []string
		for _, v := range list.Connections {
			names = append(names, v.Name)
		}
		if strings.Join(names, ",") != tc.want {
			t.Errorf("GET /api/v1/connections%s = %v, want %s", tc.query, names, tc.want)
		}
	}

	connError(t, c, "GET", "/api/v1/connections/"+locked.ID, nil, "", http.StatusForbidden, protocol.CodePasswordRequired, protocol.PasswordHeader, "Alpha")
	connError(t, c, "GET", "/api/v1/connections/"+locked.ID, nil, "wrong password", http.StatusForbidden, protocol.CodePasswordInvalid, "wrong")
	var v protocol.ConnectionView
	connOK(t, c, "GET", "/api/v1/connections/"+locked.ID, nil, connPassword, http.StatusOK, &v)
	if v.Locked || v.Secret == nil || v.GitHubURL != "https://git.example.com" || !v.Protected {
		t.Errorf("with its password: %+v", v)
	}
	// An open connection ignores a password.
	connOK(t, c, "GET", "/api/v1/connections/"+open.ID, nil, "anything at all", http.StatusOK, nil)
	connError(t, c, "GET", "/api/v1/connections/con_nope", nil, "", http.StatusNotFound, protocol.CodeNotFound)
	connNoLeak(t, c, connPassword)
}

// TestConnectionPasswordEverywhere: every route that reads, changes, tests
// or deletes a protected connection refuses a missing or wrong password.
func TestConnectionPasswordEverywhere(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, a := connAgent(c, "vm-1", nil)
	req := connRequest("locked", k.id)
	req.Password = connPassword
	v := connCreate(t, c, req)
	routes := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/connections/" + v.ID, nil},
		{"PUT", "/api/v1/connections/" + v.ID, protocol.UpdateConnectionRequest{Name: new(string)}},
		{"PUT", "/api/v1/connections/" + v.ID, protocol.UpdateConnectionRequest{RemovePassword: true}},
		{"DELETE", "/api/v1/connections/" + v.ID, nil},
		{"POST", "/api/v1/connections/" + v.ID + "/test", nil},
		{"GET", "/api/v1/connections/" + v.ID + "/organizations", nil},
	}
	for _, r := range routes {
		connError(t, c, r.method, r.path, r.body, "", http.StatusForbidden, protocol.CodePasswordRequired)
	}
	for i, r := range routes[:4] {
		// Four wrong attempts: still under the limit.
		connError(t, c, r.method, r.path, r.body, fmt.Sprintf("wrong password %d", i), http.StatusForbidden, protocol.CodePasswordInvalid)
	}
	// The right password resets the count; nothing was sent to the agent.
	connOK(t, c, "GET", "/api/v1/connections/"+v.ID, nil, connPassword, http.StatusOK, nil)
	for _, r := range routes[4:] {
		connError(t, c, r.method, r.path, r.body, "wrong password", http.StatusForbidden, protocol.CodePasswordInvalid)
	}
	a.expectNothing(100 * time.Millisecond)
	connOK(t, c, "GET", "/api/v1/connections/"+v.ID, nil, connPassword, http.StatusOK, nil)
	if !connLogsHave(c, "connection password refused", map[string]string{"connection_id": v.ID, "connection": "locked"}) {
		t.Errorf("no log line for a refused password")
	}
	connNoLeak(t, c, connPassword, "wrong password")
}

func TestConnectionPasswordRateLimit(t *testing.T) {
	t.Parallel()
	clock := &connClock{}
	c := newConnCP(t, func(o *Options) { o.Now = clock.now })
	k, _ := connAgent(c, "vm-1", nil)
	req := connRequest("locked", k.id)
	req.Password = connPassword
	v := connCreate(t, c, req)
	other := connRequest("other", k.id)
	other.Password = connPassword
	v2 := connCreate(t, c, other)
	path := "/api/v1/connections/" + v.ID

	for i := range maxPasswordFailures {
		e := connError(t, c, "GET", path, nil, "guess", http.StatusForbidden, protocol.CodePasswordInvalid)
		if want := fmt.Sprintf("%d more attempts", maxPasswordFailures-1-i); !strings.Contains(e.Message, want) {
			t.Errorf("attempt %d: %q, want it to say %q", i+1, e.Message, want)
		}
	}
	// Now every attempt is refused for a while, the right password too.
	for _, pw := range []string{"guess", connPassword, ""} {
		r := connCall(t, c, "GET", path, nil, pw)
		checkAPIError(t, "GET after the limit", r.status, r.header, r.body, http.StatusTooManyRequests, protocol.CodeTooManyAttempts, "try again in")
		secs, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || secs < 1 || secs > 60 {
			t.Errorf("Retry-After = %q, want 1 to 60 seconds", r.header.Get("Retry-After"))
		}
	}
	// Another connection is not affected.
	connOK(t, c, "GET", "/api/v1/connections/"+v2.ID, nil, connPassword, http.StatusOK, nil)
	// After the window, the right password works again.
	clock.advance(passwordWindow + time.Second)
	connOK(t, c, "GET", path, nil, connPassword, http.StatusOK, nil)
}

func TestConnectionUpdate(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, a := connAgent(c, "vm-1", nil)
	k2, a2 := connAgent(c, "vm-2", nil)
	v := connCreate(t, c, connRequest("prod", k.id))
	path := "/api/v1/connections/" + v.ID
	put := func(body protocol.UpdateConnectionRequest, password string) protocol.ConnectionView {
		t.Helper()
		var out protocol.ConnectionView
		connOK(t, c, "PUT", path, body, password, http.StatusOK, &out)
		return out
	}
	str := func(s string) *string { return &s }

	// Rename; the other fields stay.
	u := put(protocol.UpdateConnectionRequest{Name: str("production")}, "")
	if u.Name != "production" || u.GitHubURL != v.GitHubURL || *u.Secret != *v.Secret || !u.UpdatedAt.After(v.UpdatedAt) && !u.UpdatedAt.Equal(v.UpdatedAt) {
		t.Errorf("after rename: %+v", u)
	}
	if !connLogsHave(c, "connection updated", map[string]string{"connection_id": v.ID, "connection": "production", "changed": "[name]"}) {
		t.Errorf("no log line of the update")
	}

	// An organization must come from the fetched list.
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Organization: str("acme")}, "", http.StatusBadRequest,
		protocol.CodeInvalidParams, "fetch the organizations", "/organizations")
	orgs := connFetchOrgs(t, c, a, v.ID, "", "acme", "Platform-Team")
	if len(orgs.Organizations) != 2 || orgs.Organizations[1].Login != "Platform-Team" || orgs.Job.ConnectionID != v.ID || orgs.FetchedAt.IsZero() {
		t.Errorf("organizations = %+v", orgs)
	}
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Organization: str("other")}, "", http.StatusBadRequest,
		protocol.CodeInvalidParams, `"other" is not one`, "acme, Platform-Team")
	u = put(protocol.UpdateConnectionRequest{Organization: str("platform-team")}, "")
	if u.Organization != "Platform-Team" || u.OrganizationsFetchedAt == nil {
		t.Errorf("organization = %q (fetched %v), want GitHub's spelling Platform-Team", u.Organization, u.OrganizationsFetchedAt)
	}

	// A test is kept until the configuration changes.
	wait := connAsync(c, "POST", path+"/test", nil, "")
	connAnswer(t, a, protocol.KindTestConnection, func(j *protocol.Job) *protocol.Message {
		if j.Params.Organization != "Platform-Team" {
			t.Errorf("the test's organization = %q", j.Params.Organization)
		}
		return connTestResult(j, "octo-bot", "acme", "Platform-Team")
	})
	if r := wait(t); r.status != http.StatusOK {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	u = put(protocol.UpdateConnectionRequest{Active: new(bool)}, "")
	if u.LastTest == nil || u.Active || u.OrganizationsFetchedAt == nil {
		t.Errorf("after deactivating: %+v; the test and organizations stay", u)
	}
	u = put(protocol.UpdateConnectionRequest{RequiredScopes: &[]string{"repo"}}, "")
	if u.LastTest != nil || u.OrganizationsFetchedAt == nil || u.Organization != "Platform-Team" {
		t.Errorf("after new scopes: %+v; the test goes, the organizations stay", u)
	}

	// Another agent: its backend is checked; the fetched organizations go.
	u = put(protocol.UpdateConnectionRequest{AgentID: &k2.id}, "")
	if u.AgentID != k2.id || u.OrganizationsFetchedAt != nil || u.Organization != "Platform-Team" {
		t.Errorf("after moving to agent 2: %+v", u)
	}
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Secret: &protocol.SecretRef{Backend: "aws", SecretName: "s", PasswordKey: "p"}}, "",
		http.StatusBadRequest, protocol.CodeInvalidParams, `secret.backend "aws"`)
	u = put(protocol.UpdateConnectionRequest{Secret: &protocol.SecretRef{SecretName: "ci/other", PasswordKey: "pat"}}, "")
	if u.Secret.Backend != protocol.BackendFile || u.Secret.SecretName != "ci/other" || u.Secret.UsernameKey != "" {
		t.Errorf("after a new secret: %+v", u.Secret)
	}
	// A new URL is checked against the kind.
	kind := protocol.GitHubCloud
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{GitHubURL: str("https://github.com")}, "", http.StatusBadRequest,
		protocol.CodeInvalidParams, "github_url", "github_cloud")
	u = put(protocol.UpdateConnectionRequest{Kind: &kind, GitHubURL: str("https://acme.ghe.com/")}, "")
	if u.Kind != kind || u.GitHubURL != "https://acme.ghe.com" {
		t.Errorf("after moving to the cloud: %+v", u)
	}

	// The name is unique.
	connCreate(t, c, connRequest("taken", k.id))
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Name: str("TAKEN")}, "", http.StatusConflict, protocol.CodeConflict, "already exists")

	// Passwords: set, change (needs the current one), remove.
	pw2 := "a second password"
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Password: str("short")}, "", http.StatusBadRequest, protocol.CodeInvalidParams, "too short")
	u = put(protocol.UpdateConnectionRequest{Password: str(connPassword)}, "")
	if !u.Protected {
		t.Errorf("after setting a password: %+v", u)
	}
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Password: &pw2}, "", http.StatusForbidden, protocol.CodePasswordRequired)
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Password: &pw2}, pw2, http.StatusForbidden, protocol.CodePasswordInvalid)
	connError(t, c, "PUT", path, protocol.UpdateConnectionRequest{Password: &pw2, RemovePassword: true}, connPassword,
		http.StatusBadRequest, protocol.CodeInvalidParams, "not both")
	put(protocol.UpdateConnectionRequest{Password: &pw2}, connPassword)
	connError(t, c, "GET", path, nil, connPassword, http.StatusForbidden, protocol.CodePasswordInvalid)
	connOK(t, c, "GET", path, nil, pw2, http.StatusOK, nil)
	u = put(protocol.UpdateConnectionRequest{RemovePassword: true}, pw2)
	if u.Protected {
		t.Errorf("after removing the password: %+v", u)
	}
	connOK(t, c, "GET", path, nil, "", http.StatusOK, nil)

	// An empty change changes nothing.
	before := put(protocol.UpdateConnectionRequest{}, "")
	if !before.UpdatedAt.Equal(u.UpdatedAt) {
		t.Errorf("an empty update moved updated_at from %v to %v", u.UpdatedAt, before.UpdatedAt)
	}
	connError(t, c, "PUT", "/api/v1/connections/con_nope", protocol.UpdateConnectionRequest{}, "", http.StatusNotFound, protocol.CodeNotFound)
	a2.expectNothing(50 * time.Millisecond)
	connNoLeak(t, c, connPassword, pw2)
}

func TestConnectionTest(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, a := connAgent(c, "vm-1", nil)
	v := connCreate(t, c, connRequest("prod", k.id))
	path := "/api/v1/connections/" + v.ID + "/test"

	wait := connAsync(c, "POST", path+"?wait=10s", nil, "")
	j := connAnswer(t, a, protocol.KindTestConnection, func(j *protocol.Job) *protocol.Message { return connTestResult(j, "octo-bot", "acme") })
	if j.Params.GitHubURL != "https://git.example.com" || j.Params.GitHubKind != protocol.GitHubEnterpriseServer ||
		j.Params.Secret == nil || *j.Params.Secret != *v.Secret {
		t.Errorf("the job's params = %+v, want the connection's", j.Params)
	}
	if left := time.Until(j.Deadline); left > 11*time.Second || left < 5*time.Second {
		t.Errorf("the job's deadline is in %s, want the wait of 10s", left)
	}
	r := wait(t)
	var ans protocol.ConnectionTestAnswer
	if r.status != http.StatusOK || json.Unmarshal(r.body, &ans) != nil {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	tt := ans.Test
	if tt == nil || !tt.OK || tt.Login != "octo-bot" || tt.TokenType != "classic_pat" || tt.GHESVersion != "3.19.1" ||
		tt.Organizations != 1 || len(tt.MissingScopes) != 1 || tt.JobID != j.JobID || tt.Error != nil {
		t.Errorf("test = %+v", tt)
	}
	if ans.Job.ID != j.JobID || ans.Job.ConnectionID != v.ID || ans.Job.State != protocol.JobSucceeded || ans.Job.Result == nil {
		t.Errorf("job = %+v", ans.Job)
	}
	if ans.Connection == nil || ans.Connection.LastTest == nil || ans.Connection.LastTest.JobID != j.JobID || ans.Connection.OrganizationsFetchedAt == nil {
		t.Errorf("connection after the test = %+v", ans.Connection)
	}
	var got protocol.ConnectionView
	connOK(t, c, "GET", "/api/v1/connections/"+v.ID, nil, "", http.StatusOK, &got)
	if got.LastTest == nil || !got.LastTest.OK || got.LastTest.Login != "octo-bot" {
		t.Errorf("the stored last test = %+v", got.LastTest)
	}
	// The organizations the test found can be picked.
	connOK(t, c, "PUT", "/api/v1/connections/"+v.ID, protocol.UpdateConnectionRequest{Organization: &[]string{"ACME"}[0]}, "", http.StatusOK, nil)
	var jobs protocol.JobList
	c.api("GET", "/api/v1/jobs?agent_id="+k.id, nil, http.StatusOK, &jobs)
	if len(jobs.Jobs) != 1 || jobs.Jobs[0].ConnectionID != v.ID {
		t.Errorf("jobs = %+v, want the test, with its connection", jobs.Jobs)
	}
	for _, msg := range []string{"job queued", "job dispatched", "job finished"} {
		if !connLogsHave(c, msg, map[string]string{"job_id": j.JobID, "connection_id": v.ID}) {
			t.Errorf("the %q log line does not name the connection", msg)
		}
	}
	if !connLogsHave(c, "connection tested", map[string]string{"connection_id": v.ID, "connection": "prod", "job_id": j.JobID, "ok": "true"}) {
		t.Errorf("no log line of the test")
	}

	// A failed test is an outcome, kept too.
	wait = connAsync(c, "POST", path, nil, "")
	j = connAnswer(t, a, protocol.KindTestConnection, func(j *protocol.Job) *protocol.Message {
		return errResult(j.JobID, j.Attempt, protocol.CodeGitHubBadCredentials)
	})
	r = wait(t)
	if r.status != http.StatusOK || json.Unmarshal(r.body, &ans) != nil {
		t.Fatalf("failed test: %d %s", r.status, r.body)
	}
	if ans.Test.OK || ans.Test.Error == nil || ans.Test.Error.Code != protocol.CodeGitHubBadCredentials || ans.Connection.LastTest.JobID != j.JobID {
		t.Errorf("failed test = %+v", ans.Test)
	}
}

// TestConnectionAgentUnavailable: an agent that cannot take the job is
// answered at once, not after the job's timeout.
func TestConnectionAgentUnavailable(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, a := connAgent(c, "vm-1", nil)
	v := connCreate(t, c, connRequest("prod", k.id))
	restricted, _ := connAgent(c, "vm-restricted", func(h *protocol.Hello) { h.Kinds = []protocol.JobKind{protocol.KindResolveCredentials} })
	vr := connCreate(t, c, connRequest("restricted", restricted.id))

	for _, p := range []string{"/test", "/organizations"} {
		method := map[string]string{"/test": "POST", "/organizations": "GET"}[p]
		connError(t, c, method, "/api/v1/connections/"+vr.ID+p, nil, "", http.StatusConflict, protocol.CodeKindNotAllowed, "policy.job_kinds")
	}

	a.drop()
	c.waitOffline(k.id)
	start := time.Now()
	for _, p := range []string{"/test", "/organizations"} {
		method := map[string]string{"/test": "POST", "/organizations": "GET"}[p]
		connError(t, c, method, "/api/v1/connections/"+v.ID+p+"?wait=30s", nil, "", http.StatusConflict, protocol.CodeAgentOffline, k.id, "last seen")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the offline agent was reported after %s, not at once", d)
	}
	unsaved := connRequest("", k.id)
	unsaved.Secret.Backend = protocol.BackendFile
	connError(t, c, "POST", "/api/v1/connections:test", unsaved, "", http.StatusConflict, protocol.CodeAgentOffline)

	c.api("DELETE", "/api/v1/agents/"+k.id, nil, http.StatusOK, nil)
	connError(t, c, "POST", "/api/v1/connections/"+v.ID+"/test", nil, "", http.StatusConflict, protocol.CodeAgentRevoked)
	var jobs protocol.JobList
	c.api("GET", "/api/v1/jobs", nil, http.StatusOK, &jobs)
	if len(jobs.Jobs) != 0 {
		t.Errorf("%d jobs were queued for agents that could not run them", len(jobs.Jobs))
	}
}

func TestConnectionOrganizations(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, a := connAgent(c, "vm-1", nil)
	v := connCreate(t, c, connRequest("prod", k.id))
	path := "/api/v1/connections/" + v.ID + "/organizations"

	orgs := connFetchOrgs(t, c, a, v.ID, "")
	if orgs.Organizations == nil || len(orgs.Organizations) != 0 {
		t.Errorf("no organizations = %#v, want an empty list", orgs.Organizations)
	}
	orgs = connFetchOrgs(t, c, a, v.ID, "", "acme", "tools")
	if len(orgs.Organizations) != 2 || orgs.Organizations[0].Description != "org acme" || orgs.Job.Kind != protocol.KindListOrganizations {
		t.Errorf("organizations = %+v", orgs)
	}
	if !connLogsHave(c, "connection organizations fetched", map[string]string{"connection_id": v.ID, "organizations": "2"}) {
		t.Errorf("no log line of the fetch")
	}

	// A failed fetch answers the job's code; the list fetched before stays.
	wait := connAsync(c, "GET", path, nil, "")
	j := connAnswer(t, a, protocol.KindListOrganizations, func(j *protocol.Job) *protocol.Message {
		return errResult(j.JobID, j.Attempt, protocol.CodeSecretNotFound)
	})
	r := wait(t)
	checkAPIError(t, "failed fetch", r.status, r.header, r.body, http.StatusBadGateway, protocol.CodeSecretNotFound, j.JobID)
	connOK(t, c, "PUT", "/api/v1/connections/"+v.ID, protocol.UpdateConnectionRequest{Organization: &[]string{"tools"}[0]}, "", http.StatusOK, nil)

	// A job the agent does not finish in time: 504 timeout when the wait
	// (the job's timeout) is over.
	start := time.Now()
	wait = connAsync(c, "GET", path+"?wait=1s", nil, "")
	a.accept(a.expectJob())
	r = wait(t)
	checkAPIError(t, "slow fetch", r.status, r.header, r.body, http.StatusGatewayTimeout, protocol.CodeTimeout)
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("the slow fetch was answered after %s, want about 1s", d)
	}
	a.expect(protocol.TypeCancel)
}

// TestConnectionTestUnsaved: the screen tests details before saving them.
func TestConnectionTestUnsaved(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, a := connAgent(c, "vm-1", nil)
	req := connRequest("not saved", k.id)
	req.Password = connPassword // ignored
	wait := connAsync(c, "POST", "/api/v1/connections:test?wait=5s", req, "")
	j := connAnswer(t, a, protocol.KindTestConnection, func(j *protocol.Job) *protocol.Message { return connTestResult(j, "octo-bot", "acme") })
	if j.Params.GitHubURL != "https://git.example.com" || j.Params.Secret.Backend != protocol.BackendFile {
		t.Errorf("params = %+v, want them normalised and the backend filled in", j.Params)
	}
	r := wait(t)
	var ans protocol.ConnectionTestAnswer
	if r.status != http.StatusOK || json.Unmarshal(r.body, &ans) != nil {
		t.Fatalf("unsaved test: %d %s", r.status, r.body)
	}
	if ans.Test == nil || !ans.Test.OK || ans.Connection != nil || ans.Job.ConnectionID != "" || ans.Job.Result.Connection.Organizations[0].Login != "acme" {
		t.Errorf("unsaved test = %s", r.body)
	}
	var list protocol.ConnectionList
	connOK(t, c, "GET", "/api/v1/connections", nil, "", http.StatusOK, &list)
	if len(list.Connections) != 0 {
		t.Errorf("the unsaved test saved %+v", list.Connections)
	}
	// The route is a literal path for the mux: other methods are told so.
	r = connCall(t, c, "GET", "/api/v1/connections:test", nil, "")
	checkAPIError(t, "GET :test", r.status, r.header, r.body, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed)
	if r.header.Get("Allow") != "POST" {
		t.Errorf("Allow = %q, want POST", r.header.Get("Allow"))
	}
	// Validated like a creation (but the name is not needed).
	bad := connRequest("", k.id)
	bad.GitHubURL = "ftp://git.example.com"
	connError(t, c, "POST", "/api/v1/connections:test", bad, "", http.StatusBadRequest, protocol.CodeInvalidParams, "github_url")
	connNoLeak(t, c, connPassword)
}

func TestConnectionDelete(t *testing.T) {
	t.Parallel()
	c := newConnCP(t)
	k, a := connAgent(c, "vm-1", nil)
	req := connRequest("prod", k.id)
	req.Password = connPassword
	v := connCreate(t, c, req)
	connFetchOrgs(t, c, a, v.ID, connPassword, "acme")

	r := connCall(t, c, "DELETE", "/api/v1/connections/"+v.ID, nil, connPassword)
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	connError(t, c, "GET", "/api/v1/connections/"+v.ID, nil, connPassword, http.StatusNotFound, protocol.CodeNotFound)
	connError(t, c, "DELETE", "/api/v1/connections/"+v.ID, nil, connPassword, http.StatusNotFound, protocol.CodeNotFound)
	if !connLogsHave(c, "connection deleted", map[string]string{"connection_id": v.ID, "connection": "prod"}) {
		t.Errorf("no log line of the deletion")
	}
	// Its jobs stay; its name is free.
	var jobs protocol.JobList
	c.api("GET", "/api/v1/jobs", nil, http.StatusOK, &jobs)
	if len(jobs.Jobs) != 1 || jobs.Jobs[0].ConnectionID != v.ID {
		t.Errorf("jobs after the deletion = %+v", jobs.Jobs)
	}
	connCreate(t, c, connRequest("PROD", k.id))
}
