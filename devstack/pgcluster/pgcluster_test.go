package pgcluster_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/devstack/pgcluster"
	"github.com/orderflow/devstack/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A database made before the services had roles of their own — its tables, sequences and
// functions the superuser's, as devstack's data folders of before hold them — is handed
// over whole to the service's role; doing it again changes nothing. (That no other
// service's role may connect to it is e2e's TestStartupEachServiceOwnsItsDatabaseAlone.)
func TestOwnDatabaseHandsOverWhatWasMadeBefore(t *testing.T) {
	ctx := context.Background()
	dbURL := testenv.Database(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	db := u.Path[1:]
	admin := *u
	admin.Path = "/postgres"
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE things (id bigserial PRIMARY KEY, n int);
		CREATE SEQUENCE loose; CREATE VIEW big AS SELECT * FROM things WHERE n > 10;
		CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS 'SELECT 2 * x'`); err != nil {
		t.Fatal(err)
	}
	role := fmt.Sprintf("svc-%x", rand.Uint32())
	for range 2 {
		if err := pgcluster.OwnDatabase(ctx, admin.String(), dbURL, role, db); err != nil {
			t.Fatal(err)
		}
	}
	var others []string
	rows, _ := conn.Query(ctx, `
		SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> $1 AND c.relkind IN ('r', 'S', 'v')
		UNION ALL SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1
		UNION ALL SELECT datname FROM pg_database WHERE datname = $2 AND pg_get_userbyid(datdba) <> $1`, role, db)
	if others, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || len(others) > 0 {
		t.Errorf("still another's: %v (%v)", others, err)
	}
	as := *u
	as.User = url.User(role)
	own, err := pgx.Connect(ctx, as.String())
	if err != nil {
		t.Fatalf("the role to its database: %v", err)
	}
	defer own.Close(ctx)
	if _, err := own.Exec(ctx, `INSERT INTO things (n) VALUES (twice(21)); SELECT nextval('loose'); SELECT * FROM big`); err != nil {
		t.Errorf("the role using what it was handed: %v", err)
	}
}

// A statement planned while its table was nearly empty reads the table whole to find a
// row by key (PostgreSQL keeps a prepared statement's generic plan until the table is
// next analyzed); once the table has filled, the cluster's autovacuum analyzes it within
// seconds and the statement finds its rows through the index. With autovacuum's default
// minute between looks this waits far longer than the test does.
func TestAStatementPlannedOnAnEmptyTableFindsByIndexOnceItFills(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := ownServersDatabase(t)
	if _, err := conn.Exec(ctx, `CREATE TABLE things (id uuid PRIMARY KEY, n int);
		INSERT INTO things SELECT gen_random_uuid(), g FROM generate_series(1, 10) g;
		ANALYZE things;
		SET plan_cache_mode = force_generic_plan;
		PREPARE find(uuid[]) AS SELECT n FROM things WHERE id = ANY($1)`); err != nil {
		t.Fatal(err)
	}
	plan := func() string {
		var p string
		if err := conn.QueryRow(ctx, `EXPLAIN (COSTS OFF) EXECUTE find(ARRAY[gen_random_uuid()])`).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := plan(); !strings.Contains(p, "Seq Scan") {
		t.Fatalf("on the nearly empty table the plan is %q; this test needs one that reads it whole", p)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO things SELECT gen_random_uuid(), g FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p := plan(); strings.Contains(p, "Seq Scan"); p = plan() {
		if time.Now().After(deadline) {
			t.Fatalf("20 s after the table filled, finding a row by key still reads it whole: %q", p)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Autovacuum, looking every second, does not analyze a table again each time a tenth more
// of it has changed (the default scale factor, which would have a bench's tables sampled
// and sorted every second or two): a table that grew by a third keeps its statistics
// through several of autovacuum's looks.
func TestAGrowingTableIsNotAnalyzedAgainForEveryTenthMore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := ownServersDatabase(t)
	grow := func(n int) {
		t.Helper()
		if _, err := conn.Exec(ctx, `INSERT INTO things (n) SELECT g FROM generate_series(1, $1) g`, n); err != nil {
			t.Fatal(err)
		}
	}
	analyzed := func() (n int64) {
		t.Helper()
		if err := conn.QueryRow(ctx, `SELECT autoanalyze_count FROM pg_stat_user_tables WHERE relname = 'things'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE things (id bigserial PRIMARY KEY, n int)`); err != nil {
		t.Fatal(err)
	}
	grow(1000)
	for deadline := time.Now().Add(20 * time.Second); analyzed() == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a new table of 1000 rows not analyzed within 20 s")
		}
	}
	grow(300)
	// Polled, not slept on: a session reports what it wrote once its transactions end a
	// second apart, or after ten seconds idle.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if n := analyzed(); n != 1 {
			t.Fatalf("a table a third larger was analyzed again (%d analyzes in all)", n)
		}
	}
}

// ownServersDatabase connects to a new database on the server this package started, for a
// test of that server's settings; it skips the test on a server given by TEST_DATABASE_URL.
func ownServersDatabase(t *testing.T) *pgx.Conn {
	t.Helper()
	if os.Getenv("TEST_DATABASE_URL") != "" {
		t.Skip("TEST_DATABASE_URL: a server this package did not start, with settings of its own")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}
