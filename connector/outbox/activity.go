package outbox

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Read-only views of recent activity for the status page: delivery latency per connector and
// time bucket (Deliveries), and the calls of a time range, one per record key (EachCall). Both
// read through the read pool; neither writes.

// Activity bounds.
const (
	// MaxBuckets bounds ActivityQuery.Buckets.
	MaxBuckets = 1000
	// activityStartSlack: a row's call may have started this long before its enqueue time and
	// still be found by Deliveries (the started_at index bounds the scan).
	activityStartSlack = 24 * time.Hour
	// activitySkew tolerates a PBX clock ahead of the daemon's (started_at after enqueued_at).
	activitySkew = time.Hour
)

// connectorsCTE lists the connectors that have rows with one index probe each (a loose index
// scan of outbox_started), so that the queries below can use the (connector, started_at) index
// without reading every row.
const connectorsCTE = `WITH RECURSIVE conns(c) AS (
		SELECT min(connector) FROM outbox
		UNION ALL
		SELECT (SELECT min(connector) FROM outbox WHERE connector > conns.c) FROM conns WHERE conns.c IS NOT NULL)`

// sqlDeliveries reads the timing of the rows of one range (started_at bounds, then enqueued_at
// bounds).
const sqlDeliveries = connectorsCTE + `
		SELECT o.connector, o.state, o.enqueued_at, o.done_at
		FROM conns JOIN outbox o ON o.connector = conns.c
		WHERE o.started_at >= ? AND o.started_at < ? AND o.enqueued_at >= ? AND o.enqueued_at < ?`

// ActivityQuery selects the time buckets Deliveries aggregates: Buckets buckets of width
// Bucket, the first starting at Since.
type ActivityQuery struct {
	Since   time.Time
	Bucket  time.Duration
	Buckets int
}

func (q ActivityQuery) validate(op string) error {
	switch {
	case q.Since.IsZero():
		return fmt.Errorf("outbox: %s: %w: no since", op, ErrInvalid)
	case q.Bucket <= 0:
		return fmt.Errorf("outbox: %s: %w: bucket width %v", op, ErrInvalid, q.Bucket)
	case q.Buckets <= 0 || q.Buckets > MaxBuckets:
		return fmt.Errorf("outbox: %s: %w: %d buckets, want 1 to %d", op, ErrInvalid, q.Buckets, MaxBuckets)
	}
	return nil
}

// end is the end of the last bucket.
func (q ActivityQuery) end() time.Time { return q.Since.Add(time.Duration(q.Buckets) * q.Bucket) }

// DeliveryBucket is what happened to the rows of one connector whose calls were enqueued in one
// time bucket. Latency is done_at − enqueued_at: from the moment the finished call was stored
// (its hangup, as the daemon saw it) to the CRM's acknowledgement.
type DeliveryBucket struct {
	Start time.Time
	// Delivered counts the done rows; P50, P95 and Max are their latencies (nearest rank), zero
	// when Delivered is 0.
	Delivered     int
	P50, P95, Max time.Duration
	// Waiting counts the rows not delivered yet (pending or leased); Dead the dead letters.
	Waiting, Dead int
}

// ConnectorDeliveries is one connector's buckets, in time order, every bucket present, and the
// whole range as one bucket (Total, starting at the first bucket).
type ConnectorDeliveries struct {
	Connector string
	Buckets   []DeliveryBucket
	Total     DeliveryBucket
}

// Deliveries aggregates, per connector with rows and per bucket of q, the rows whose call was
// enqueued in that bucket: how many were delivered and how fast, how many wait, how many are
// dead. Connectors come in name order. Rows whose call started more than a day before it was
// enqueued (imported backfills) are left out. The cost is one index range scan per connector
// over the rows of q's range (no payload is read).
func (s *Store) Deliveries(ctx context.Context, q ActivityQuery) ([]ConnectorDeliveries, error) {
	if err := q.validate("deliveries"); err != nil {
		return nil, err
	}
	leave, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	since, end := q.Since.UnixNano(), q.end().UnixNano()
	rows, err := s.r.QueryContext(ctx, sqlDeliveries, q.Since.Add(-activityStartSlack).UnixNano(), q.end().Add(activitySkew).UnixNano(), since, end)
	if err != nil {
		return nil, s.wrap("deliveries", err)
	}
	defer func() { _ = rows.Close() }()
	type acc struct {
		b         []DeliveryBucket
		latencies [][]time.Duration
	}
	by := map[string]*acc{}
	for rows.Next() {
		var conn, state string
		var enq int64
		var done *int64
		if err := rows.Scan(&conn, &state, &enq, &done); err != nil {
			return nil, s.damaged("deliveries", err)
		}
		a := by[conn]
		if a == nil {
			a = &acc{b: make([]DeliveryBucket, q.Buckets), latencies: make([][]time.Duration, q.Buckets)}
			by[conn] = a
		}
		i := int((enq - since) / int64(q.Bucket))
		switch State(state) {
		case Done:
			if done != nil {
				a.latencies[i] = append(a.latencies[i], max(time.Duration(*done-enq), 0))
			}
		case Pending, Leased:
			a.b[i].Waiting++
		case Dead:
			a.b[i].Dead++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("deliveries", err)
	}
	out := make([]ConnectorDeliveries, 0, len(by))
	for conn, a := range by {
		cd := ConnectorDeliveries{Connector: conn, Buckets: a.b, Total: DeliveryBucket{Start: q.Since}}
		var all []time.Duration
		for i := range a.b {
			b := &a.b[i]
			b.Start = q.Since.Add(time.Duration(i) * q.Bucket)
			b.setLatencies(a.latencies[i])
			all = append(all, a.latencies[i]...)
			cd.Total.Waiting += b.Waiting
			cd.Total.Dead += b.Dead
		}
		cd.Total.setLatencies(all)
		out = append(out, cd)
	}
	slices.SortFunc(out, func(x, y ConnectorDeliveries) int { return strings.Compare(x.Connector, y.Connector) })
	return out, nil
}

// setLatencies sets the delivered count and percentiles from latencies (sorted here).
func (b *DeliveryBucket) setLatencies(l []time.Duration) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.Delivered = len(l)
	b.P50, b.P95, b.Max = nearestRank(l, 50), nearestRank(l, 95), l[len(l)-1]
}

