package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/devstack/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// things is a table of a fresh database, two "a" and one "b", and a pool on it.
func things(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := testenv.Pool(t)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE things (status text NOT NULL); INSERT INTO things VALUES ('a'), ('a'), ('b')`); err != nil {
		t.Fatal(err)
	}
	return pool
}

const thingsQuery = `SELECT status, count(*)::float8 FROM things GROUP BY status`

// run runs r's readings until the test ends, and returns once the first ones are taken.
func run(t *testing.T, r *metrics.Registry) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	r.Wait(wctx)
}

// scraper serves r as a service does.
func scraper(r *metrics.Registry) func(t *testing.T) string {
	e := echo.New()
	r.Serve(e)
	return func(t *testing.T) string {
		t.Helper()
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, metrics.Path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /metrics = %d:\n%s", rec.Code, body)
		}
		return string(body)
	}
}

// A scrape answers from the last reading: a hundred of them take no connection from the
// pool, and the very first already serves every series, a known status without rows at 0.
func TestAScrapeRunsNoQuery(t *testing.T) {
	pool := things(t)
	r, err := metrics.New("svc")
	if err != nil {
		t.Fatal(err)
	}
	r.Interval = time.Hour // the first reading only
	reg := r.Registerer("svc")
	if err := metrics.Pool(reg, pool); err != nil {
		t.Fatal(err)
	}
	if err := metrics.Tally(reg, pool, "things", "Things by status.", []string{"status"}, thingsQuery, []string{"lost"}); err != nil {
		t.Fatal(err)
	}
	if err := metrics.Tally(reg, pool, "things_answer", "The answer.", nil, `SELECT 42::float8`); err != nil {
		t.Fatal(err)
	}
	run(t, r)
	scrape := scraper(r)

	before := pool.Stat().AcquireCount()
	first := scrape(t)
	for range 99 {
		scrape(t)
	}
	if after := pool.Stat().AcquireCount(); after != before {
		t.Errorf("100 scrapes acquired %d connections from the pool, want none", after-before)
	}
	for _, want := range []string{
		`orderflow_things{service="svc",status="a"} 2`, `orderflow_things{service="svc",status="b"} 1`,
		`orderflow_things{service="svc",status="lost"} 0`, `orderflow_things_answer{service="svc"} 42`,
		`orderflow_db_pool_acquires_total{service="svc"} `,
	} {
		if !strings.Contains(first, "\n"+want) {
			t.Errorf("the first scrape has no %s", want)
		}
	}
	if at := stamp(t, first, "things"); at <= 0 {
		t.Errorf("the first scrape says things were last read at %v, want the reading's time", at)
	}
}

// A reading not taken yet is served as such, not left out: NaN for its series, 0 for
// when it last succeeded.
func TestAReadingNotYetTakenIsServedAsNaN(t *testing.T) {
	pool := testenv.Pool(t) // no table things: every reading fails
	r, err := metrics.New("svc")
	if err != nil {
		t.Fatal(err)
	}
	reg := r.Registerer("svc")
	if err := metrics.Tally(reg, pool, "things", "Things by status.", []string{"status"}, thingsQuery, []string{"lost"}); err != nil {
		t.Fatal(err)
	}
	if err := metrics.Tally(reg, pool, "things_oldest_seconds", "Age of the oldest thing.", nil, `SELECT min(age) FROM things`); err != nil {
		t.Fatal(err)
	}
	body := scraper(r)(t)
	for _, want := range []string{`orderflow_things{service="svc",status="lost"} NaN`, `orderflow_things_oldest_seconds{service="svc"} NaN`} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("before any reading, no %s:\n%s", want, body)
		}
	}
	if at := stamp(t, body, "things"); at != 0 {
		t.Errorf("things last read at %v before any reading, want 0", at)
	}
}

// A reading that fails keeps serving the last values it read, and its timestamp stops,
// while another reading goes on; once it reads again, both move on.
func TestAFailingReadingKeepsItsLastValues(t *testing.T) {
	pool := things(t)
	r, err := metrics.New("svc")
	if err != nil {
		t.Fatal(err)
	}
	r.Interval = 20 * time.Millisecond
	reg := r.Registerer("svc")
	if err := metrics.Tally(reg, pool, "things", "Things by status.", []string{"status"}, thingsQuery); err != nil {
		t.Fatal(err)
	}
	if err := metrics.Tally(reg, pool, "clock_seconds", "The database's clock.", nil, `SELECT extract(epoch FROM clock_timestamp())::float8`); err != nil {
		t.Fatal(err)
	}
	run(t, r)
	scrape := scraper(r)
	if stamp(t, scrape(t), "things") <= 0 {
		t.Fatalf("things not read")
	}

	ctx := context.Background()
	if _, err := pool.Exec(ctx, `ALTER TABLE things RENAME TO gone`); err != nil {
		t.Fatal(err)
	}
	// clocks waits for n more readings of the clock: as many of things fail meanwhile.
	clocks := func(n int) {
		clock := stamp(t, scrape(t), "clock_seconds")
		waitFor(t, "readings of the clock", func() bool {
			return stamp(t, scrape(t), "clock_seconds") > clock+float64(time.Duration(n)*r.Interval)/1e9
		})
	}
	clocks(3) // a reading of things under way at the rename has ended
	failing := stamp(t, scrape(t), "things")
	clocks(10)
	body := scrape(t)
	for _, want := range []string{`orderflow_things{service="svc",status="a"} 2`, `orderflow_things{service="svc",status="b"} 1`} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("while things cannot be read, no %s:\n%s", want, body)
		}
	}
	if at := stamp(t, body, "things"); at != failing {
		t.Errorf("things last read at %v, then at %v while its readings fail: the timestamp must stop", failing, at)
	}

	if _, err := pool.Exec(ctx, `ALTER TABLE gone RENAME TO things; INSERT INTO things VALUES ('b')`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "things read again", func() bool {
		body := scrape(t)
		return strings.Contains(body, "\n"+`orderflow_things{service="svc",status="b"} 2`+"\n") && stamp(t, body, "things") > failing
	})
}

// A slow tally is taken less often, so its share of the database's time stays small
// however slow it gets (a count over a table that keeps growing), and so is one that
// fails after a while; a quick one beside them is taken every Interval as before. A
// count runs in one backend.
func TestASlowTallyIsTakenLessOften(t *testing.T) {
	pool := testenv.Pool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE SEQUENCE slow_reads; CREATE SEQUENCE failing_reads; CREATE SEQUENCE quick_reads`); err != nil {
		t.Fatal(err)
	}
	r, err := metrics.New("svc")
	if err != nil {
		t.Fatal(err)
	}
	r.Interval = 5 * time.Millisecond
	reg := r.Registerer("svc")
	// Each reading serves how many times it was taken; the failing one counts in its
	// sequence, which a rollback does not undo.
	for name, query := range map[string]string{
		"slow_reads":    `SELECT nextval('slow_reads')::float8 FROM pg_sleep(0.1)`,
		"failing_reads": `SELECT nextval('failing_reads')::float8 / 0 FROM pg_sleep(0.1)`,
		"quick_reads":   `SELECT nextval('quick_reads')::float8`,
		// Parallel workers would take several cores' time.
		"workers": `SELECT current_setting('max_parallel_workers_per_gather')::float8`,
	} {
		if err := metrics.Tally(reg, pool, name, "A test's tally.", nil, query); err != nil {
			t.Fatal(err)
		}
	}
	run(t, r)
	time.Sleep(2 * time.Second)
	body := scraper(r)(t)
	var failing float64
	if err := pool.QueryRow(ctx, `SELECT last_value::float8 FROM failing_reads`).Scan(&failing); err != nil {
		t.Fatal(err)
	}
	// Taken every Interval, each 100 ms query would have been taken some 20 times;
	// spaced, once (the next 5 s later).
	for name, n := range map[string]float64{"slow": value(t, body, "orderflow_slow_reads"), "failing": failing} {
		if n > 2 {
			t.Errorf("a %s tally that takes 100 ms was taken %v times in 2 s; want once, the next 5 s later", name, n)
		}
	}
	if quick := value(t, body, "orderflow_quick_reads"); quick < 3 {
		t.Errorf("a quick tally beside it was taken %v times in 2 s; want it taken again and again", quick)
	}
	if w := value(t, body, "orderflow_workers"); w != 0 {
		t.Errorf("a tally may take %v parallel workers; want none", w)
	}
}

