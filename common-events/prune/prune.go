// Package prune deletes rows past their time in batches: a table that a sustained load
// fills by millions of rows an hour (the inbox, the idempotency keys) loses them ten
// thousand to a transaction, not all in one, which would be a burst of WAL beside the
// orders, a long transaction holding back vacuum and, cut short by a timeout, undone
// whole.
package prune

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Batch is the most rows one statement deletes.
const Batch = 10_000

// Execer runs a statement: a pool.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Rows deletes the rows of table that where selects (a condition on its columns, its
// parameters args: SQL the caller writes, never a value from outside), Batch at a time in
// the order of by, an indexed column (their time),
// each batch a transaction of its own, until none is left or ctx ends. In that order each
// batch reads its rows through by's index, past the entries of the batches before it,
// instead of scanning the table from its start. Between batches it rests as long as the
// last one took, so a prune keeps the database at most half busy. It returns how many
// rows it deleted, also when it fails or is cut short: what it deleted stays deleted.
func Rows(ctx context.Context, db Execer, table, where, by string, args ...any) (int64, error) {
	t, b := pgx.Identifier{table}.Sanitize(), pgx.Identifier{by}.Sanitize()
	sql := `DELETE FROM ` + t + ` WHERE ctid = ANY(ARRAY(SELECT ctid FROM ` + t + ` WHERE ` + where +
		` ORDER BY ` + b + ` LIMIT ` + strconv.Itoa(Batch) + `))`
	var deleted int64
	for {
		start := time.Now()
		tag, err := db.Exec(ctx, sql, args...)
		if err != nil {
			return deleted, err
		}
		deleted += tag.RowsAffected()
		if tag.RowsAffected() < Batch {
			return deleted, nil
		}
		select {
		case <-ctx.Done():
			return deleted, ctx.Err()
		case <-time.After(time.Since(start)):
		}
	}
}
