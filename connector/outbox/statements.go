package outbox

// The writer's fixed statements, prepared once at Open (see wtx).
const (
	sqlEnqueue = `INSERT INTO outbox
		(key, connector, payload, started_at, enqueued_at, updated_at, state, next_attempt_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?5, 'pending', ?5)
		ON CONFLICT (key, connector) DO NOTHING`

	// Expired leases go back to pending (keeping their due time) so that
	// sqlLease's one indexed, ordered scan finds every due row.
	sqlExpireLeases = `UPDATE outbox SET state = 'pending', lease_id = NULL, lease_expires_at = NULL
		WHERE connector = ?1 AND state = 'leased' AND lease_expires_at <= ?2`
	// Leasing is a SELECT and one UPDATE per row. The SELECT has no LIMIT:
	// SQLite re-prepares a statement with a bound LIMIT on every run, which
	// cost more than the lease itself; the index gives the order, so rows
	// stream and Lease stops reading after its limit.
	sqlLeaseSelect = `SELECT ` + rowColumns + ` FROM outbox
		WHERE connector = ?1 AND state = 'pending' AND next_attempt_at <= ?2
		ORDER BY next_attempt_at, id`
	sqlLeaseRow = `UPDATE outbox SET state = 'leased', lease_id = ?1, lease_expires_at = ?2, updated_at = ?3
		WHERE id = ?4`
	// When the next row of a connector becomes due: its earliest pending row (outbox_due) or
	// lease expiry of rows other than those of lease ?2 (outbox_leases); NULL when it has none.
	sqlNextDue = `SELECT min(t) FROM (
		SELECT min(next_attempt_at) AS t FROM outbox WHERE connector = ?1 AND state = 'pending'
		UNION ALL SELECT min(lease_expires_at) FROM outbox WHERE connector = ?1 AND state = 'leased' AND lease_id <> ?2)`

	// ?1 now, ?2 next attempt (NULL: now), ?3 error text, ?4 id, ?5 lease id.
	finishWhere = `, updated_at = ?1, lease_id = NULL, lease_expires_at = NULL
		WHERE id = ?4 AND state = 'leased' AND lease_id = ?5`
	sqlAck   = `UPDATE outbox SET state = 'done', done_at = ?1, attempts = attempts + 1` + finishWhere
	sqlRetry = `UPDATE outbox SET state = 'pending', attempts = attempts + 1,
		next_attempt_at = coalesce(?2, ?1), last_error = ?3` + finishWhere
	sqlBury    = `UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?3` + finishWhere
	sqlRelease = `UPDATE outbox SET state = 'pending', lease_id = NULL, lease_expires_at = NULL, updated_at = ?1
		WHERE id = ?2 AND state = 'leased' AND lease_id = ?3`

	sqlCallStateSet = `INSERT INTO call_state (connector, key, field, value, updated_at)
		VALUES (?1, ?2, ?3, ?4, ?5)
		ON CONFLICT (connector, key, field) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`

	sqlOpenCallPut = `INSERT INTO open_calls (key, pbx, data, updated_at) VALUES (?1, ?2, ?3, ?4)
		ON CONFLICT (key) DO UPDATE SET pbx = excluded.pbx, data = excluded.data, updated_at = excluded.updated_at`
	sqlOpenCallDelete = `DELETE FROM open_calls WHERE key = ?1`

	sqlTimelineAppend = `INSERT INTO timeline (key, seq, at, connector, kind, summary, detail)
		VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM timeline WHERE key = ?1), ?2, ?3, ?4, ?5, ?6)`

	// ?1 cutoff, ?2 chunk size.
	sqlPruneRows = `DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
		WHERE state = 'done' AND done_at < ?1 LIMIT ?2)`
	sqlPruneDead = `DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
		WHERE state = 'dead' AND updated_at < ?1 LIMIT ?2)`
	sqlPruneOpenCalls = `DELETE FROM open_calls WHERE key IN (SELECT key FROM open_calls
		WHERE updated_at < ?1 LIMIT ?2)`
	sqlPruneCallState = `DELETE FROM call_state WHERE (connector, key, field) IN (
		SELECT connector, key, field FROM call_state AS c WHERE updated_at < ?1
		AND NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.key = c.key AND o.connector = c.connector) LIMIT ?2)`
	sqlPruneTimeline = `DELETE FROM timeline WHERE rowid IN (
		SELECT rowid FROM timeline AS t WHERE at < ?1
		AND NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.key = t.key) LIMIT ?2)`
)

// writerStatements are prepared once per Store.
var writerStatements = [...]string{
	sqlEnqueue, sqlExpireLeases, sqlLeaseSelect, sqlLeaseRow, sqlNextDue, sqlAck, sqlRetry, sqlBury, sqlRelease,
	sqlCallStateSet, sqlTimelineAppend, sqlOpenCallPut, sqlOpenCallDelete,
	sqlPruneRows, sqlPruneDead, sqlPruneOpenCalls, sqlPruneCallState, sqlPruneTimeline,
}
