package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/testenv"
)

// A bad setting stops each service at start-up with one line naming it.
func TestBadSettingsStopStartUpWithOneClearLine(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"KAFKA_TOPIC_PARTITIONS": "six"}, `KAFKA_TOPIC_PARTITIONS: want an integer from 1 to 1000, got "six"`},
		{map[string]string{"DATABASE_URL": "mysql://db/orders"}, "DATABASE_URL: want a postgres:// URL"},
		{map[string]string{"HTTP_ADDR": "8080"}, "HTTP_ADDR: want [host]:port"},
		{map[string]string{"PROVIDER_TRANSIENT_FAILURE_RATE": "2"}, "PROVIDER_TRANSIENT_FAILURE_RATE"},
		{map[string]string{"SMTP_ADDR": "mail"}, "SMTP_ADDR"},
		{map[string]string{"PAYMENT_PROVIDER": "paypal"}, `PAYMENT_PROVIDER: want one of simulator, stripe, got "paypal"`},
		{map[string]string{"PAYMENT_PROVIDER": "stripe"}, "STRIPE_API_KEY: required (or STRIPE_API_KEY_FILE, a file that holds it)"},
		{map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_API_KEY": "sk_test_1", "STRIPE_API_BASE": "localhost:12111"}, `STRIPE_API_BASE: want an http:// or https:// URL, got "localhost:12111"`},
		{map[string]string{"AUTH_JWKS_URL": "issuer/jwks.json"}, `AUTH_JWKS_URL: want an http:// or https:// URL, got "issuer/jwks.json"`},
		{map[string]string{"AUTH_AUDIENCE": "orderflow"}, "AUTH_ISSUER: required but not set"},
	}
	for name, run := range runs {
		for _, tt := range tests {
			keys := slices.Sorted(maps.Keys(tt.env))
			only := "" // the one service that reads these settings, if one
			for _, k := range keys {
				switch {
				case strings.Contains(k, "PROVIDER"), strings.HasPrefix(k, "STRIPE_"):
					only = "payment"
				case k == "SMTP_ADDR":
					only = "notification"
				}
			}
			if only != "" && only != name {
				continue
			}
			t.Run(name+"/"+strings.Join(keys, "+"), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err := run(ctx, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
				if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("%s-service with %v: err = %v, want one line containing %q", name, tt.env, err, tt.want)
				}
			})
		}
	}
}

func TestUnreachableDependenciesAndBusyPortsAreNamed(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	db := testenv.Database(t)
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"port in use", map[string]string{"HTTP_ADDR": busy.Addr().String()}, "listen on HTTP_ADDR " + busy.Addr().String()},
		{"no database", map[string]string{"HTTP_ADDR": "127.0.0.1:0", "DATABASE_URL": "postgres://postgres@" + dead + "/orders?connect_timeout=2"}, "database at DATABASE_URL"},
		{"no broker", map[string]string{"HTTP_ADDR": "127.0.0.1:0", "DATABASE_URL": db, "KAFKA_BROKERS": dead}, "KAFKA_BROKERS"},
	}
	for _, tt := range tests {
		for k, v := range authEnv() {
			tt.env[k] = v
		}
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := runs["order"](ctx, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestHealthAndReadiness(t *testing.T) {
	parallel(t)
	s := newStack(t, testenv.Kafka(t), nil)
	for name := range runs {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := client.Get(s.url(name, path))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s-service %s = %d", name, path, resp.StatusCode)
			}
		}
		resp, err := client.Get(s.url(name, "/no-such-route"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s-service unknown route = %d %s, want 404 problem+json", name, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	for _, path := range []string{"/payments", "/payments?order_id=42"} {
		resp, err := client.Get(s.url("payment", path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Errorf("GET %s = %d, want 422", path, resp.StatusCode)
		}
	}
}

// Each service connects as a role of its own that owns its database — every table in it,
// migrations included — and can connect to no other: payment-service's role cannot read
// the orders. They all connected as the superuser before. The one exception:
// reconciliation-service reads the simulator's ledger in payments, and nothing else there.
func TestStartupEachServiceOwnsItsDatabaseAlone(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	pg := tg.control().Postgres
	ctx := context.Background()
	for _, svc := range services.All() {
		service, db := svc.Name, svc.Database
		conn, err := pgx.Connect(ctx, pg.URLAs(service, db))
		if err != nil {
			t.Fatalf("%s to its own database: %v", service, err)
		}
		var super bool
		var tables, others int
		err = conn.QueryRow(ctx, `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
			(SELECT count(*) FROM pg_tables WHERE schemaname = 'public'),
			(SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> current_user)`).Scan(&super, &tables, &others)
		conn.Close(ctx)
		if err != nil || super || tables == 0 || others != 0 {
			t.Errorf("%s in %s: superuser %v, %d tables, %d of them another's (%v); want its own role owning them all", service, db, super, tables, others, err)
		}
		for _, o := range services.All() {
			other, otherDB := o.Name, o.Database
			if other == service {
				continue
			}
			if service == services.Reconciliation.Name && otherDB == services.Payment.Database {
				// The simulator's ledger there, through provider_reader: that table alone.
				conn, err := pgx.Connect(ctx, pg.URLAs(service, otherDB))
				if err != nil {
					t.Fatalf("%s to the simulator's ledger in %s: %v", service, otherDB, err)
				}
				if _, err := conn.Exec(ctx, `SELECT count(*) FROM provider_charges`); err != nil {
					t.Errorf("%s reads the simulator's ledger: %v", service, err)
				}
				for _, q := range []string{`SELECT count(*) FROM payments`, `SELECT count(*) FROM provider_refunds`, `DELETE FROM provider_charges`} {
					if _, err := conn.Exec(ctx, q); err == nil {
						t.Errorf("%s may %s in %s", service, q, otherDB)
					}
				}
				conn.Close(ctx)
				continue
			}
			conn, err := pgx.Connect(ctx, pg.URLAs(service, otherDB))
			if err == nil {
				conn.Close(ctx)
				t.Errorf("%s connected to %s's database %s", service, other, otherDB)
			} else if !strings.Contains(err.Error(), "permission denied for database") {
				t.Errorf("%s to %s: %v, want permission denied", service, otherDB, err)
			}
		}
	}
}