// value is the value of the one series of name in a scrape's body.
func value(t *testing.T, body, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\{[^}]*\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Only a Registry runs readings: one registered elsewhere would never be read.
func TestABackgroundReadingNeedsARegistry(t *testing.T) {
	err := metrics.Background(prometheus.NewRegistry(), metrics.Reading{
		Name: "x", Descs: []*prometheus.Desc{prometheus.NewDesc("orderflow_x", "X.", nil, nil)},
		Read: func(context.Context) ([]prometheus.Metric, error) { return nil, nil },
	})
	if err == nil {
		t.Fatal("a reading registered with a plain prometheus registry was accepted")
	}
}

var stampLine = regexp.MustCompile(`(?m)^orderflow_metrics_reading_last_success_timestamp_seconds\{reading="([^"]+)",service="svc"\} (\S+)$`)

// stamp is when body says the reading name last succeeded.
func stamp(t *testing.T, body, name string) float64 {
	t.Helper()
	for _, m := range stampLine.FindAllStringSubmatch(body, -1) {
		if m[1] == name {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no timestamp of the reading %s in:\n%s", name, body)
	return 0
}

// waitFor waits up to 10 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !testenv.Eventually(10*time.Second, 10*time.Millisecond, cond) {
		t.Fatalf("no %s after 10 s", what)
	}
}
