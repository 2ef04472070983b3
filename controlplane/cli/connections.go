package cli

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

// connFlags are the flags that describe a connection.
type connFlags struct {
	name, kind, url, agent, organization string
	scopes                               stringList
	active, inactive, removePassword     bool
	newPasswordFile                      string
	secret                               protocol.SecretRef
}

// secretFlags names the flags of the secret reference, for isSet.
var secretFlags = []string{"backend", "secret-name", "username-key", "password-key", "version-stage", "version-id",
	"vault-name", "username-secret", "password-secret"}

// register adds the flags; update has --active and --remove-password
// where create has --inactive, and test has no name or password.
func (f *connFlags) register(fs *flag.FlagSet, cmd string) {
	if cmd != "test" {
		fs.StringVar(&f.name, "name", "", "the Configuration Name (unique)")
	}
	kindDefault := ""
	if cmd != "update" {
		kindDefault = string(protocol.GitHubEnterpriseServer)
	}
	fs.StringVar(&f.kind, "kind", kindDefault, "ghes (GitHub Enterprise Server) or github_cloud (github.com, NAME.ghe.com)")
	fs.StringVar(&f.url, "github-url", "", "the GitHub URL: https://git.example.com, https://github.com")
	fs.StringVar(&f.agent, "agent", "", "the agent (id or name) that reads the secret and calls GitHub")
	fs.StringVar(&f.secret.Backend, "backend", "", "the secret backend: aws, azure or file (default: the agent's only one)")
	fs.StringVar(&f.secret.SecretName, "secret-name", "", "aws, file: the secret's name or ARN")
	fs.StringVar(&f.secret.UsernameKey, "username-key", "", "aws, file: the key of the user name in the secret (optional)")
	fs.StringVar(&f.secret.PasswordKey, "password-key", "", "aws, file: the key of the token in the secret")
	fs.StringVar(&f.secret.VersionStage, "version-stage", "", "aws: the version stage (default AWSCURRENT)")
	fs.StringVar(&f.secret.VersionID, "version-id", "", "aws: a version id")
	fs.StringVar(&f.secret.VaultName, "vault-name", "", "azure: the Key Vault's name or URL")
	fs.StringVar(&f.secret.UsernameSecret, "username-secret", "", "azure: the secret holding the user name (optional)")
	fs.StringVar(&f.secret.PasswordSecret, "password-secret", "", "azure: the secret holding the token")
	fs.StringVar(&f.organization, "organization", "", "the organization (update: one of those that connections organizations lists; \"\" clears)")
	fs.Var(&f.scopes, "scope", "a required OAuth scope (repeatable, or comma-separated; none: the platform's mandatory list)")
	switch cmd {
	case "create":
		fs.BoolVar(&f.inactive, "inactive", false, "save the connection inactive")
		fs.StringVar(&f.newPasswordFile, "new-password-file", "", "protect the connection with the password in this file (- reads stdin)")
	case "update":
		fs.BoolVar(&f.active, "active", true, "--active=false deactivates, --active activates")
		fs.StringVar(&f.newPasswordFile, "new-password-file", "", "set a new password from this file (- reads stdin)")
		fs.BoolVar(&f.removePassword, "remove-password", false, "remove the password protection")
	}
}

// agentID resolves --agent.
func (f *connFlags) agentID(r *runner, c *client) (string, error) {
	if f.agent == "" {
		return "", nil
	}
	return c.resolveAgent(r.ctx, f.agent)
}

// request builds a creation (or unsaved test) request from the flags.
func (f *connFlags) request(r *runner, c *client) (protocol.CreateConnectionRequest, error) {
	agent, err := f.agentID(r, c)
	if err != nil {
		return protocol.CreateConnectionRequest{}, err
	}
	req := protocol.CreateConnectionRequest{
		Name: f.name, Kind: protocol.GitHubKind(f.kind), GitHubURL: f.url, AgentID: agent, Secret: f.secret,
		Organization: f.organization, RequiredScopes: f.scopes,
	}
	if f.inactive {
		req.Active = new(bool)
	}
	return req, nil
}

