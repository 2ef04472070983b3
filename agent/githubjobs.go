package agent

import (
	"context"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/redact"
	"github.com/orchestrator/orchestrator/protocol"
)

// githubTarget is what a GitHub job needs once the policy allowed it: where
// to call and with which token.
type githubTarget struct {
	ep       github.Endpoint
	token    redact.Secret
	secretMS int64
}

// githubTarget checks a GitHub job against the policy and only then reads
// its secret: the reference must be allowed (CheckSecret), the URL is
// normalised to the API's origin, and the policy must allow sending the
// secret to exactly that origin (CheckHost), before Resolve runs.
func (a *Agent) githubTarget(ctx context.Context, log *zap.Logger, j *protocol.Job) (githubTarget, error) {
	p := j.Params
	if p.Secret == nil {
		return githubTarget{}, protocol.Errorf(protocol.CodeInvalidParams, "params.secret is required for %s", j.Kind)
	}
	ref := *p.Secret
	if e := a.policy.CheckSecret(ref); e != nil {
		return githubTarget{}, e
	}
	ep, err := github.Normalize(p.GitHubKind, p.GitHubURL, a.policy.HTTPAllowed)
	if err != nil {
		return githubTarget{}, err
	}
	if e := a.policy.CheckHost(ref, ep.APIURL); e != nil {
		return githubTarget{}, e
	}
	if p.Organization != "" {
		if err := github.CheckOrganization(p.Organization); err != nil {
			return githubTarget{}, err
		}
	}
	log.Debug("github job allowed", zap.String("api_url", ep.APIURL))
	start := time.Now()
	creds, err := a.secrets.Resolve(ctx, ref)
	if err != nil {
		return githubTarget{}, err
	}
	if creds.Password.Empty() {
		return githubTarget{}, protocol.Errorf(protocol.CodeSecretMalformed, "the secret %s holds an empty token", ref)
	}
	return githubTarget{ep: ep, token: creds.Password, secretMS: time.Since(start).Milliseconds()}, nil
}

// testConnection checks a GitHub connection with the referenced token and
// reports what GitHub says (never the token).
func (a *Agent) testConnection(ctx context.Context, log *zap.Logger, j *protocol.Job) (*protocol.Output, error) {
	t, err := a.githubTarget(ctx, log, j)
	if err != nil {
		return nil, err
	}
	out, err := a.github.TestConnection(ctx, log, t.ep, t.token, github.TestOptions{
		RequiredScopes: j.Params.RequiredScopes, Organization: j.Params.Organization,
	})
	if err != nil {
		return nil, err
	}
	out.Timings["secret"] = t.secretMS
	return &protocol.Output{Connection: out}, nil
}

// listOrganizations lists the organizations the referenced token's account
// can see.
func (a *Agent) listOrganizations(ctx context.Context, log *zap.Logger, j *protocol.Job) (*protocol.Output, error) {
	t, err := a.githubTarget(ctx, log, j)
	if err != nil {
		return nil, err
	}
	out, err := a.github.ListOrganizations(ctx, log, t.ep, t.token)
	if err != nil {
		return nil, err
	}
	return &protocol.Output{Organizations: out}, nil
}

// githubHost is the host[:port] of a job's GitHub URL for its log lines
// (the default port left out), or "" when there is none or it does not
// parse. It never holds user info: ParseOrigin refuses URLs with it.
func githubHost(raw string) string {
	if raw == "" {
		return ""
	}
	o, err := policy.ParseOrigin(raw)
	if err != nil {
		return ""
	}
	s := o.String()
	return s[strings.Index(s, "://")+3:]
}
