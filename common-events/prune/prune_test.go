package prune_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/orderflow/common-events/prune"
	"github.com/orderflow/devstack/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Rows past their time go a batch per statement, all of them, and nothing else does.
func TestRowsGoABatchAtATime(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	old := 2*prune.Batch + 500
	for _, sql := range []string{`CREATE TABLE kept (n int NOT NULL, at timestamptz NOT NULL)`,
		`INSERT INTO kept SELECT n, now() - interval '8 days' FROM generate_series(1, ` + strconv.Itoa(old) + `) n`,
		`INSERT INTO kept SELECT n, now() FROM generate_series(1, 7) n`} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	traced, sent := testenv.TracedPool(t, pool)
	n, err := prune.Rows(ctx, traced, "kept", "at < now() - $1::interval", "at", "7 days")
	if err != nil || n != int64(old) {
		t.Fatalf("Rows = %d, %v; want %d deleted", n, err, old)
	}
	var left, recent int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE at > now() - interval '1 day') FROM kept`).Scan(&left, &recent); err != nil {
		t.Fatal(err)
	}
	if left != 7 || recent != 7 {
		t.Errorf("%d rows left, %d of them recent; want the 7 recent ones", left, recent)
	}
	if got := sent.Count(`DELETE FROM "kept"`); got != 3 {
		t.Errorf("%d statements deleted %d rows; want 3, %d at most each", got, old, prune.Batch)
	}
}
