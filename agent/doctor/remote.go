package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/agent"
	"github.com/orchestrator/orchestrator/agent/github"
	"github.com/orchestrator/orchestrator/agent/policy"
	"github.com/orchestrator/orchestrator/agent/secrets"
	"github.com/orchestrator/orchestrator/protocol"
)

// The checks past the network: the session, the clock, the secret
// backends and GitHub.

// Clock skew bounds: the agent corrects job deadlines for any skew, but AWS
// refuses requests signed more than 5 minutes off, and tokens (Azure,
// GitHub Apps) are checked against the clock too.
const (
	skewWarn = 30 * time.Second
	skewFail = 5 * time.Minute
)

func (d *doctor) checkSession(ctx context.Context) {
	switch {
	case d.identity == nil:
		d.add("websocket", Skip, "no identity to authenticate with (see identity)", "")
		return
	case d.running != nil && d.running.report.Connected:
		r := d.running.report
		d.add("websocket", OK, fmt.Sprintf("the running agent's session %s is up: the control plane accepts this agent's key", r.SessionID), "")
		return
	case !d.reachable:
		d.add("websocket", Skip, "the control plane cannot be reached (see above)", "")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*d.o.Timeout)
	defer cancel()
	start := time.Now()
	res, err := agent.Probe(ctx, agent.Options{Config: d.cfg, Identity: *d.identity, Version: d.o.Version,
		Logger: zap.NewNop(), Secrets: secrets.NewSet()})
	if err != nil {
		var fe *agent.FatalError
		var he *agent.HandshakeError
		fix := "see the control plane's log for this agent id"
		switch {
		case errors.As(err, &fe) && fe.Code == protocol.CloseRevoked:
			fix = "this agent was revoked: register a new one (POST /api/v1/agents) and enroll with its token"
		case errors.As(err, &fe):
			fix = "enroll the agent again with a new token (POST /api/v1/agents/{id}/enrollment-token, then agent enroll --force)"
		case errors.As(err, &he) && he.Status == http.StatusNotFound:
			fix = "nothing serves the agent endpoint " + protocol.ConnectPath + " there: check that control_plane is the control plane's URL, and that a proxy or load balancer passes websockets"
		case errors.As(err, &he):
			fix = "a proxy or load balancer may not pass websocket upgrades: let " + protocol.ConnectPath + " through with Upgrade and Connection headers"
		}
		d.add("websocket", Fail, "the handshake failed: "+errText(err), fix)
		return
	}
	d.skew = &skewReading{skew: res.Skew, from: "the control plane's clock in welcome"}
	d.add("websocket", OK, fmt.Sprintf("authenticated as %s in %s (probe session %s, closed)", d.identity.AgentID,
		time.Since(start).Round(time.Millisecond), res.SessionID), "")
}

func (d *doctor) checkClock() {
	if d.skew == nil {
		d.add("clock", Skip, "the control plane's clock could not be read (see above)", "")
		return
	}
	s := d.skew.skew
	abs := s
	if abs < 0 {
		abs = -abs
	}
	dir := "behind"
	if s < 0 {
		dir = "ahead of"
	}
	detail := fmt.Sprintf("this machine's clock is %s %s the control plane's (from %s)", abs.Round(time.Second), dir, d.skew.from)
	fix := "turn on time synchronization: timedatectl set-ntp true (or chrony/ntpd); on Windows: w32tm /resync"
	switch {
	case abs > skewFail:
		d.add("clock", Fail, detail+"; AWS and Azure refuse requests and tokens this far off", fix)
	case abs > skewWarn:
		d.add("clock", Warn, detail+"; job deadlines are corrected, but clouds refuse requests beyond 5 minutes", fix)
	default:
		d.add("clock", OK, fmt.Sprintf("within %s of the control plane's", max(abs.Round(time.Second), time.Second)), "")
	}
}

// isPattern reports whether a policy name is a pattern rather than a name.
func isPattern(s string) bool { return strings.ContainsAny(s, "*?[\\") }

