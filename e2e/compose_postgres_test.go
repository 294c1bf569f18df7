package e2e

import (
	"context"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/pgcluster"
	"github.com/orderflow/devstack/testenv"
)

// compose's PostgreSQL init script (deploy/postgres/init.sh), run as the postgres image
// runs it, on a fresh server: each service's database is owned by a role of its own, with
// the password compose gives it, and no other service's role may connect to it — but
// reconciliation-service, which may read the payment simulator's ledger there and nothing
// else.
func TestComposePostgresInitMakesARolePerService(t *testing.T) {
	parallel(t)
	root := testenv.Root(t)
	bin, err := pgcluster.BinDir()
	if err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	p, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := osexec.CommandContext(ctx, "bash", filepath.Join(root, "deploy", "postgres", "init.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "PGHOST="+c.Host, "PGPORT="+strconv.Itoa(c.Port))
	for k, v := range p.Services["postgres"].Environment {
		if v != nil {
			cmd.Env = append(cmd.Env, k+"="+*v)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init.sh: %v\n%s", err, out)
	}
	for _, svc := range services.All() {
		service, db := svc.Name, svc.Database
		// The service's URL as compose gives it, pointed at this server.
		env := p.Services[service].Environment["DATABASE_URL"]
		if env == nil || !strings.Contains(*env, "://"+service+":") {
			t.Errorf("%s's DATABASE_URL in compose = %v, want its own role %s", service, env, service)
			continue
		}
		conn, err := pgx.Connect(ctx, c.URLAs(service, db))
		if err != nil {
			t.Errorf("%s to %s: %v", service, db, err)
			continue
		}
		var owner string
		err = conn.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()`).Scan(&owner)
		conn.Close(ctx)
		if err != nil || owner != service {
			t.Errorf("%s is owned by %q (%v), want %s", db, owner, err, service)
		}
		for _, o := range services.All() {
			other, otherDB := o.Name, o.Database
			if other == service || service == services.Reconciliation.Name && otherDB == services.Payment.Database {
				continue // the simulator's ledger, below
			}
			if conn, err := pgx.Connect(ctx, c.URLAs(service, otherDB)); err == nil {
				conn.Close(ctx)
				t.Errorf("%s connected to %s", service, otherDB)
			}
		}
	}

	// reconciliation-service reads the simulator's ledger in payments, and nothing else
	// there: the grant the simulator's schema makes to provider_reader, which init.sh made.
	grant, err := os.ReadFile(filepath.Join(root, "payment-service", "internal", "simulator", "schema", "00002_reader.sql"))
	if err != nil {
		t.Fatal(err)
	}
	up, _, _ := strings.Cut(string(grant), "-- +goose Down")
	asPayment, err := pgx.Connect(ctx, c.URLAs(services.Payment.Name, services.Payment.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer asPayment.Close(ctx)
	for _, q := range []string{`CREATE TABLE provider_charges (idempotency_key text PRIMARY KEY)`, `CREATE TABLE payments (id text PRIMARY KEY)`, up} {
		if _, err := asPayment.Exec(ctx, q); err != nil {
			t.Fatalf("as payment-service: %s: %v", q, err)
		}
	}
	asReconciliation, err := pgx.Connect(ctx, c.URLAs(services.Reconciliation.Name, services.Payment.Database))
	if err != nil {
		t.Fatalf("reconciliation-service to payments: %v", err)
	}
	defer asReconciliation.Close(ctx)
	if _, err := asReconciliation.Exec(ctx, `SELECT count(*) FROM provider_charges`); err != nil {
		t.Errorf("reconciliation-service reads the ledger: %v", err)
	}
	for _, q := range []string{`SELECT count(*) FROM payments`, `INSERT INTO provider_charges VALUES ('x')`} {
		if _, err := asReconciliation.Exec(ctx, q); err == nil {
			t.Errorf("reconciliation-service may %s in payments", q)
		}
	}
}
