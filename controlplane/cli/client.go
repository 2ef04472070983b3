package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/orchestrator/orchestrator/protocol"
)

// client calls a control plane's HTTP API v1.
type client struct {
	base  string // "https://cp.example.com", no trailing slash
	token string
	hc    *http.Client
	// password is the connection password sent in protocol.PasswordHeader
	// when set.
	password string
}

// apiError is an error answer of the API.
type apiError struct {
	status int
	e      protocol.Error
}

func (e *apiError) Error() string { return fmt.Sprintf("%s: %s", e.e.Code, e.e.Message) }

// do sends a request and decodes a 2xx answer into out (when not nil). A
// JSON error answer is an *apiError; anything else is a plain error.
func (c *client) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.password != "" {
		req.Header.Set(protocol.PasswordHeader, c.password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, c.base+path, unwrapURL(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var ae protocol.APIError
		if json.Unmarshal(raw, &ae) == nil && ae.Error.Code != "" {
			return resp.StatusCode, &apiError{status: resp.StatusCode, e: ae.Error}
		}
		return resp.StatusCode, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, truncate(strings.TrimSpace(string(raw)), 200))
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: the answer is not what this client reads: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// unwrapURL drops *url.Error's repetition of the method and URL.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// resolveAgent turns a name or an id into an agent id.
func (c *client) resolveAgent(ctx context.Context, nameOrID string) (string, error) {
	if strings.HasPrefix(nameOrID, "agt_") {
		return nameOrID, nil
	}
	var list protocol.AgentList
	if _, err := c.do(ctx, "GET", "/api/v1/agents", nil, &list); err != nil {
		return "", err
	}
	for _, a := range list.Agents {
		if a.Name == nameOrID {
			return a.ID, nil
		}
	}
	return "", fmt.Errorf("no agent named %q (controlplane agents list shows them)", nameOrID)
}

// resolveConnection turns a name or an id into a connection id.
func (c *client) resolveConnection(ctx context.Context, nameOrID string) (string, error) {
	if strings.HasPrefix(nameOrID, "con_") {
		return nameOrID, nil
	}
	var list protocol.ConnectionList
	if _, err := c.do(ctx, "GET", "/api/v1/connections?name="+url.QueryEscape(nameOrID), nil, &list); err != nil {
		return "", err
	}
	if len(list.Connections) == 0 {
		return "", fmt.Errorf("no connection named %q (controlplane connections list shows them)", nameOrID)
	}
	return list.Connections[0].ID, nil
}
