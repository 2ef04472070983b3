package sqlite

import "strings"

// The SQL, prepared once at Open: writes on the write connection, reads on
// the read pool.
const (
	qPing = `SELECT 1`

	qSavepoint  = `SAVEPOINT w`
	qRollbackTo = `ROLLBACK TO w`
	qRelease    = `RELEASE w`

	agentCols = `id, name, labels, public_key, created_at, enrolled_at, revoked_at,
		agent_version, hostname, os, backends, last_seen`

	qInsertAgent = `INSERT INTO agents (` + agentCols + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qSelectAgent = `SELECT ` + agentCols + ` FROM agents WHERE id = ?`
	qListAgents  = `SELECT ` + agentCols + ` FROM agents ORDER BY name, id`
	qAgentExists = `SELECT 1 FROM agents WHERE id = ?`
	// Revoking twice keeps the first time.
	qRevokeAgent     = `UPDATE agents SET revoked_at = coalesce(revoked_at, ?1) WHERE id = ?2`
	qSetAgentKey     = `UPDATE agents SET public_key = ?1, enrolled_at = ?2 WHERE id = ?3`
	qUpdateAgentInfo = `UPDATE agents SET agent_version = ?1, hostname = ?2, os = ?3, backends = ?4, last_seen = ?5
		WHERE id = ?6`

	qInsertToken = `INSERT INTO enrollment_tokens (hash, agent_id, created_at, expires_at)
		VALUES (?, ?, ?, ?)`
	qVoidTokens = `UPDATE enrollment_tokens SET voided_at = ?1
		WHERE agent_id = ?2 AND used_at IS NULL AND voided_at IS NULL`
	// qSpendToken marks a usable token used; it changes one row or none.
	qSpendToken = `UPDATE enrollment_tokens SET used_at = ?1
		WHERE hash = ?2 AND used_at IS NULL AND voided_at IS NULL AND expires_at > ?1
		AND agent_id IN (SELECT id FROM agents WHERE revoked_at IS NULL)`
	qTokenAgent = `SELECT agent_id FROM enrollment_tokens WHERE hash = ?`

	jobCols = `id, agent_id, kind, params, state, attempt, timeout_ns, deadline,
		created_at, dispatched_at, accepted_at, finished_at, error, output, connection_id`

	qInsertJob = `INSERT INTO jobs (` + jobCols + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qSelectJob = `SELECT ` + jobCols + ` FROM jobs WHERE id = ?`
	qJobExists = `SELECT 1 FROM jobs WHERE id = ?`
	// qOpenJobs spells the WHERE of the partial index jobs_open, and names
	// it: without statistics SQLite would rather search jobs_state_created
	// three times and sort.
	qOpenJobs = `SELECT ` + jobCols + ` FROM jobs INDEXED BY jobs_open
		WHERE state IN ('queued', 'dispatched', 'running')
		ORDER BY created_at, id`
)

const (
	connectionCols = `id, name, kind, github_url, agent_id, secret, organization, required_scopes,
		active, password_hash, revision, created_at, updated_at, last_test, organizations`

	qInsertConnection = `INSERT INTO connections (` + connectionCols + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qSelectConnection = `SELECT ` + connectionCols + ` FROM connections WHERE id = ?`
	// qUpdateConnection writes every column but id and created_at, at
	// revision ?13+1, if the stored revision is ?13.
	qUpdateConnection = `UPDATE connections SET name = ?1, kind = ?2, github_url = ?3, agent_id = ?4,
		secret = ?5, organization = ?6, required_scopes = ?7, active = ?8, password_hash = ?9,
		updated_at = ?10, last_test = ?11, organizations = ?12, revision = ?13 + 1
		WHERE id = ?14 AND revision = ?13`
	// qRecordConnection keeps a column whose new value is NULL.
	qRecordConnection = `UPDATE connections SET last_test = coalesce(?1, last_test),
		organizations = coalesce(?2, organizations)
		WHERE id = ?3 AND revision = ?4`
	qConnectionExists = `SELECT 1 FROM connections WHERE id = ?`
	qDeleteConnection = `DELETE FROM connections WHERE id = ?`
)

// qListConnections is ListConnections' statement for its filter: the agent
// and the name are arguments when filtered on, in that order.
func qListConnections(byAgent, byName bool) string {
	var where []string
	if byAgent {
		where = append(where, "agent_id = ?")
	}
	if byName {
		where = append(where, "name = ?") // the column's collation: NOCASE
	}
	q := `SELECT ` + connectionCols + ` FROM connections`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	return q + ` ORDER BY name, id`
}

// maxFromStates is how many distinct states UpdateJob can be asked to move
// from: all of them.
const maxFromStates = 7

// qUpdateJob is UpdateJob's statement for n distinct from states (1 to
// maxFromStates).
func qUpdateJob(n int) string {
	return `UPDATE jobs SET state = ?, attempt = ?, dispatched_at = ?, accepted_at = ?,
		finished_at = ?, error = ?, output = ?
		WHERE id = ? AND state IN (?` + strings.Repeat(", ?", n-1) + `)`
}

// qListJobs is ListJobs' statement for its filter: the agent and the state
// are arguments when filtered on, in that order, and the limit is last.
func qListJobs(byAgent, byState bool) string {
	var where []string
	if byAgent {
		where = append(where, "agent_id = ?")
	}
	if byState {
		where = append(where, "state = ?")
	}
	q := `SELECT ` + jobCols + ` FROM jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	return q + ` ORDER BY created_at DESC, id DESC LIMIT ?`
}

// writeQueries are the statements the writer runs.
func writeQueries() []string {
	q := []string{
		qSavepoint, qRollbackTo, qRelease,
		qInsertAgent, qSelectAgent, qAgentExists, qRevokeAgent, qSetAgentKey, qUpdateAgentInfo,
		qInsertToken, qVoidTokens, qSpendToken, qTokenAgent,
		qInsertJob, qJobExists,
		qInsertConnection, qUpdateConnection, qRecordConnection, qConnectionExists, qDeleteConnection,
	}
	for n := 1; n <= maxFromStates; n++ {
		q = append(q, qUpdateJob(n))
	}
	return q
}

// readQueries are the statements the read pool runs.
func readQueries() []string {
	q := []string{qPing, qSelectAgent, qListAgents, qSelectJob, qOpenJobs, qSelectConnection}
	for _, a := range []bool{false, true} {
		for _, s := range []bool{false, true} {
			q = append(q, qListJobs(a, s), qListConnections(a, s))
		}
	}
	return q
}
