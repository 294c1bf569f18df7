package migrations_test

import (
	"context"
	"database/sql"
	"io/fs"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

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
		{"payments", migrations.Payments, []string{"outbox", "processed_events", "payments", "provider_charges", "provider_refunds"}},
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
