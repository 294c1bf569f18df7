package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/services"
)

type outcomes struct {
	confirm []time.Duration // POST (created_at) → CONFIRMED (updated_at), server clocks
	email   []time.Duration // POST → notification recorded as sent
	pending int
	window  time.Duration // first order accepted → last order confirmed
}

// outcomes waits until the orders leave PENDING_PAYMENT (or within passes) and reads the
// server-side timestamps of what happened to them: one query every 250 ms, instead of
// polling each order over HTTP, which would load the very server being measured. The ids
// are joined, not matched with = ANY: over a sequential scan ANY compares every row with
// the whole array, and at 20,000 orders that polling alone kept PostgreSQL busy.
func (tg *target) outcomes(ctx context.Context, ids []string, within time.Duration) (outcomes, error) {
	var out outcomes
	if len(ids) == 0 {
		return out, nil
	}
	orders, err := pgx.Connect(ctx, tg.ordersDB)
	if err != nil {
		return out, fmt.Errorf("orders database: %w", err)
	}
	defer orders.Close(ctx)
	deadline := time.Now().Add(within)
	for {
		if err := orders.QueryRow(ctx, `SELECT count(*) FROM unnest($1::uuid[]) AS run(id) JOIN orders USING (id) WHERE status = 'PENDING_PAYMENT'`, ids).Scan(&out.pending); err != nil {
			return out, err
		}
		if out.pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	created := map[string]time.Time{}
	var first, last time.Time
	rows, _ := orders.Query(ctx, `SELECT id::text, created_at, updated_at, status FROM unnest($1::uuid[]) AS run(id) JOIN orders USING (id)`, ids)
	for rows.Next() {
		var id, status string
		var c, u time.Time
		if err := rows.Scan(&id, &c, &u, &status); err != nil {
			return out, err
		}
		created[id] = c
		if first.IsZero() || c.Before(first) {
			first = c
		}
		if status == "CONFIRMED" {
			out.confirm = append(out.confirm, u.Sub(c))
			if u.After(last) {
				last = u
			}
		}
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	out.window = last.Sub(first)

	notes, err := pgx.Connect(ctx, tg.notificationsDB)
	if err != nil {
		return out, fmt.Errorf("notifications database: %w", err)
	}
	defer notes.Close(ctx)
	// Emails follow the confirmation: give the last ones a moment.
	for i := 0; i < 20; i++ {
		var n int
		if err := notes.QueryRow(ctx, `SELECT count(*) FROM unnest($1::uuid[]) AS run(order_id) JOIN notifications USING (order_id)`, ids).Scan(&n); err != nil {
			return out, err
		}
		if n >= len(out.confirm) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	rows, _ = notes.Query(ctx, `SELECT order_id::text, sent_at FROM unnest($1::uuid[]) AS run(order_id) JOIN notifications USING (order_id) WHERE kind = 'order_confirmed'`, ids)
	for rows.Next() {
		var id string
		var sent time.Time
		if err := rows.Scan(&id, &sent); err != nil {
			return out, err
		}
		out.email = append(out.email, sent.Sub(created[id]))
	}
	return out, rows.Err()
}

// dbWork is what the services' databases did during a run: statements run (by
// pg_stat_statements, BEGIN and COMMIT included), transactions committed and rows
// written, inserted, updated or deleted (by pg_stat_database, single-statement
// transactions included), the WAL the server wrote (pg_stat_wal: the whole server's, the
// bench's own few reads included), and the statements run most often. ok is false when
// the target's PostgreSQL does not load pg_stat_statements.
type dbWork struct {
	statements, commits, rows, walBytes int64
	top                                 []statement
	tables                              map[string]tableCount // by database.table
	ok                                  bool
}

// tableCount is the rows of one table inserted, updated (HOT or not) and deleted, and
// read by sequential scans (each row of the table read once per scan).
type tableCount struct{ inserted, updated, hot, deleted, scanned int64 }

// tableRows reads each table's counters in each of dbs (pg_stat_user_tables is per
// database): where a run's rows go.
func (tg *target) tableRows(ctx context.Context, dbs []string) map[string]tableCount {
	out := map[string]tableCount{}
	u, err := url.Parse(tg.adminDB)
	if err != nil {
		return out
	}
	for _, db := range dbs {
		u.Path = "/" + db
		conn, err := pgx.Connect(ctx, u.String())
		if err != nil {
			continue
		}
		rows, _ := conn.Query(ctx, `SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, coalesce(seq_tup_read, 0) FROM pg_stat_user_tables`)
		for rows.Next() {
			var name string
			var c tableCount
			if rows.Scan(&name, &c.inserted, &c.updated, &c.hot, &c.deleted, &c.scanned) == nil {
				out[db+"."+name] = c
			}
		}
		rows.Close()
		conn.Close(ctx)
	}
	return out
}

type statement struct {
	Database string  `json:"database"`
	Calls    int64   `json:"calls"`
	Ms       float64 `json:"total_exec_ms"`
	Query    string  `json:"query"`
}

// dbWorkStart zeroes the statement counters and notes the commits so far.
func (tg *target) dbWorkStart(ctx context.Context) dbWork {
	conn, err := pgx.Connect(ctx, tg.adminDB)
	if err != nil {
		return dbWork{}
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return dbWork{}
	}
	var w dbWork
	err = conn.QueryRow(ctx, `
		SELECT `+dbCounters+`, pg_stat_statements_reset() IS NOT NULL`, tg.databases()).Scan(&w.commits, &w.rows, &w.walBytes, &w.ok)
	w.tables = tg.tableRows(ctx, tg.databases())
	return w
}

// dbCounters are the commits and rows written in the databases $1, and the WAL bytes
// the server wrote, so far.
const dbCounters = `
	(SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database WHERE datname = ANY($1))::bigint,
	(SELECT coalesce(sum(tup_inserted + tup_updated + tup_deleted), 0) FROM pg_stat_database WHERE datname = ANY($1))::bigint,
	(SELECT wal_bytes FROM pg_stat_wal)::bigint`

// dbWorkSince returns the work done since start.
func (tg *target) dbWorkSince(ctx context.Context, start dbWork) dbWork {
	if !start.ok {
		return dbWork{}
	}
	conn, err := pgx.Connect(ctx, tg.adminDB)
	if err != nil {
		return dbWork{}
	}
	defer conn.Close(ctx)
	// Backends publish their counters at most once a second: let the last ones land.
	time.Sleep(1500 * time.Millisecond)
	var w dbWork
	err = conn.QueryRow(ctx, `
		SELECT (SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
				WHERE d.datname = ANY($1))::bigint, `+dbCounters,
		tg.databases()).Scan(&w.statements, &w.commits, &w.rows, &w.walBytes)
	if err != nil {
		return dbWork{}
	}
	w.commits -= start.commits
	w.rows -= start.rows
	w.walBytes -= start.walBytes
	w.tables = tg.tableRows(ctx, tg.databases())
	for name, c := range w.tables {
		b := start.tables[name]
		w.tables[name] = tableCount{c.inserted - b.inserted, c.updated - b.updated, c.hot - b.hot, c.deleted - b.deleted, c.scanned - b.scanned}
	}
	rows, _ := conn.Query(ctx, `
		SELECT d.datname, s.calls, s.total_exec_time, regexp_replace(s.query, '\s+', ' ', 'g')
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = ANY($1) ORDER BY s.total_exec_time DESC LIMIT 40`, tg.databases())
	w.top, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (st statement, err error) {
		return st, r.Scan(&st.Database, &st.Calls, &st.Ms, &st.Query)
	})
	w.ok = err == nil
	return w
}

// usage is a process's CPU time so far and its peak resident memory.
type usage struct {
	cpu     time.Duration
	peakRSS int64 // bytes
}

// usage reads the CPU time of each service (or of the peer's flow), of all PostgreSQL processes together and of
// this process (the load generator and, on our own devstack, kfake) and of Apache Kafka's
// JVM when the stack runs it, so a report
// shows where the machine's cores went.
func (tg *target) usage() map[string]usage {
	out := map[string]usage{}
	if tg.stack == nil {
		return out
	}
	if tg.peer != nil {
		out[peerName] = procUsage(tg.peer.Process.Pid)
	} else {
		for _, name := range services.Names() {
			if pid := tg.stack.Service(name).PID(); pid > 0 {
				out[name] = procUsage(pid)
			}
		}
	}
	out["bench"] = procUsage(os.Getpid()) // with kfake, the broker runs in this process
	if tg.stack.Kafka != nil {
		if pid := tg.stack.Kafka.PID(); pid > 0 {
			out["kafka"] = procUsage(pid)
		}
	}
	// PostgreSQL is a process per connection: keep each one, so a delta counts only
	// the processes alive at both ends (connections come and go between runs).
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "postgres" {
			out[fmt.Sprintf("postgres/%d", pid)] = procUsage(pid)
		}
	}
	return out
}

func (tg *target) usageSince(before map[string]usage) map[string]serviceUsage {
	out := map[string]serviceUsage{}
	for name, now := range tg.usage() {
		d := (now.cpu - before[name].cpu).Seconds()
		if strings.HasPrefix(name, "postgres/") {
			pg := out["postgres"]
			pg.CPUSeconds += d
			out["postgres"] = pg
			continue
		}
		out[name] = serviceUsage{CPUSeconds: d, PeakRSSMB: float64(now.peakRSS) / (1 << 20)}
	}
	return out
}

// procUsage reads /proc: utime+stime (clock ticks of 1/100 s on Linux) and VmHWM.
func procUsage(pid int) usage {
	var u usage
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				u.cpu = time.Duration(ut+st) * 10 * time.Millisecond
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
				u.peakRSS = kb << 10
			}
		}
	}
	return u
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				model = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s, %s", runtime.NumCPU(), model, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
}