func connectionsCreate(r *runner, args []string) error {
	fs := r.flags()
	var f connFlags
	f.register(fs, "create")
	if _, err := r.parse(args, 0, 0); err != nil {
		return err
	}
	for _, req := range [][2]string{{"name", f.name}, {"github-url", f.url}, {"agent", f.agent}} {
		if req[1] == "" {
			return usagef("--%s is required", req[0])
		}
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	req, err := f.request(r, c)
	if err != nil {
		return err
	}
	if f.newPasswordFile != "" {
		if req.Password, err = r.readPassword(f.newPasswordFile, ""); err != nil {
			return err
		}
	}
	var v protocol.ConnectionView
	if _, err := c.do(r.ctx, "POST", "/api/v1/connections", req, &v); err != nil {
		return err
	}
	return r.out(v, func(w io.Writer) {
		fmt.Fprintf(w, "connection %s (%s) saved\n", v.Name, v.ID)
		printConnection(w, v)
	})
}

func connectionsList(r *runner, args []string) error {
	fs := r.flags()
	agent := fs.String("agent", "", "only the connections of this agent (id or name)")
	name := fs.String("name", "", "only the connection of this name")
	if _, err := r.parse(args, 0, 0); err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *agent != "" {
		id, err := c.resolveAgent(r.ctx, *agent)
		if err != nil {
			return err
		}
		q.Set("agent_id", id)
	}
	if *name != "" {
		q.Set("name", *name)
	}
	path := "/api/v1/connections"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var list protocol.ConnectionList
	if _, err := c.do(r.ctx, "GET", path, nil, &list); err != nil {
		return err
	}
	return r.out(list, func(w io.Writer) {
		tw := newTable(w)
		fmt.Fprintln(tw, "ID\tNAME\tKIND\tURL\tAGENT\tORGANIZATION\tACTIVE\tPROTECTED\tLAST TEST")
		for _, v := range list.Connections {
			u, org, test := v.GitHubURL, orDash(v.Organization), lastTest(v.LastTest)
			if v.Locked {
				u, org, test = "(locked)", "(locked)", "(locked)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Name, v.Kind, u, v.AgentID, org,
				yesNo(v.Active), yesNo(v.Protected), test)
		}
		tw.Flush()
	})
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// lastTest says in a few words how the last test went.
func lastTest(t *protocol.ConnectionTest) string {
	switch {
	case t == nil:
		return "never"
	case t.OK:
		return "ok " + when(&t.At)
	case t.Error != nil:
		return string(t.Error.Code) + " " + when(&t.At)
	}
	return "failed " + when(&t.At)
}

func printConnection(w io.Writer, v protocol.ConnectionView) {
	tw := newTable(w)
	rows := [][2]string{{"id", v.ID}, {"name", v.Name}, {"kind", string(v.Kind)}, {"agent", v.AgentID},
		{"active", yesNo(v.Active)}, {"protected", yesNo(v.Protected)}}
	if v.Locked {
		rows = append(rows, [2]string{"details", "locked: give the password (--password-file or CONTROLPLANE_CONNECTION_PASSWORD)"})
	} else {
		secret := "-"
		if v.Secret != nil {
			secret = describeSecret(*v.Secret)
		}
		scopes := strings.Join(v.RequiredScopes, ", ")
		if scopes == "" {
			scopes = "(the platform's mandatory list)"
		}
		rows = append(rows, [][2]string{{"github url", v.GitHubURL}, {"secret", secret}, {"organization", orDash(v.Organization)},
			{"required scopes", scopes}, {"organizations fetched", when(v.OrganizationsFetchedAt)}, {"last test", lastTest(v.LastTest)}}...)
	}
	rows = append(rows, [][2]string{{"created", when(&v.CreatedAt)}, {"updated", when(&v.UpdatedAt)}}...)
	for _, row := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	tw.Flush()
}

// describeSecret prints a reference: where, never what.
func describeSecret(s protocol.SecretRef) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("backend", s.Backend)
	add("secret_name", s.SecretName)
	add("username_key", s.UsernameKey)
	add("password_key", s.PasswordKey)
	add("version_stage", s.VersionStage)
	add("version_id", s.VersionID)
	add("vault_name", s.VaultName)
	add("username_secret", s.UsernameSecret)
	add("password_secret", s.PasswordSecret)
	return strings.Join(parts, " ")
}

// openConnection parses a command on one connection and resolves it.
func (r *runner) openConnection(args []string) (*client, string, error) {
	pos, err := r.parse(args, 1, 1)
	if err != nil {
		return nil, "", err
	}
	c, err := r.client()
	if err != nil {
		return nil, "", err
	}
	id, err := c.resolveConnection(r.ctx, pos[0])
	return c, id, err
}

func connectionsGet(r *runner, args []string) error {
	r.passwordFlag(r.flags())
	c, id, err := r.openConnection(args)
	if err != nil {
		return err
	}
	var v protocol.ConnectionView
	if _, err := c.do(r.ctx, "GET", "/api/v1/connections/"+id, nil, &v); err != nil {
		return err
	}
	return r.out(v, func(w io.Writer) { printConnection(w, v) })
}

func connectionsUpdate(r *runner, args []string) error {
	fs := r.flags()
	r.passwordFlag(fs)
	var f connFlags
	f.register(fs, "update")
	c, id, err := r.openConnection(args)
	if err != nil {
		return err
	}
	var req protocol.UpdateConnectionRequest
	str := func(flag string, v string, dst **string) {
		if r.isSet(flag) {
			*dst = &v
		}
	}
	str("name", f.name, &req.Name)
	str("github-url", f.url, &req.GitHubURL)
	str("organization", f.organization, &req.Organization)
	if r.isSet("kind") {
		k := protocol.GitHubKind(f.kind)
		req.Kind = &k
	}
	if r.isSet("agent") {
		agent, err := f.agentID(r, c)
		if err != nil {
			return err
		}
		req.AgentID = &agent
	}
	for _, name := range secretFlags {
		if r.isSet(name) {
			secret := f.secret
			req.Secret = &secret
			break
		}
	}
	if r.isSet("scope") {
		scopes := []string(f.scopes)
		if scopes == nil {
			scopes = []string{}
		}
		req.RequiredScopes = &scopes
	}
	if r.isSet("active") {
		req.Active = &f.active
	}
	req.RemovePassword = f.removePassword
	if f.newPasswordFile != "" {
		p, err := r.readPassword(f.newPasswordFile, "")
		if err != nil {
			return err
		}
		req.Password = &p
	}
	var v protocol.ConnectionView
	if _, err := c.do(r.ctx, "PUT", "/api/v1/connections/"+id, req, &v); err != nil {
		return err
	}
	return r.out(v, func(w io.Writer) {
		fmt.Fprintf(w, "connection %s (%s) updated\n", v.Name, v.ID)
		printConnection(w, v)
	})
}

func connectionsDelete(r *runner, args []string) error {
	r.passwordFlag(r.flags())
	c, id, err := r.openConnection(args)
	if err != nil {
		return err
	}
	if _, err := c.do(r.ctx, "DELETE", "/api/v1/connections/"+id, nil, nil); err != nil {
		return err
	}
	return r.out(map[string]any{"id": id, "deleted": true}, func(w io.Writer) { fmt.Fprintf(w, "connection %s deleted\n", id) })
}

// waitQuery is "?wait=D" for a positive d.
func waitQuery(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return "?wait=" + d.String()
}

func connectionsTest(r *runner, args []string) error {
	fs := r.flags()
	r.passwordFlag(fs)
	wait := fs.Duration("wait", 0, "how long the agent has for the test (default 30s)")
	var f connFlags
	f.register(fs, "test")
	pos, err := r.parse(args, 0, 1)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	var ans protocol.ConnectionTestAnswer
	var status int
	what := "the details given"
	if len(pos) == 1 {
		id, err := c.resolveConnection(r.ctx, pos[0])
		if err != nil {
			return err
		}
		what = "connection " + pos[0]
		status, err = c.do(r.ctx, "POST", "/api/v1/connections/"+id+"/test"+waitQuery(*wait), nil, &ans)
		if err != nil {
			return err
		}
	} else {
		if f.url == "" || f.agent == "" {
			return usagef("give a saved CONNECTION, or the details to test: --github-url, --agent and the secret's flags")
		}
		req, err := f.request(r, c)
		if err != nil {
			return err
		}
		status, err = c.do(r.ctx, "POST", "/api/v1/connections:test"+waitQuery(*wait), req, &ans)
		if err != nil {
			return err
		}
	}
	if err := r.out(ans, func(w io.Writer) { printTest(w, what, status, ans) }); err != nil {
		return err
	}
	if ans.Test != nil && !ans.Test.OK && ans.Test.Error != nil {
		return &apiError{status: status, e: *ans.Test.Error}
	}
	return nil
}

func printTest(w io.Writer, what string, status int, ans protocol.ConnectionTestAnswer) {
	t := ans.Test
	if status == http.StatusAccepted || t == nil {
		fmt.Fprintf(w, "the test of %s is still running: controlplane jobs get %s --wait 30s\n", what, ans.Job.ID)
		return
	}
	if !t.OK {
		code, msg := "failed", ""
		if t.Error != nil {
			code, msg = string(t.Error.Code), t.Error.Message
		}
		fmt.Fprintf(w, "test of %s: %s\n  %s\n  job: %s\n", what, code, msg, t.JobID)
		return
	}
	fmt.Fprintf(w, "test of %s: ok\n", what)
	tw := newTable(w)
	scopes := strings.Join(t.Scopes, ", ")
	if !t.ScopesListable {
		scopes = "(this token type has no OAuth scopes to list)"
	}
	rows := [][2]string{{"login", orDash(t.Login)}, {"token type", orDash(t.TokenType)}, {"api url", orDash(t.APIURL)},
		{"ghes version", orDash(t.GHESVersion)}, {"scopes", orDash(scopes)}, {"missing scopes", orDash(strings.Join(t.MissingScopes, ", "))},
		{"organizations", fmt.Sprint(t.Organizations)}, {"token expires", when(t.TokenExpiresAt)}, {"job", t.JobID}}
	for _, row := range rows {
		fmt.Fprintf(tw, "  %s:\t%s\n", row[0], row[1])
	}
	tw.Flush()
	for _, warn := range t.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

func connectionsOrganizations(r *runner, args []string) error {
	fs := r.flags()
	r.passwordFlag(fs)
	wait := fs.Duration("wait", 0, "how long the agent has to list them (default 30s)")
	c, id, err := r.openConnection(args)
	if err != nil {
		return err
	}
	var ans protocol.ConnectionOrganizations
	status, err := c.do(r.ctx, "GET", "/api/v1/connections/"+id+"/organizations"+waitQuery(*wait), nil, &ans)
	if err != nil {
		return err
	}
	return r.out(ans, func(w io.Writer) {
		if status == http.StatusAccepted {
			fmt.Fprintf(w, "still running: controlplane jobs get %s --wait 30s\n", ans.Job.ID)
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "\tLOGIN\tID\tDESCRIPTION")
		for _, o := range ans.Organizations {
			mark := ""
			if strings.EqualFold(o.Login, ans.Organization) {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", mark, o.Login, o.ID, orDash(o.Description))
		}
		tw.Flush()
		if ans.Truncated {
			fmt.Fprintln(w, "(the account sees more organizations than one answer holds)")
		}
		if len(ans.Organizations) > 0 {
			fmt.Fprintf(w, "pick one: controlplane connections update %s --organization LOGIN\n", id)
		}
	})
}
