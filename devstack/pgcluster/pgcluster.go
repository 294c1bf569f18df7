// Package pgcluster runs a throwaway PostgreSQL cluster from the machine's PostgreSQL
// binaries: initdb into a folder, then the postmaster as a child process that dies with
// its parent. As root it runs them as the postgres user, since PostgreSQL refuses root.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/devstack/ports"
)

// Options says where and how the cluster runs.
type Options struct {
	Dir  string // the cluster's folder: data/, the socket and the log live here
	Host string // default 127.0.0.1
	Port int    // 0 picks a free port
	// Fast trades durability for speed (fsync off): for tests, never for data you keep.
	Fast bool
	// Stats loads pg_stat_statements, so a benchmark can count the statements each
	// database ran (CREATE EXTENSION pg_stat_statements to read them).
	Stats bool
	Log   io.Writer // the postmaster's output; default a log file in Dir
}

// Cluster is a running PostgreSQL server.
type Cluster struct {
	Host string
	Port int
	cmd  *exec.Cmd
	done chan error
	// launch starts the server process again, as Start did (for Restart).
	launch func() (*exec.Cmd, error)
}

// ErrNoBinaries says PostgreSQL is not installed where we look.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: install Debian's postgresql package (apt-get install postgresql), set PG_BIN to their folder, or point DATABASE_URL at a running server")

// BinDir finds the folder holding initdb and postgres: $PG_BIN, the newest
// /usr/lib/postgresql/*/bin, or the folder of initdb on PATH.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("PG_BIN %s: %w", d, err)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNoBinaries
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start initialises the cluster if Dir holds none yet, starts it and waits until it
// accepts connections.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		if o.Port, err = ports.Free(); err != nil { // below the ephemeral range (devstack/ports)
			return nil, err
		}
	}
	if err := portFree(o.Host, o.Port); err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(o.Dir, "data")
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := chownTree(o.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
		if err := traversable(o.Dir); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
			"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb: %w: %s", err, out)
		}
	}
	args := []string{"-D", data, "-p", strconv.Itoa(o.Port), "-k", o.Dir,
		"-c", "listen_addresses=" + o.Host, "-c", "max_connections=500", "-c", "shared_buffers=256MB"}
	args = append(args, silentClients...)
	args = append(args, freshPlans...)
	if o.Fast {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	}
	if o.Stats {
		args = append(args, "-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.max=10000")
	}
	launch := func() (*exec.Cmd, error) {
		cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		if o.Log != nil {
			cmd.Stdout, cmd.Stderr = o.Log, o.Log
		} else {
			f, err := os.OpenFile(filepath.Join(o.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return nil, err
			}
			defer f.Close() // the child holds its own descriptor
			cmd.Stdout, cmd.Stderr = f, f
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		return cmd, nil
	}
	cmd, err := launch()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Host: o.Host, Port: o.Port, cmd: cmd, done: make(chan error, 1), launch: launch}
	go func() { c.done <- cmd.Wait() }()
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case werr := <-c.done:
			c.done <- werr
			return fmt.Errorf("postgres exited at start (%v); see its log", werr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres on %s:%d not ready after 60s: %w", c.Host, c.Port, err)
		}
	}
}

// URL is the connection URL of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", c.Host, c.Port, db)
}

// CreateDatabases creates each database that does not exist yet.
func (c *Cluster) CreateDatabases(ctx context.Context, names ...string) error {
	return CreateDatabases(ctx, c.URL("postgres"), names...)
}

// URLAs is the connection URL of database db for role.
func (c *Cluster) URLAs(role, db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", url.PathEscape(role), c.Host, c.Port, db)
}

// OwnDatabase makes role (created if missing, with LOGIN) the owner of database db and of
// everything in its public schema, and the only role besides superusers that may connect
// to it: one service's role reads and migrates its own database, and no other. A database
// made before, its objects the superuser's, is handed over the same way.
func (c *Cluster) OwnDatabase(ctx context.Context, role, db string) error {
	return OwnDatabase(ctx, c.URL("postgres"), c.URL(db), role, db)
}

// ProviderReader makes provider_reader (NOLOGIN), which may connect to db, and grants it
// to each of roles: the payment simulator's schema grants it SELECT on its ledger table,
// the provider's records that reconciliation reads.
func (c *Cluster) ProviderReader(ctx context.Context, db string, roles ...string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	stmts := []string{`DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'provider_reader') THEN CREATE ROLE provider_reader NOLOGIN; END IF;
		END $$`, "GRANT CONNECT ON DATABASE " + pgx.Identifier{db}.Sanitize() + " TO provider_reader"}
	for _, r := range roles {
		stmts = append(stmts, "GRANT provider_reader TO "+pgx.Identifier{r}.Sanitize())
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("provider_reader: %s: %w", q, err)
		}
	}
	return nil
}

