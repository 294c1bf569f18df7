package consumer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// applyTx runs batch's Applies in one transaction, each guarded by the inbox: one
// statement records every event id and says which were new. It is not cut short when the
// session ends: the records in flight finish, within ctx (HandlerTimeout). It leaves
// a.conn nil when it has no connection to the database: none could be had, or it was lost.
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
	// transactions touching the same orders wait for each other instead of deadlocking.
	slices.SortStableFunc(batch, func(a, b applyReq) int { return strings.Compare(a.msg.Subject, b.msg.Subject) })
	ids := make([]string, len(batch))
	for i, req := range batch {
		ids[i] = req.msg.ID
	}
	type count struct{ topic, outcome string }
	var counts map[count]int // what the transaction did, told once it committed
	var setRows map[Set][]any
	var sets []Set // in the order of their first row
	emitted := 0
	err := pgx.BeginFunc(ctx, a.conn, func(ptx pgx.Tx) error {
		counts, setRows, sets = map[count]int{}, map[Set][]any{}, nil
		tx := &emitTx{Tx: ptx}
		inserted, err := a.inbox(ctx, tx, ids)
		if err != nil {
			return fmt.Errorf("inbox: %w", err)
		}
		fresh := make(map[string]bool, len(inserted))
		for _, id := range inserted {
			fresh[id] = true
		}
		for _, req := range batch {
			if !fresh[req.msg.ID] {
				req.msg.Log.Info("duplicate event skipped")
				counts[count{req.msg.Topic, OutcomeDuplicate}]++
				continue
			}
			delete(fresh, req.msg.ID) // the same event twice in one batch applies once
			counts[count{req.msg.Topic, OutcomeApplied}]++
			switch a := req.apply; {
			case a.fn != nil:
				if err := a.fn(ctx, tx); err != nil {
					return err
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
				return err
			}
		}
		emitted, err = tx.flush(ctx)
		return err
	})
	if err == nil {
		if emitted > 0 {
			r.Waker.Wake()
		}
		for c, n := range counts {
			r.Metrics.outcome(r.Group, c.topic, c.outcome, n)
		}
		for _, set := range sets {
			if c, ok := set.(committer); ok {
				c.committed(setRows[set])
			}
		}
	}
	return err
}
