package github

import (
	"context"
	"errors"
	"net/http"

	gh "github.com/google/go-github/v62/github"
	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/protocol"
)

// MetaResult is what a GitHub API's /meta answered: for `agent doctor`.
type MetaResult struct {
	// Endpoint is where the API answered.
	Endpoint Endpoint
	// Version is the GitHub Enterprise Server version, "" for the cloud.
	Version string
}

// Meta checks that the GitHub API at host (an entry of the policy's
// hosts: an origin such as https://git.example.com or
// https://api.github.com) answers GET /meta, without credentials, through
// the service's proxy and CA settings. GitHub's own hosts are taken as
// github_cloud; any other host as a GitHub Enterprise Server (API under
// /api/v3), and, if nothing answers there, as a GitHub-compatible API at
// its root. Errors are *protocol.Error values with github_* codes whose
// messages name the fix (TLS, proxy, DNS), or ctx.Err().
func (s *Service) Meta(ctx context.Context, host string, allowHTTP func(hostPort string) bool) (MetaResult, error) {
	kinds := []protocol.GitHubKind{protocol.GitHubEnterpriseServer, protocol.GitHubCloud}
	var firstErr error
	for i, kind := range kinds {
		ep, err := Normalize(kind, host, allowHTTP)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		res, err := s.meta(ctx, ep)
		var er *gh.ErrorResponse
		if err != nil && kind == protocol.GitHubEnterpriseServer && i+1 < len(kinds) &&
			errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotFound {
			firstErr = err
			continue // not under /api/v3: try the root
		}
		if err != nil {
			return MetaResult{}, s.metaError(ctx, ep, err)
		}
		return res, nil
	}
	if firstErr == nil {
		firstErr = protocol.Errorf(protocol.CodeInvalidParams, "%s is not a GitHub URL", host)
	}
	var pe *protocol.Error
	if errors.As(firstErr, &pe) {
		return MetaResult{}, pe
	}
	return MetaResult{}, protocol.Errorf(protocol.CodeGitHubNotFound,
		"no GitHub API answered /meta at %s or %s/api/v3; check the host in policy.secrets[].hosts", host, host)
}

func (s *Service) meta(ctx context.Context, ep Endpoint) (MetaResult, error) {
	c, err := s.newClient(ep, nil, zap.NewNop())
	if err != nil {
		return MetaResult{}, protocol.Errorf(protocol.CodeInvalidParams, "the GitHub API URL %s cannot be used: %v", ep.APIURL, err)
	}
	req, err := c.NewRequest(http.MethodGet, "meta", nil)
	if err != nil {
		return MetaResult{}, err
	}
	var meta struct {
		InstalledVersion string `json:"installed_version"`
		VPA              *bool  `json:"verifiable_password_authentication"`
	}
	resp, err := c.Do(ctx, req, &meta)
	if err != nil {
		return MetaResult{}, err
	}
	if meta.VPA == nil {
		return MetaResult{}, protocol.Errorf(protocol.CodeGitHubNotFound,
			"%smeta answered HTTP %d but not with GitHub's JSON; check the host in policy.secrets[].hosts", ep.APIURL, resp.StatusCode)
	}
	v := resp.Header.Get(headerGHESVersion)
	if !validVersion(v) {
		v = ""
	}
	if v == "" && validVersion(meta.InstalledVersion) {
		v = meta.InstalledVersion
	}
	return MetaResult{Endpoint: ep, Version: v}, nil
}

// metaError classifies a failed /meta call like a job's call.
func (s *Service) metaError(ctx context.Context, ep Endpoint, err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe
	}
	ss := &session{s: s, ep: ep, log: zap.NewNop(), timings: map[string]int64{}}
	if c, cerr := s.newClient(ep, nil, ss.log); cerr == nil {
		ss.c = c
	}
	return ss.classify(ctx, err)
}