// OwnDatabase is Cluster.OwnDatabase through the server's adminURL; dbURL reaches db as a
// superuser.
func OwnDatabase(ctx context.Context, adminURL, dbURL, role, db string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	r, d := pgx.Identifier{role}.Sanitize(), pgx.Identifier{db}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return err
	}
	stmts := []string{"ALTER DATABASE " + d + " OWNER TO " + r, "REVOKE ALL ON DATABASE " + d + " FROM PUBLIC", "GRANT CONNECT ON DATABASE " + d + " TO " + r}
	if !exists {
		stmts = append([]string{"CREATE ROLE " + r + " LOGIN"}, stmts...)
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("database %s for %s: %s: %w", db, role, q, err)
		}
	}
	in, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer in.Close(ctx)
	// What the superuser made in public (tables, sequences, views, functions), made over.
	_, err = in.Exec(ctx, `
		DO $$
		DECLARE o record;
		BEGIN
			FOR o IN
				SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind,
					format('%I.%I', n.nspname, c.relname) AS name
				FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm') AND pg_get_userbyid(c.relowner) <> `+quoteLiteral(role)+`
				  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
			LOOP
				EXECUTE format('ALTER %s %s OWNER TO %I', o.kind, o.name, `+quoteLiteral(role)+`);
			END LOOP;
			FOR o IN
				SELECT p.oid::regprocedure::text AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
				WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> `+quoteLiteral(role)+`
			LOOP
				EXECUTE format('ALTER ROUTINE %s OWNER TO %I', o.name, `+quoteLiteral(role)+`);
			END LOOP;
		END $$`)
	if err != nil {
		return fmt.Errorf("database %s for %s: hand over its objects: %w", db, role, err)
	}
	return nil
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// CreateDatabases creates, through the server at adminURL, each database that does not
// exist yet.
func CreateDatabases(ctx context.Context, adminURL string, names ...string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, n := range names {
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, n).Scan(&exists); err != nil {
			return err
		}
		if exists {
			continue
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{n}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", n, err)
		}
	}
	return nil
}

// Stop shuts the server down fast (open sessions are ended, committed data is kept) and
// waits for it to exit.
func (c *Cluster) Stop() {
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Restart stops the server the way "pg_ctl restart -m immediate" does — SIGQUIT: every
// session ends at once, nothing is flushed, and the next start recovers from the WAL, as
// after a crash — then starts it again on the same port and waits until it answers.
func (c *Cluster) Restart(ctx context.Context) error {
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	<-c.done
	cmd, err := c.launch()
	if err != nil {
		return err
	}
	c.cmd = cmd
	go func() { c.done <- cmd.Wait() }()
	return c.waitReady(ctx)
}

// credential returns the postgres user's identity when we are root, nil otherwise.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres user, and there is none: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// traversable lets the postgres user reach dir: every folder above it gets the
// search (x) bit for others where it lacks it, nothing more.
func traversable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("let the postgres user reach %s: %w", dir, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func portFree(host string, port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("PostgreSQL port %s:%d is already in use", host, port)
	}
	return ln.Close()
}

// freshPlans has autovacuum look for tables to analyze every second instead of every
// minute. A devstack's databases start empty and fill in seconds, and the services'
// statements are prepared: PostgreSQL plans one once, generic, and keeps that plan until
// its tables are next analyzed. A plan made while a table was empty reads it whole to
// find rows by key, which costs more with every row the table gains until autovacuum
// comes by. A database that has lived a minute has its statistics, as production's has.
//
// Looking every second, autovacuum would analyze a table each time a tenth of its rows
// changed (the default scale factor): every second or two for every table a bench fills,
// each time sampling up to 30,000 rows and sorting each column's values, work production
// does not do as it looks once a minute. Here a table is analyzed again once as many rows
// changed as it held (autovacuum_analyze_scale_factor=1): while it is small, each time it
// doubles, and the planner sees its size grow between analyzes all the same.
var freshPlans = []string{"-c", "autovacuum_naptime=1s", "-c", "autovacuum_analyze_scale_factor=1"}

// silentClients has the server notice a client whose packets vanish and end its session,
// releasing what it holds (a relay's lock, a transaction's rows): keepalive probes after
// 10 s idle, every 5 s, three unanswered; 30 s for data sent to be acknowledged; and a
// session idle inside a transaction for 30 s is ended whatever TCP says (orderflow's
// transactions last milliseconds). The kernel's defaults take hours.
// docker-compose.yml sets the same.
var silentClients = []string{"-c", "tcp_keepalives_idle=10", "-c", "tcp_keepalives_interval=5", "-c", "tcp_keepalives_count=3",
	"-c", "tcp_user_timeout=30000", "-c", "idle_in_transaction_session_timeout=30000"}
