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
// the password compose gives it, and no other service's role may connect to it.
func TestComposePostgresInitMakesARolePerService(t *testing.T) {
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
			if other == service {
				continue
			}
			if conn, err := pgx.Connect(ctx, c.URLAs(service, otherDB)); err == nil {
				conn.Close(ctx)
				t.Errorf("%s connected to %s", service, otherDB)
			}
		}
	}
}
