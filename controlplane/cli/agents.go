package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// when prints a time for people: UTC, to the second; "-" for none.
func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func backends(bs []protocol.BackendInfo) string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return orDash(strings.Join(out, ","))
}

func agentsCreate(r *runner, args []string) error {
	fs := r.flags()
	var labels stringList
	fs.Var(&labels, "label", "a label key=value (repeatable)")
	pos, err := r.parse(args, 1, 1)
	if err != nil {
		return err
	}
	req := protocol.RegisterAgentRequest{Name: pos[0]}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return usagef("--label %q is not key=value", l)
		}
		if req.Labels == nil {
			req.Labels = map[string]string{}
		}
		req.Labels[k] = v
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	var resp protocol.RegisterAgentResponse
	if _, err := c.do(r.ctx, "POST", "/api/v1/agents", req, &resp); err != nil {
		return err
	}
	return r.out(resp, func(w io.Writer) { printEnrollment(w, c.base, resp) })
}

func printEnrollment(w io.Writer, base string, resp protocol.RegisterAgentResponse) {
	fmt.Fprintf(w, "agent %s (%s)\n", resp.Agent.Name, resp.Agent.ID)
	fmt.Fprintf(w, "enrollment token (single use, shown once; expires %s):\n  %s\n",
		when(&resp.EnrollmentToken.ExpiresAt), resp.EnrollmentToken.Token)
	fmt.Fprintf(w, "on the agent's machine:\n  agent enroll --control-plane %s --token %s\n", base, resp.EnrollmentToken.Token)
}

func agentsList(r *runner, args []string) error {
	r.flags()
	if _, err := r.parse(args, 0, 0); err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	var list protocol.AgentList
	if _, err := c.do(r.ctx, "GET", "/api/v1/agents", nil, &list); err != nil {
		return err
	}
	return r.out(list, func(w io.Writer) {
		tw := newTable(w)
		fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tVERSION\tHOSTNAME\tBACKENDS\tLAST SEEN\tRUNNING")
		for _, a := range list.Agents {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", a.ID, a.Name, a.Status, orDash(a.AgentVersion),
				orDash(a.Hostname), backends(a.Backends), when(a.LastSeen), a.RunningJobs)
		}
		tw.Flush()
	})
}

func agentsGet(r *runner, args []string) error {
	r.flags()
	pos, err := r.parse(args, 1, 1)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	id, err := c.resolveAgent(r.ctx, pos[0])
	if err != nil {
		return err
	}
	var a protocol.AgentView
	if _, err := c.do(r.ctx, "GET", "/api/v1/agents/"+id, nil, &a); err != nil {
		return err
	}
	return r.out(a, func(w io.Writer) { printAgent(w, a) })
}

func printAgent(w io.Writer, a protocol.AgentView) {
	tw := newTable(w)
	var labels []string
	for k, v := range a.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	var kinds []string
	for _, k := range a.Kinds {
		kinds = append(kinds, string(k))
	}
	var bs []string
	for _, b := range a.Backends {
		s := b.Name
		var set []string
		for k, v := range b.Settings {
			set = append(set, k+"="+v)
		}
		sort.Strings(set)
		if len(set) > 0 {
			s += " (" + strings.Join(set, ", ") + ")"
		}
		bs = append(bs, s)
	}
	for _, row := range [][2]string{
		{"id", a.ID}, {"name", a.Name}, {"status", a.Status}, {"labels", orDash(strings.Join(labels, ", "))},
		{"version", orDash(a.AgentVersion)}, {"hostname", orDash(a.Hostname)}, {"os", orDash(a.OS)},
		{"secret backends", orDash(strings.Join(bs, "; "))}, {"job kinds", orDash(strings.Join(kinds, ", "))},
		{"concurrency", fmt.Sprint(a.Concurrency)}, {"running jobs", fmt.Sprint(a.RunningJobs)},
		{"connected since", when(a.ConnectedSince)}, {"last seen", when(a.LastSeen)},
		{"created", when(&a.CreatedAt)}, {"enrolled", when(a.EnrolledAt)}, {"revoked", when(a.RevokedAt)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	tw.Flush()
}

func agentsRevoke(r *runner, args []string) error {
	r.flags()
	pos, err := r.parse(args, 1, 1)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	id, err := c.resolveAgent(r.ctx, pos[0])
	if err != nil {
		return err
	}
	var a protocol.AgentView
	if _, err := c.do(r.ctx, "DELETE", "/api/v1/agents/"+id, nil, &a); err != nil {
		return err
	}
	return r.out(a, func(w io.Writer) { fmt.Fprintf(w, "agent %s (%s) revoked at %s\n", a.Name, a.ID, when(a.RevokedAt)) })
}

func agentsToken(r *runner, args []string) error {
	r.flags()
	pos, err := r.parse(args, 1, 1)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	id, err := c.resolveAgent(r.ctx, pos[0])
	if err != nil {
		return err
	}
	var resp protocol.RegisterAgentResponse
	if _, err := c.do(r.ctx, "POST", "/api/v1/agents/"+id+"/enrollment-token", nil, &resp); err != nil {
		return err
	}
	return r.out(resp, func(w io.Writer) { printEnrollment(w, c.base, resp) })
}
