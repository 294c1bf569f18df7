package migrations_test

import (
	"context"
	"database/sql"
	"io/fs"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestEachDatabaseMigratesTwiceWithTheSharedPlumbing(t *testing.T) {
	tests := []struct {
		name   string
		fsys   fs.FS
		tables []string
	}{
		{"orders", migrations.Orders, []string{"outbox", "processed_events", "orders", "order_history"}},
		{"payments", migrations.Payments, []string{"outbox", "processed_events", "payments"}},
		{"notifications", migrations.Notifications, []string{"outbox", "processed_events", "notifications"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := sql.Open("pgx", testenv.Database(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			for range 2 { // the second run finds nothing to do
				if err := migrations.Up(ctx, db, tt.fsys); err != nil {
					t.Fatal(err)
				}
			}
			for _, table := range tt.tables {
				var ok bool
				if err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok); err != nil || !ok {
					t.Errorf("table %s missing (%v)", table, err)
				}
			}
		})
	}
}

// Idempotency keys stored before they were per customer take their order's customer, and
// the way back keeps one key per spelling.
func TestIdempotencyKeysBecomePerCustomer(t *testing.T) {
	db, err := sql.Open("pgx", testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.Orders)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	const order, customer = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", issuer.Customer
	if _, err := db.ExecContext(ctx, `
		INSERT INTO orders (id, customer_id, customer_email, currency, items, total_cents, payment_method, status, correlation_id, created_at, updated_at)
		VALUES ($1, $2, 'ada@example.com', 'EUR', '[]', 1, 'tok_visa', 'PENDING_PAYMENT', 'c', now(), now())`, order, customer); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO idempotency_keys (key, request_hash, status, response, order_id) VALUES
		('k1', 'h', 202, '{}', $1), ('orphan', 'h', 202, '{}', '019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e60')`, order); err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	var keys string
	if err := db.QueryRowContext(ctx, `SELECT string_agg(customer_id || '/' || key, ',') FROM idempotency_keys`).Scan(&keys); err != nil || keys != customer+"/k1" {
		t.Errorf("keys after the migration = %q (%v), want %s/k1 (a key without its order cannot be placed and goes)", keys, err, customer)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO idempotency_keys (customer_id, key, request_hash, status, response, order_id)
		VALUES ('9d7e2c1a-4b3f-4e8d-a6c5-1f0e2d3c4b5a', 'k1', 'h', 202, '{}', $1)`, order); err != nil {
		t.Fatalf("another customer's key of the same spelling: %v", err)
	}
	if _, err := p.Down(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM idempotency_keys WHERE key = 'k1'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("after the way back, %d keys k1 (%v), want 1", n, err)
	}
}

// A shared migration is applied in every database after the service's own: its version
// is one no service's migration has, or goose would see two files of one version.
func TestASharedVersionIsNoServicesVersion(t *testing.T) {
	versions := func(dir string) map[string]bool {
		es, err := fs.ReadDir(migrations.FS, dir)
		if err != nil {
			t.Fatal(err)
		}
		vs := map[string]bool{}
		for _, e := range es {
			v, _, _ := strings.Cut(e.Name(), "_")
			vs[v] = true
		}
		return vs
	}
	shared := versions("shared")
	dirs, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if dir.Name() == "shared" {
			continue
		}
		for v := range versions(dir.Name()) {
			if shared[v] {
				t.Errorf("%s/ has a migration %s, a version shared/ holds", dir.Name(), v)
			}
		}
	}
}

// The outbox's headers and the timeline's summaries become json: what was written as
// jsonb reads back the same text, and the way back makes them jsonb again.
func TestHeadersAndSummariesBecomeJSON(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		fsys   fs.FS
		before int64 // the last version with jsonb
		insert string
		read   string
	}{
		{"outbox", migrations.Orders, 7,
			`INSERT INTO outbox (topic, key, headers, payload) VALUES ('t', 'k', '{"ce_type": "order.created", "ce_id": "1"}', '\x7b7d')`,
			`SELECT pg_typeof(headers)::text, headers::text FROM outbox`},
		{"timeline", migrations.Reconciliation, 4,
			`INSERT INTO timeline (event_id, order_id, at, source, event_type, summary)
				VALUES ('e', '019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f', now(), 's', 't', '{"status": "CONFIRMED", "cents": 100}')`,
			`SELECT pg_typeof(summary)::text, summary::text FROM timeline`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := sql.Open("pgx", testenv.Database(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			p, err := goose.NewProvider(goose.DialectPostgres, db, tc.fsys)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, tc.before); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, tc.insert); err != nil {
				t.Fatal(err)
			}
			var typ, was, is string
			if err := db.QueryRowContext(ctx, tc.read).Scan(&typ, &was); err != nil || typ != "jsonb" {
				t.Fatalf("before: %s (%v), want jsonb", typ, err)
			}
			if _, err := p.Up(ctx); err != nil {
				t.Fatal(err)
			}
			if err := db.QueryRowContext(ctx, tc.read).Scan(&typ, &is); err != nil || typ != "json" || is != was {
				t.Errorf("after: %s %s (%v), want json %s", typ, is, err, was)
			}
			if _, err := p.DownTo(ctx, tc.before); err != nil {
				t.Fatal(err)
			}
			if err := db.QueryRowContext(ctx, tc.read).Scan(&typ, &is); err != nil || typ != "jsonb" || is != was {
				t.Errorf("the way back: %s %s (%v), want jsonb %s", typ, is, err, was)
			}
		})
	}
}
