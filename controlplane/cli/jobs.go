package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/orchestrator/orchestrator/protocol"
)

func jobsGet(r *runner, args []string) error {
	fs := r.flags()
	wait := fs.Duration("wait", 0, "wait up to this long for the job to end (30s)")
	pos, err := r.parse(args, 1, 1)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	path := "/api/v1/jobs/" + url.PathEscape(pos[0])
	if *wait > 0 {
		path += "?wait=" + wait.String()
	}
	var j protocol.JobView
	if _, err := c.do(r.ctx, "GET", path, nil, &j); err != nil {
		return err
	}
	return r.out(j, func(w io.Writer) { printJob(w, j) })
}

func printJob(w io.Writer, j protocol.JobView) {
	tw := newTable(w)
	rows := [][2]string{
		{"id", j.ID}, {"kind", string(j.Kind)}, {"agent", j.AgentID}, {"connection", orDash(j.ConnectionID)},
		{"state", string(j.State)}, {"attempts", fmt.Sprint(j.Attempts)}, {"timeout", time.Duration(j.Timeout).String()},
		{"created", when(&j.CreatedAt)}, {"dispatched", when(j.DispatchedAt)}, {"accepted", when(j.AcceptedAt)},
		{"finished", when(j.FinishedAt)},
	}
	if j.DurationMS != nil {
		rows = append(rows, [2]string{"duration", (time.Duration(*j.DurationMS) * time.Millisecond).String()})
	}
	if j.Error != nil {
		rows = append(rows, [2]string{"error", string(j.Error.Code) + ": " + j.Error.Message})
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	tw.Flush()
	if j.Result != nil {
		b, _ := json.MarshalIndent(j.Result, "  ", "  ")
		fmt.Fprintf(w, "result:\n  %s\n", b)
	}
}

func jobsList(r *runner, args []string) error {
	fs := r.flags()
	agent := fs.String("agent", "", "only the jobs of this agent (id or name)")
	state := fs.String("state", "", "only jobs in this state (queued, dispatched, running, succeeded, failed, expired, canceled)")
	limit := fs.Int("limit", 0, "at most this many (1-1000; default 100)")
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
	if *state != "" {
		q.Set("state", *state)
	}
	if *limit != 0 {
		q.Set("limit", fmt.Sprint(*limit))
	}
	path := "/api/v1/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var list protocol.JobList
	if _, err := c.do(r.ctx, "GET", path, nil, &list); err != nil {
		return err
	}
	return r.out(list, func(w io.Writer) {
		tw := newTable(w)
		fmt.Fprintln(tw, "ID\tKIND\tAGENT\tSTATE\tCREATED\tDURATION\tERROR")
		for _, j := range list.Jobs {
			d := "-"
			if j.DurationMS != nil {
				d = (time.Duration(*j.DurationMS) * time.Millisecond).String()
			}
			e := "-"
			if j.Error != nil {
				e = string(j.Error.Code)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Kind, j.AgentID, j.State, when(&j.CreatedAt), d, e)
		}
		tw.Flush()
	})
}

func jobsCancel(r *runner, args []string) error {
	r.flags()
	pos, err := r.parse(args, 1, 1)
	if err != nil {
		return err
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	var j protocol.JobView
	if _, err := c.do(r.ctx, "POST", "/api/v1/jobs/"+url.PathEscape(pos[0])+"/cancel", nil, &j); err != nil {
		return err
	}
	return r.out(j, func(w io.Writer) {
		fmt.Fprintf(w, "job %s %s\n", j.ID, strings.ReplaceAll(string(j.State), "_", " "))
	})
}
