// Package testenv gives integration tests a real PostgreSQL and a real Kafka-protocol
// broker: a throwaway cluster per test binary (or TEST_DATABASE_URL) with a fresh database
// per test, and an in-process kfake broker per test — or, with TEST_BROKER=kafka, one
// Apache Kafka per test binary, emptied for each test (or KAFKA_BROKERS).
package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/pguuid"

	"github.com/orderflow/devstack/pgcluster"
	"github.com/orderflow/devstack/ports"
	"github.com/orderflow/devstack/stack"
)

var adminURL string

// Main runs the package's tests with a PostgreSQL server: TEST_DATABASE_URL (a URL with
// the right to create databases) when set, else a throwaway cluster that is removed after.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit: it returns the tests' exit code, for a TestMain with more
// to set up and tear down around them.
func Run(m *testing.M) int {
	defer stopSharedKafka()
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		adminURL = u
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "orderflow-pg-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Fast: true})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv: start PostgreSQL:", err)
		return 1
	}
	defer c.Stop()
	adminURL = c.URL("postgres")
	return m.Run()
}

// Database creates an empty database for this test and returns its URL; it is dropped
// when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	if adminURL == "" {
		t.Fatal("testenv: call testenv.Main(m) from TestMain")
	}
	name := fmt.Sprintf("t_%d_%x", time.Now().Unix(), rand.Uint64())
	ctx := context.Background()
	if err := pgcluster.CreateDatabases(ctx, adminURL, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Logf("testenv: drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("testenv: TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Pool opens a pool on a fresh database for this test, closed when the test ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return newPool(t, 0)
}

// SessionPool is Pool with one connection: everything the test does through it runs in
// one session of PostgreSQL's, which GenericPlans can then ask about.
func SessionPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return newPool(t, 1)
}

// newPool is a pool on a database of the test's own, of at most maxConns connections (0:
// pgxpool's default), encoding as the services' pools do (pguuid).
func newPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(Database(t))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.AfterConnect = pguuid.AfterConnect
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// PlannedCalls is how many times a plan test runs its statement: PostgreSQL plans a
// prepared statement's first five calls for their arguments and then keeps its generic
// plan if that looks no dearer, so the last four calls show which plan it kept.
const PlannedCalls = 9

// WantGenericPlans fails the test unless the prepared statement whose text holds fragment
// ran with its generic plan, made once, in at least its last four calls in session (a
// pgx.Conn, or a SessionPool), as pg_prepared_statements counts them. It fails too when no
// statement or more than one holds fragment.
func WantGenericPlans(t testing.TB, session interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, fragment string) {
	t.Helper()
	rows, _ := session.Query(context.Background(), `SELECT generic_plans, custom_plans FROM pg_prepared_statements
		WHERE strpos(statement, $1) > 0`, fragment)
	plans, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (p [2]int64, err error) { return p, r.Scan(&p[0], &p[1]) })
	if err != nil {
		t.Fatalf("testenv: prepared statements: %v", err)
	}
	if len(plans) != 1 {
		t.Fatalf("testenv: %d prepared statements hold %q, want one", len(plans), fragment)
	}
	if generic, custom := plans[0][0], plans[0][1]; generic < PlannedCalls-5 {
		t.Errorf("%s…: %d generic plans and %d custom ones, want the last %d calls generic", fragment, generic, custom, PlannedCalls-5)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on right now, given out
// once per test binary, from below the kernel's ephemeral range (devstack/ports says why).
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := ports.Free()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return port
}

// Root is the repository, found from the test's working folder (stack.FindRoot).
func Root(t testing.TB) string {
	t.Helper()
	root, err := stack.FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// Eventually asks done every every until it says yes or within has passed, and returns
// its last answer: the one way tests wait for something to happen.
func Eventually(within, every time.Duration, done func() bool) bool {
	deadline := time.Now().Add(within)
	for !done() {
		if time.Now().After(deadline) {
			return done()
		}
		time.Sleep(every)
	}
	return true
}

// HoldWrites keeps every write to table waiting, from a transaction on a connection of
// its own to pool's database (the pool's stay free for the writers): the writers that
// come meanwhile queue up, as they do behind a slow commit. It returns once the lock is
// held. The function it returns lets the writes go once one writer waits for the lock
// and the others have had 200 ms to queue behind it; the test's end lets them go anyway.
func HoldWrites(t testing.TB, pool *pgxpool.Pool, table string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{table}.Sanitize()+" IN EXCLUSIVE MODE"); err != nil {
		_ = tx.Rollback(ctx)
		t.Fatal(err)
	}
	var once sync.Once
	commit := func() { once.Do(func() { _ = tx.Commit(ctx) }) }
	t.Cleanup(commit)
	return func() {
		t.Helper()
		waitForLockWaiter(t, pool)
		time.Sleep(200 * time.Millisecond)
		commit()
	}
}

// waitForLockWaiter waits until a session on pool's database waits for a lock. It asks
// on a connection of its own: the pool's may all be waiting.
func waitForLockWaiter(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if !Eventually(10*time.Second, 5*time.Millisecond, func() bool {
		var waiting int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting > 0
	}) {
		t.Fatal("no session came to wait for the lock")
	}
}