// nearestRank is the p-th percentile of sorted (not empty) by the nearest-rank method.
func nearestRank(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 · n)
	return sorted[max(rank, 1)-1]
}

// likeEscaper escapes LIKE's wildcards (with ESCAPE '\').
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// CallQuery selects calls for EachCall.
type CallQuery struct {
	// Since and Until bound the call's start time: Since <= started_at < Until. Since is
	// required; a zero Until does not bound.
	Since, Until time.Time
	// Contains, when not empty, keeps the calls whose payload contains at least one of these
	// strings, ASCII letters in any case (a pre-filter for searches: the caller checks what it
	// found).
	Contains []string
	// Limit > 0 returns at most Limit calls, newest first. With Limit 0 every call of the range
	// is returned, in no particular order.
	Limit int
}

// CallRef is one call of EachCall: its key, start time and the payload it was enqueued with.
type CallRef struct {
	Key       string
	StartedAt time.Time
	Payload   []byte
}

// EachCall calls fn for every call (record key) with rows whose call started in q's range, once
// per key however many connectors it went to, until fn returns an error (which EachCall
// returns). Without Contains it reads one index range per connector and each call's payload
// once; a search (Contains) reads the payloads of the range in table order (BenchmarkActivity:
// about 0.4 s for 270,000 rows on a busy 2-core VM). fn runs while a read connection is held: it
// must not call the Store.
func (s *Store) EachCall(ctx context.Context, q CallQuery, fn func(CallRef) error) error {
	if q.Since.IsZero() {
		return fmt.Errorf("outbox: calls: %w: no since", ErrInvalid)
	}
	if q.Limit < 0 {
		return fmt.Errorf("outbox: calls: %w: negative limit", ErrInvalid)
	}
	until := q.Until
	if until.IsZero() {
		until = time.Unix(0, 1<<63-1)
	}
	if !q.Since.Before(until) {
		return fmt.Errorf("outbox: calls: %w: since %s is not before until %s", ErrInvalid,
			q.Since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	query, args, err := callsQuery(q, until)
	if err != nil {
		return err
	}
	leave, err := s.enter()
	if err != nil {
		return err
	}
	defer leave()
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return s.wrap("calls", err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var c CallRef
		var started int64
		if err := rows.Scan(&c.Key, &started, &c.Payload); err != nil {
			return s.damaged("calls", err)
		}
		c.StartedAt = fromNanos(started)
		if err := fn(c); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return s.wrap("calls", err)
	}
	return nil
}

// callsQuery builds EachCall's query for q (its range ending at until) and its arguments.
func callsQuery(q CallQuery, until time.Time) (string, []any, error) {
	args := []any{q.Since.UnixNano(), until.UnixNano()}
	var filter string
	if len(q.Contains) > 0 {
		conds := make([]string, len(q.Contains))
		for i, c := range q.Contains {
			if c == "" {
				return "", nil, fmt.Errorf("outbox: calls: %w: empty search string", ErrInvalid)
			}
			// LIKE on the text is several times faster than instr on the blob here.
			conds[i] = `CAST(o.payload AS TEXT) LIKE ? ESCAPE '\'`
			args = append(args, "%"+likeEscaper.Replace(c)+"%")
		}
		filter = " AND (" + strings.Join(conds, " OR ") + ")"
	}
	tail := ""
	if q.Limit > 0 {
		tail = " ORDER BY o.started_at DESC, o.id DESC LIMIT ?"
		args = append(args, q.Limit)
	}
	// A search reads every payload of the range anyway: in table order that is faster than
	// through the index. Without one, the index ranges read only the rows of the range.
	from := connectorsCTE + ` SELECT o.key, o.started_at, o.payload FROM conns JOIN outbox o ON o.connector = conns.c`
	if filter != "" {
		from = `SELECT o.key, o.started_at, o.payload FROM outbox o`
	}
	const where = ` WHERE o.started_at >= ? AND o.started_at < ?`
	const firstOfKey = ` AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.key = o.key AND x.connector < o.connector)`
	// Every part is fixed SQL with ? placeholders.
	return from + where + filter + firstOfKey + tail, args, nil
}