// secretNames lists the exact names of a backend's policy rules; patterns
// lists the rest.
func secretNames(rules []policy.SecretRule, backend string) (names, patterns []string) {
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Backend != backend {
			continue
		}
		n := r.SecretName
		if backend == protocol.BackendAzure {
			if r.VaultName == "" || r.SecretName == "" || isPattern(r.VaultName) || isPattern(r.SecretName) {
				patterns = append(patterns, r.VaultName+"/"+r.SecretName)
				continue
			}
			n = r.VaultName + "/" + r.SecretName
		} else if isPattern(n) {
			patterns = append(patterns, n)
			continue
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return names, patterns
}

func (d *doctor) checkSecrets(ctx context.Context) {
	s := d.cfg.Secrets
	if s.File == nil && s.AWS == nil && s.Azure == nil {
		d.add("secrets", Warn, "no secret backend is configured", "configure secrets.file, secrets.aws or secrets.azure")
		return
	}
	if s.File != nil {
		d.checkFile(s.File.Path)
	}
	if s.AWS != nil {
		d.checkAWS(ctx, *s.AWS)
	}
	if s.Azure != nil {
		d.checkAzure(ctx, *s.Azure)
	}
}

func (d *doctor) checkFile(p string) {
	const check = "secrets file"
	f, err := secrets.NewFile(p)
	if err != nil {
		d.add(check, Fail, err.Error(), "fix the secrets file or secrets.file.path")
		return
	}
	names, _ := secretNames(d.cfg.Policy.Secrets, protocol.BackendFile)
	var missing []string
	for _, n := range names {
		if ok, err := f.Has(n); err != nil || !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		d.add(check, Warn, fmt.Sprintf("%s parses, but holds no secret named %s, which the policy allows", f.Path(), strings.Join(missing, ", ")),
			"add the secret to the file, or correct the name in policy.secrets")
		return
	}
	d.add(check, OK, fmt.Sprintf("%s parses (mode ok)%s", f.Path(), namesText(names, "holds")), "")
}

func namesText(names []string, verb string) string {
	if len(names) == 0 {
		return ""
	}
	return "; " + verb + " " + strings.Join(names, ", ")
}

func (d *doctor) checkAWS(ctx context.Context, c secrets.AWSConfig) {
	const check = "secrets aws"
	b, err := secrets.NewAWS(ctx, c, d.o.AWS)
	if err != nil {
		d.add(check, Fail, err.Error(), "fix secrets.aws")
		return
	}
	names, patterns := secretNames(d.cfg.Policy.Secrets, protocol.BackendAWS)
	if len(names) == 0 {
		d.add(check, Warn, "configured, but the policy names no exact AWS secret to check"+patternText(patterns),
			"nothing, or name a secret exactly in policy.secrets so that agent doctor can check the permissions on it")
		return
	}
	var ok []string
	for _, n := range names {
		sctx, cancel := d.step(ctx)
		_, err := b.Describe(sctx, n)
		cancel()
		if err != nil {
			var pe *protocol.Error
			if errors.As(err, &pe) && pe.Code == protocol.CodeSecretAccessDenied {
				// Jobs need only GetSecretValue, which the doctor never calls (it
				// would read the value): a denied DescribeSecret does not block.
				d.add(check, Warn, fmt.Sprintf("%s: %s", n, errText(err)),
					"grant the agent's AWS identity secretsmanager:DescribeSecret on the secret so that agent doctor can check it; jobs need secretsmanager:GetSecretValue (deploy/aws-iam-policy.json)")
				return
			}
			d.add(check, Fail, fmt.Sprintf("%s: %s", n, errText(err)), "see the message")
			return
		}
		ok = append(ok, n)
	}
	d.add(check, OK, fmt.Sprintf("region %s: the agent's AWS identity can describe %s (no value read)%s", c.Region, strings.Join(ok, ", "), patternText(patterns)), "")
}

func (d *doctor) checkAzure(ctx context.Context, c secrets.AzureConfig) {
	const check = "secrets azure"
	b, err := secrets.NewAzure(c, d.o.Azure)
	if err != nil {
		d.add(check, Fail, err.Error(), "fix secrets.azure")
		return
	}
	names, patterns := secretNames(d.cfg.Policy.Secrets, protocol.BackendAzure)
	if len(names) == 0 {
		d.add(check, Warn, "configured, but the policy names no exact vault and secret to check"+patternText(patterns),
			"nothing, or name a vault and a secret exactly in policy.secrets so that agent doctor can check the permissions on them")
		return
	}
	var ok []string
	for _, n := range names {
		vault, secret := path.Split(n)
		sctx, cancel := d.step(ctx)
		_, err := b.Properties(sctx, strings.TrimSuffix(vault, "/"), secret)
		cancel()
		if err != nil {
			fix := "see the message"
			var pe *protocol.Error
			if errors.As(err, &pe) && pe.Code == protocol.CodeSecretAccessDenied {
				fix = "assign the agent's identity the Key Vault Secrets User role on the vault (deploy/azure-role-assignment.sh)"
			}
			d.add(check, Fail, fmt.Sprintf("%s: %s", n, errText(err)), fix)
			return
		}
		ok = append(ok, n)
	}
	d.add(check, OK, fmt.Sprintf("the agent's Azure identity can see %s (properties only, no value read)%s", strings.Join(ok, ", "), patternText(patterns)), "")
}

func patternText(patterns []string) string {
	if len(patterns) == 0 {
		return ""
	}
	return "; not checked (patterns): " + strings.Join(patterns, ", ")
}

func (d *doctor) checkGitHub(ctx context.Context) {
	pol, err := policy.New(d.cfg.Policy)
	if err != nil {
		d.add("github", Fail, err.Error(), "fix policy")
		return
	}
	seen := map[string]bool{}
	var hosts []string
	for _, r := range d.cfg.Policy.Secrets {
		for _, h := range r.Hosts {
			if !seen[h] {
				seen[h] = true
				hosts = append(hosts, h)
			}
		}
	}
	sort.Strings(hosts)
	if len(hosts) == 0 {
		d.add("github", Skip, "the policy allows no GitHub host (policy.secrets[].hosts)", "")
		return
	}
	gh, err := github.New(github.Options{Config: d.cfg.GitHub, UserAgent: "orchestrator-agent-doctor"})
	if err != nil {
		d.add("github", Fail, err.Error(), "fix the github section")
		return
	}
	defer gh.Close()
	for _, h := range hosts {
		check := "github " + h
		hctx, cancel := d.step(ctx)
		res, err := gh.Meta(hctx, h, pol.HTTPAllowed)
		cancel()
		if err != nil {
			fix := "see the message"
			var pe *protocol.Error
			if errors.As(err, &pe) {
				switch pe.Code {
				case protocol.CodeGitHubTLS:
					fix = "put the CA that issued GitHub's certificate (or your TLS-inspecting proxy's) in github.ca_file"
				case protocol.CodeGitHubUnreachable:
					fix = "check DNS, the firewall and github.proxy (or HTTPS_PROXY) for this host"
				}
			}
			d.add(check, Fail, errText(err), fix)
			continue
		}
		what := "GitHub"
		if res.Version != "" {
			what = "GitHub Enterprise Server " + res.Version
		}
		d.add(check, OK, fmt.Sprintf("%s answers %smeta", what, res.Endpoint.APIURL), "")
	}
}
