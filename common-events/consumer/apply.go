package consumer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/outbox"
)

// applier commits the Applies of a runner's records, from all its partitions. The records
// whose Applies are waiting together commit in one transaction, with one inbox statement
// for all of them: under load one commit serves many records, and when idle a record
// commits alone at once, or after the runner's Linger with those that came meanwhile. Run
// owns its goroutine.
type applier struct {
	r    *Runner
	reqs chan applyReq
	done chan struct{}
	// conn is the applier's own connection, held while it runs: commits never queue in
	// the pool behind the first steps of the hundreds of records in flight.
	conn *pgxpool.Conn
}

type applyReq struct {
	msg   Message
	apply Apply // the zero Apply: only the inbox row
	err   chan error
}

func newApplier(r *Runner) *applier {
	return &applier{r: r, reqs: make(chan applyReq), done: make(chan struct{})}
}

// apply has msg's Apply committed with its inbox row and returns the outcome, or ctx's
// error once ctx is done: the Apply may then still commit, and the record's next attempt
// finds its inbox row and skips it.
func (a *applier) apply(ctx context.Context, msg Message, apply Apply) error {
	req := applyReq{msg: msg, apply: apply, err: make(chan error, 1)}
	select {
	case a.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.err:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *applier) run() {
	defer close(a.done)
	defer func() {
		if a.conn != nil {
			a.conn.Release()
		}
	}()
	for req := range a.reqs {
		a.commit(a.gather(req))
	}
}

// gather makes a batch of first and the requests waiting behind it, up to BatchSize. With
// a Linger it waits that long, at most, for more to come: fewer, larger commits for a
// group whose records may wait.
func (a *applier) gather(first applyReq) []applyReq {
	batch := []applyReq{first}
	var linger <-chan time.Time // nil: take only what waits already
	if a.r.Linger > 0 {
		t := time.NewTimer(a.r.Linger)
		defer t.Stop()
		linger = t.C
	}
	for len(batch) < a.r.BatchSize {
		var next applyReq
		ok := true
		if linger == nil {
			select {
			case next, ok = <-a.reqs:
			default:
				return batch
			}
		} else {
			select {
			case next, ok = <-a.reqs:
			case <-linger:
				return batch
			}
		}
		if !ok {
			return batch
		}
		batch = append(batch, next)
	}
	return batch
}

// stop returns once the requests made before it are answered. Call it after the last
// apply returned.
func (a *applier) stop() {
	close(a.reqs)
	<-a.done
}

// commit applies batch in one transaction, within HandlerTimeout. If that fails because
// of a record, each record is applied on its own, so one record's failure is its own and
// batching never changes what happens to a record; the records share what is left of the
// timeout. If it fails because the database did — the connection lost, or the time up —
// every record fails at once: applied one by one, each would fail the same way after
// waiting as long (with the database's packets dropped, a full batch would take the
// timeout a hundred times over, stalling every partition of the group).
func (a *applier) commit(batch []applyReq) {
	ctx, cancel := context.WithTimeout(context.Background(), a.r.HandlerTimeout)
	defer cancel()
	if len(batch) > 1 {
		err := a.applyTx(ctx, batch)
		if err == nil || a.conn == nil || ctx.Err() != nil {
			for _, req := range batch {
				req.err <- err
			}
			return
		}
		a.r.Log.Debug("batch declined; applying its records one by one", "group", a.r.Group, "records", len(batch), "err", err)
	}
	for _, req := range batch {
		req.err <- a.applyTx(ctx, []applyReq{req})
	}
}

// inbox records ids in the inbox, in tx, and returns those it had not recorded before:
// every one of them for an Idempotent group, which keeps no inbox.
func (a *applier) inbox(ctx context.Context, tx pgx.Tx, ids []string) ([]string, error) {
	if a.r.Idempotent {
		return ids, nil
	}
	rows, _ := tx.Query(ctx, `
		INSERT INTO processed_events (consumer_group, event_id)
		SELECT $1, id FROM unnest($2::text[]) AS id ORDER BY id
		ON CONFLICT DO NOTHING
		RETURNING event_id`, a.r.Group, ids)
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// inboxGroup is the group whose inbox a statement set's statement writes: none for an
// Idempotent group.
func (a *applier) inboxGroup() string {
	if a.r.Idempotent {
		return ""
	}
	return a.r.Group
}

// querier runs a statement: the applier's connection, or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// statementResult is what a statement set's statement did.
type statementResult struct {
	fresh    []string // the ids the inbox took as new
	recorded []bool   // by row
	stored   int      // events stored in the outbox
}

// runStatement records set's rows (rowIDs[i] is the event id of rows[i]'s record), the
// inbox rows of ids (rowIDs and the ids of records with only an inbox row; with group
// empty, no inbox: every id is new), the events in stored of the rows it records
// (eventsOf) and what else the set writes of them (AlsoWrite), in one statement on db. A record's row is recorded only if the inbox took
// its id as new, and only the first row of an id that comes twice.
func runStatement(ctx context.Context, db querier, set statementSet, group string, ids, rowIDs []string, rows []any, stored outbox.Rows) (statementResult, error) {
	args := []any{ids, rowIDs}
	inbox := `SELECT id AS event_id FROM unnest($1::text[]) AS id`
	if group != "" {
		args = append(args, group)
		inbox = `INSERT INTO processed_events (consumer_group, event_id)
			SELECT $3, id FROM unnest($1::text[]) AS id ORDER BY id
			ON CONFLICT DO NOTHING
			RETURNING event_id`
	}
	apply, applyArgs := set.statement(rows, len(args)+1, "fresh")
	args = append(args, applyArgs...)
	store, storeArgs := stored.SQL(len(args)+1, "applied")
	args = append(args, storeArgs...)
	res := statementResult{recorded: make([]bool, len(rows))}
	var tags []int32
	err := db.QueryRow(ctx, `
		WITH inbox AS (`+inbox+`),
		fresh AS (
			SELECT (min(r.i) - 1)::int AS tag FROM unnest($2::text[]) WITH ORDINALITY AS r(id, i)
			WHERE r.id IN (SELECT event_id FROM inbox) GROUP BY r.id
		),
		applied AS (`+apply+`),
		stored AS (`+store+`)`+set.alsoWrites("applied")+`
		SELECT ARRAY(SELECT event_id FROM inbox), ARRAY(SELECT tag FROM applied), (SELECT count(*) FROM stored)`,
		args...).Scan(&res.fresh, &tags, &res.stored)
	if err != nil {
		return statementResult{}, fmt.Errorf("record %d rows, their inbox rows and events: %w", len(rows), err)
	}
	for _, tag := range tags {
		res.recorded[tag] = true
	}
	return res, nil
}

// eventsOf is what set's rows emit, each event tagged with its row's index.
func eventsOf(set statementSet, rows []any) outbox.Rows {
	var stored outbox.Rows
	for i, row := range rows {
		for _, env := range set.emits(row) {
			stored.Add(i, env)
		}
	}
	return stored
}

// applyEach runs applies in tx: each Func as it comes, then each Set once with its rows,
// in the order of the Sets' first rows. It returns those Sets and their rows.
func applyEach(ctx context.Context, tx Tx, applies []Apply) ([]Set, map[Set][]any, error) {
	setRows := map[Set][]any{}
	var sets []Set
	for _, a := range applies {
		switch {
		case a.fn != nil:
			if err := a.fn(ctx, tx); err != nil {
				return nil, nil, err
			}
		case a.set != nil:
			if setRows[a.set] == nil {
				sets = append(sets, a.set)
			}
			setRows[a.set] = append(setRows[a.set], a.row)
		}
	}
	for _, set := range sets {
		if err := set.Apply(ctx, tx, setRows[set]); err != nil {
			return nil, nil, err
		}
	}
	return sets, setRows, nil
}

// outcome is what a batch's transaction did, told once it committed.
type outcome struct {
	counts  map[count]int
	setRows map[Set][]any
	sets    []Set // in the order of their first row
	stmts   []statementRun
	emitted int
}

type count struct{ topic, outcome string }

type statementRun struct {
	set      statementSet
	rows     []any
	recorded []bool
}

// tally counts reqs as applied or duplicate by fresh, the ids the inbox took as new, and
// returns those applied: an event twice in one batch applies once.
func (o *outcome) tally(reqs []applyReq, fresh []string) []applyReq {
	isFresh := make(map[string]bool, len(fresh))
	for _, id := range fresh {
		isFresh[id] = true
	}
	applied := reqs[:0:0]
	for _, req := range reqs {
		if !isFresh[req.msg.ID] {
			req.msg.Log.Info("duplicate event skipped")
			o.counts[count{req.msg.Topic, OutcomeDuplicate}]++
			continue
		}
		delete(isFresh, req.msg.ID)
		o.counts[count{req.msg.Topic, OutcomeApplied}]++
		applied = append(applied, req)
	}
	return applied
}

// statement runs a statement set's requests reqs, with the inbox rows of others (records
// with only an inbox row), on db.
func (a *applier) statement(ctx context.Context, db querier, set statementSet, reqs, others []applyReq, o *outcome) error {
	rowIDs, rows := make([]string, len(reqs)), make([]any, len(reqs))
	for i, req := range reqs {
		rowIDs[i], rows[i] = req.msg.ID, req.apply.row
	}
	ids := slices.Clone(rowIDs)
	for _, req := range others {
		ids = append(ids, req.msg.ID)
	}
	res, err := runStatement(ctx, db, set, a.inboxGroup(), ids, rowIDs, rows, eventsOf(set, rows))
	if err != nil {
		return err
	}
	o.tally(slices.Concat(reqs, others), res.fresh)
	o.stmts = append(o.stmts, statementRun{set: set, rows: rows, recorded: res.recorded})
	o.emitted += res.stored
	return nil
}

// applyTx runs batch's Applies in one transaction, each guarded by the inbox: one
// statement records every event id and says which were new. The rows of a statement set
// write their inbox rows in its statement; a batch of nothing else (but records with only
// an inbox row) is that one statement, with no transaction block around it. It is not
// cut short when the session ends: the records in flight finish, within ctx
// (HandlerTimeout). It leaves a.conn nil when it has no connection to the database: none
// could be had, or it was lost.
func (a *applier) applyTx(ctx context.Context, batch []applyReq) error {
	r := a.r
	if a.conn == nil {
		conn, err := r.Pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("inbox: %w", err)
		}
		a.conn = conn
	}
	defer func() {
		if a.conn.Conn().IsClosed() { // lost: take a fresh one next time
			a.conn.Release()
			a.conn = nil
		}
	}()
	// Rows and locks are taken in a stable order (the order id), so two partitions'
	// transactions touching the same orders wait for each other instead of deadlocking:
	// within each Apply. A batch of several Sets locks each Set's rows in turn, and should
	// two such batches deadlock (the same records in two members' hands for a moment of a
	// rebalance), PostgreSQL fails one, whose records are then applied one by one.
	slices.SortStableFunc(batch, func(a, b applyReq) int { return strings.Compare(a.msg.Subject, b.msg.Subject) })
	var plain, inboxOnly []applyReq // their inbox rows in the inbox statement
	stmtReqs := map[statementSet][]applyReq{}
	var stmts []statementSet // in the order of their first row
	for _, req := range batch {
		switch s, ok := req.apply.set.(statementSet); {
		case ok:
			if stmtReqs[s] == nil {
				stmts = append(stmts, s)
			}
			stmtReqs[s] = append(stmtReqs[s], req)
		case req.apply.fn == nil && req.apply.set == nil:
			inboxOnly = append(inboxOnly, req)
		default:
			plain = append(plain, req)
		}
	}
	var o outcome
	var err error
	if len(stmts) == 1 && len(plain) == 0 {
		o = outcome{counts: map[count]int{}}
		err = a.statement(ctx, a.conn, stmts[0], stmtReqs[stmts[0]], inboxOnly, &o)
	} else {
		err = pgx.BeginFunc(ctx, a.conn, func(ptx pgx.Tx) error {
			o = outcome{counts: map[count]int{}}
			return a.applyIn(ctx, &emitTx{Tx: ptx}, slices.Concat(plain, inboxOnly), stmts, stmtReqs, &o)
		})
	}
	if err != nil {
		return err
	}
	switch {
	case o.emitted > 0 && r.WakeSoon:
		r.Waker.WakeSoon()
	case o.emitted > 0:
		r.Waker.Wake()
	}
	for c, n := range o.counts {
		r.Metrics.outcome(r.Group, c.topic, c.outcome, n)
	}
	for _, set := range o.sets {
		if c, ok := set.(committer); ok {
			c.committed(o.setRows[set])
		}
	}
	for _, run := range o.stmts {
		run.set.recorded(run.rows, run.recorded)
	}
	return nil
}

// applyIn runs, in tx, the Applies of reqs, guarded by one inbox statement, then those of
// stmts, each set's in its own statement.
func (a *applier) applyIn(ctx context.Context, tx *emitTx, reqs []applyReq, stmts []statementSet, stmtReqs map[statementSet][]applyReq, o *outcome) error {
	if len(reqs) > 0 {
		ids := make([]string, len(reqs))
		for i, req := range reqs {
			ids[i] = req.msg.ID
		}
		fresh, err := a.inbox(ctx, tx, ids)
		if err != nil {
			return fmt.Errorf("inbox: %w", err)
		}
		applied := o.tally(reqs, fresh)
		applies := make([]Apply, len(applied))
		for i, req := range applied {
			applies[i] = req.apply
		}
		if o.sets, o.setRows, err = applyEach(ctx, tx, applies); err != nil {
			return err
		}
	}
	for _, set := range stmts {
		if err := a.statement(ctx, tx, set, stmtReqs[set], nil, o); err != nil {
			return err
		}
	}
	n, err := tx.flush(ctx)
	o.emitted += n
	return err
}
