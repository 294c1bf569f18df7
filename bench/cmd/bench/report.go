package main

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/orderflow/bench/relaycmp"
	"github.com/orderflow/common-events/services"
)

type latency struct {
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

type serviceUsage struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
}

type runResult struct {
	Name              string                  `json:"name"`
	Broker            string                  `json:"broker"` // kfake, kafka (Apache Kafka), or external
	Mode              string                  `json:"mode"`
	Clients           int                     `json:"clients,omitempty"`
	OfferedRate       float64                 `json:"offered_per_sec"`
	AchievedRate      float64                 `json:"accepted_per_sec"`
	Seconds           float64                 `json:"seconds"`
	Posted            int                     `json:"posted"`
	Accepted          int                     `json:"accepted"`
	Confirmed         int                     `json:"confirmed"`
	Pending           int                     `json:"still_pending"`
	PostMs            latency                 `json:"post_latency"` // of the accepted POSTs
	Refused           int                     `json:"refused"`      // 503 overloaded
	RefusedMs         latency                 `json:"refused_latency"`
	ConfirmMs         latency                 `json:"post_to_confirmed"`
	EmailMs           latency                 `json:"post_to_email"`
	ConfirmedPerSec   float64                 `json:"confirmed_per_sec"`
	RelayEventsPerSec float64                 `json:"outbox_events_per_sec"`
	Errors            map[string]int          `json:"errors"`
	Services          map[string]serviceUsage `json:"services"`
	// Per confirmed order, across the services' databases and processes; the
	// bench's own few reads of the outcomes are included.
	StatementsPerOrder float64 `json:"pg_statements_per_confirmed_order,omitempty"`
	CommitsPerOrder    float64 `json:"pg_commits_per_confirmed_order,omitempty"`
	RowsPerOrder       float64 `json:"pg_rows_written_per_confirmed_order,omitempty"`
	WALBytesPerOrder   float64 `json:"pg_wal_bytes_per_confirmed_order,omitempty"`
	CPUMsPerOrder      float64 `json:"cpu_ms_per_confirmed_order,omitempty"`
	// PostgresCPUMsPerOrder is PostgreSQL's share of CPUMsPerOrder.
	PostgresCPUMsPerOrder float64 `json:"pg_cpu_ms_per_confirmed_order,omitempty"`
	// Tables are the rows each table of the databases had written, per confirmed order.
	Tables []tableRows `json:"tables,omitempty"`
	// TopStatements are the statements the databases ran most often in the run.
	TopStatements []statement `json:"top_statements,omitempty"`
	// Hops are where POST→CONFIRMED spent its time, from the traces of HopOrders orders,
	// when the services exported their spans.
	Hops      []hopResult `json:"hops,omitempty"`
	HopOrders int         `json:"hop_orders,omitempty"`
	// Peer: the run loaded the peer's flow (peer.go), not orderflow.
	Peer bool `json:"peer,omitempty"`
	// Independent: the load came from vegeta (vegeta.go), not the bench's own loops.
	Independent bool `json:"independent,omitempty"`
}

// tableRows is one table's rows inserted, updated (of them HOT, without a new index entry)
// and deleted per confirmed order, and read by sequential scans: a statement that finds
// its rows by key and reads the table whole instead shows there.
type tableRows struct {
	Table    string  `json:"table"` // database.table
	Inserted float64 `json:"inserted"`
	Updated  float64 `json:"updated"`
	HOT      float64 `json:"hot_updated"`
	Deleted  float64 `json:"deleted"`
	Scanned  float64 `json:"seq_scanned,omitempty"`
}

type yardstickResult struct {
	TPS               float64 `json:"insert_tps"`
	Connections       int     `json:"connections"`
	SynchronousCommit string  `json:"synchronous_commit"`
}

type relayResult struct {
	Name         string  `json:"name"`
	Written      int     `json:"written"`
	Delivered    int     `json:"delivered"`
	EventsPerSec float64 `json:"events_per_sec"`
	P50          float64 `json:"commit_to_published_p50_ms"`
	P99          float64 `json:"commit_to_published_p99_ms"`
	Drained      int     `json:"backlog_delivered"`
	DrainPerSec  float64 `json:"backlog_drain_per_sec"`
}

func toRelayResult(r relaycmp.Result) relayResult {
	return relayResult{Name: r.Name, Written: r.Written, Delivered: r.Events, EventsPerSec: r.EventsPerSec,
		P50: float64(r.P50.Microseconds()) / 1000, P99: float64(r.P99.Microseconds()) / 1000,
		Drained: r.Drained, DrainPerSec: r.DrainPerSec}
}

type report struct {
	Commit    string          `json:"commit"` // what ran: git describe --always --dirty
	Machine   string          `json:"machine"`
	Quick     bool            `json:"quick"`
	Started   time.Time       `json:"started"`
	Seconds   float64         `json:"seconds"`
	Yardstick yardstickResult `json:"yardstick"`
	Auth      authResult      `json:"auth"`
	Wake      wakeResult      `json:"wake"`
	Traces    []tracesResult  `json:"traces,omitempty"` // BENCH_TRACES=1: the spans exported, per broker
	Runs      []runResult     `json:"runs"`
	Relay     []relayResult   `json:"relay_comparison,omitempty"`
	// RelayBroker is the broker the relay comparison ran on.
	RelayBroker string `json:"relay_comparison_broker,omitempty"`
	// ShowStatements prints each run's most frequent statements (BENCH_STATEMENTS=1).
	ShowStatements bool `json:"-"`
}

// brokerNames are the brokers as the report names them.
var brokerNames = map[string]string{"kfake": "kfake", "kafka": "Apache Kafka", brokerKafkaSecure: "Apache Kafka, SASL_SSL + ACLs", "external": "its own"}

func (r report) markdown(w io.Writer) {
	fmt.Fprintf(w, "\n## orderflow bench — %s\n\n", r.Started.Format("2006-01-02 15:04 MST"))
	quick := ""
	if r.Quick {
		quick = " (QUICK=1)"
	}
	fmt.Fprintf(w, "Commit %s%s. Machine: %s. Everything on one box: load generator, broker, PostgreSQL (synchronous_commit=%s), the services.\n\n",
		cmp.Or(r.Commit, "unknown"), quick, r.Machine, r.Yardstick.SynchronousCommit)
	fmt.Fprintln(w, "| broker | run | offered/s | accepted/s | POST p50 / p95 / p99 / max ms | POST→CONFIRMED p50 / p95 / p99 ms | POST→email p50 / p95 / p99 ms | confirmed/s | outbox events/s | pending | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	best := map[string]float64{}
	for _, x := range r.Runs {
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %s / %s / %s / %s | %s / %s / %s | %s / %s / %s | %.0f | %.0f | %d | %s |\n",
			brokerNames[x.Broker], x.Name, x.OfferedRate, x.AchievedRate,
			ms(x.PostMs.P50), ms(x.PostMs.P95), ms(x.PostMs.P99), ms(x.PostMs.Max),
			ms(x.ConfirmMs.P50), ms(x.ConfirmMs.P95), ms(x.ConfirmMs.P99),
			ms(x.EmailMs.P50), ms(x.EmailMs.P95), ms(x.EmailMs.P99),
			x.ConfirmedPerSec, x.RelayEventsPerSec, x.Pending, errs(x.Errors))
	}
	for _, b := range r.brokers() {
		best[b] = bestSustained(r.Runs, b)
	}
	for _, x := range r.Runs {
		if x.Refused > 0 {
			fmt.Fprintf(w, "\n%s, %s: %d of %d POSTs refused at once (503 overloaded, %.0f/s), answered in p50 / p95 / p99 / max %s / %s / %s / %s ms; the latencies above are the %d accepted ones'.\n",
				brokerNames[x.Broker], x.Name, x.Refused, x.Posted, float64(x.Refused)/x.Seconds,
				ms(x.RefusedMs.P50), ms(x.RefusedMs.P95), ms(x.RefusedMs.P99), ms(x.RefusedMs.Max), x.Accepted)
		}
	}
	r.sideBySide(w)
	fmt.Fprintf(w, "\nYardstick: %.0f single-row INSERT transactions/s (%d connections, synchronous commit) on the same PostgreSQL.\n",
		r.Yardstick.TPS, r.Yardstick.Connections)
	if r.Yardstick.TPS > 0 {
		for _, b := range r.brokers() {
			fmt.Fprintf(w, "Best sustained confirmed orders/s on %s: %.0f = %.3f × the yardstick.\n", brokerNames[b], best[b], best[b]/r.Yardstick.TPS)
		}
	}
	r.independent(w)
	if k := r.Wake; k.InTxTPS > 0 {
		fmt.Fprintf(w, "Waking the relay (%d connections, single-row outbox transactions, a listener on the channel): a NOTIFY inside each transaction %.0f/s; outbox's Waker after the commits %.0f/s (%.2f×, %d NOTIFYs in all).\n",
			k.Connections, k.InTxTPS, k.WakerTPS, k.WakerTPS/k.InTxTPS, k.Notifies)
	}
	if r.Auth.N > 0 {
		fmt.Fprintf(w, "Bearer token verification on one core (every request to order-service pays it; %d tokens): %.1f µs for a token seen the first time (ES256 signature and claims, keys cached), %.2f µs for one that passed before.\n",
			r.Auth.N, r.Auth.FirstMicros, r.Auth.AgainMicros)
	}
	for _, t := range r.Traces {
		fmt.Fprintf(w, "Traces on %s: every span exported over OTLP/HTTP to a sink in the bench process: %d spans in %d requests.\n", brokerNames[t.Broker], t.Spans, t.Exports)
	}
	fmt.Fprintln(w, "\nCPU seconds (peak RSS MB) per process and run; the machine has", runtime.NumCPU(), "cores:")
	names := services.Names()
	if slices.ContainsFunc(r.Runs, func(x runResult) bool { return x.Peer }) {
		names = append(names, peerName)
	}
	fmt.Fprintf(w, "\n| broker | run | %s | PostgreSQL (all) | bench (+ kfake) | Apache Kafka |\n|%s\n",
		strings.Join(names, " | "), strings.Repeat("---|", len(names)+5))
	for _, x := range r.Runs {
		var cells []string
		for _, s := range append(slices.Clone(names), "postgres", "bench", "kafka") {
			u, ok := x.Services[s]
			if !ok {
				cells = append(cells, "–")
				continue
			}
			if u.PeakRSSMB == 0 {
				cells = append(cells, fmt.Sprintf("%.1f s", u.CPUSeconds))
				continue
			}
			cells = append(cells, fmt.Sprintf("%.1f s (%.0f MB)", u.CPUSeconds, u.PeakRSSMB))
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", brokerNames[x.Broker], x.Name, strings.Join(cells, " | "))
	}
	fmt.Fprintln(w, "\nEach run's confirmed orders/s beside the limit, the yardstick, and what a confirmed order cost: the services' databases' rows written (inserted, updated or deleted), statements (BEGIN and COMMIT included) and commits; the WAL the server wrote; PostgreSQL's CPU, and everything's but the load generator's and the broker's (services + PostgreSQL):")
	fmt.Fprintln(w, "\n| broker | run | confirmed/s | × yardstick | rows | WAL kB | statements | commits | PostgreSQL CPU ms | CPU ms (services + PG) |\n|---|---|---|---|---|---|---|---|---|---|")
	for _, x := range r.Runs {
		ratio := "–"
		if r.Yardstick.TPS > 0 {
			ratio = fmt.Sprintf("%.3f", x.ConfirmedPerSec/r.Yardstick.TPS)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", brokerNames[x.Broker], x.Name, x.ConfirmedPerSec, ratio,
			ms(x.RowsPerOrder), ms(x.WALBytesPerOrder/1024), ms(x.StatementsPerOrder), ms(x.CommitsPerOrder), ms(x.PostgresCPUMsPerOrder), ms(x.CPUMsPerOrder))
	}
	markdownTables(w, r.Runs)
	markdownHops(w, r.Runs)
	r.peerTable(w)
	if len(r.Relay) == 2 {
		fmt.Fprintf(w, "\nOutbox relay, PostgreSQL → %s, side by side (writers commit %d events a transaction; published = seen by a consumer).\n", brokerNames[r.RelayBroker], relaycmp.TxSize)
		fmt.Fprintln(w, "Live: the relay runs while the events are written. Backlog: all are written first, then the relay starts.")
		fmt.Fprintln(w, "\n| relay | live events/s | commit→published p50 / p99 ms | backlog drained/s | delivered live / backlog |\n|---|---|---|---|---|")
		for _, x := range r.Relay {
			fmt.Fprintf(w, "| %s | %.0f | %s / %s | %.0f | %d / %d of %d |\n", x.Name, x.EventsPerSec, ms(x.P50), ms(x.P99),
				x.DrainPerSec, x.Delivered, x.Drained, x.Written)
		}
		if r.Relay[1].EventsPerSec > 0 && r.Relay[1].DrainPerSec > 0 {
			fmt.Fprintf(w, "\nRatio to the %s: %.1f× live, %.1f× draining a backlog.\n", r.Relay[1].Name,
				r.Relay[0].EventsPerSec/r.Relay[1].EventsPerSec, r.Relay[0].DrainPerSec/r.Relay[1].DrainPerSec)
		}
	}
	if r.ShowStatements {
		for _, x := range r.Runs {
			fmt.Fprintf(w, "\nStatements by execution time, %s, %s (%d confirmed):\n\n| database | per order | total ms | statement |\n|---|---|---|---|\n",
				brokerNames[x.Broker], x.Name, x.Confirmed)
			for _, st := range x.TopStatements {
				q := strings.ReplaceAll(st.Query, "|", "\\|")
				if len(q) > 140 {
					q = q[:140] + "…"
				}
				fmt.Fprintf(w, "| %s | %.2f | %.0f | `%s` |\n", st.Database, float64(st.Calls)/float64(max(x.Confirmed, 1)), st.Ms, q)
			}
		}
	}
	fmt.Fprintf(w, "\nThe whole bench took %.0f s.\n", r.Seconds)
}

// brokers lists the brokers of the runs, in the order they ran.
func (r report) brokers() []string {
	var out []string
	for _, x := range r.Runs {
		if !slices.Contains(out, x.Broker) {
			out = append(out, x.Broker)
		}
	}
	return out
}

// sideBySide puts each run's figures on every broker next to each other, when there are
// two brokers.
func (r report) sideBySide(w io.Writer) {
	bs := r.brokers()
	if len(bs) != 2 {
		return
	}
	a, b := brokerNames[bs[0]], brokerNames[bs[1]]
	fmt.Fprintf(w, "\nThe same runs, %s and %s side by side:\n\n", a, b)
	fmt.Fprintf(w, "| run | confirmed/s %s / %s | POST p99 ms %s / %s | POST→CONFIRMED p99 ms %s / %s | pending %s / %s |\n|---|---|---|---|---|\n",
		a, b, a, b, a, b, a, b)
	byName := map[string]map[string]runResult{}
	var names []string
	for _, x := range r.Runs {
		if byName[x.Name] == nil {
			byName[x.Name] = map[string]runResult{}
			names = append(names, x.Name)
		}
		byName[x.Name][x.Broker] = x
	}
	for _, n := range names {
		x, okx := byName[n][bs[0]]
		y, oky := byName[n][bs[1]]
		if !okx || !oky { // run on one broker only (the providers' side by side)
			continue
		}
		fmt.Fprintf(w, "| %s | %.0f / %.0f | %s / %s | %s / %s | %d / %d |\n", n, x.ConfirmedPerSec, y.ConfirmedPerSec,
			ms(x.PostMs.P99), ms(y.PostMs.P99), ms(x.ConfirmMs.P99), ms(y.ConfirmMs.P99), x.Pending, y.Pending)
	}
}

func ms(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v < 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func errs(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// tracesResult counts the spans a pass's services exported (BENCH_TRACES=1).
type tracesResult struct {
	Broker  string `json:"broker"`
	Spans   int64  `json:"spans"`
	Exports int64  `json:"exports"`
}

// markdownTables shows where a confirmed order's rows go, table by table, in orderflow's
// runs at 250/s and in its closed loops: what each table has inserted, updated (HOT
// updates, which add no index entry, in brackets) and deleted per confirmed order, and
// the rows its sequential scans read, where there were any.
func markdownTables(w io.Writer, runs []runResult) {
	var cols []runResult
	var tables []string
	for _, x := range runs {
		if x.Peer || len(x.Tables) == 0 || x.Name != "open 250/s" && x.Mode != "closed" {
			continue
		}
		cols = append(cols, x)
		for _, t := range x.Tables {
			if !slices.Contains(tables, t.Table) {
				tables = append(tables, t.Table)
			}
		}
	}
	if len(cols) == 0 {
		return
	}
	slices.Sort(tables)
	fmt.Fprintln(w, "\nRows per confirmed order, table by table: inserted / updated (of them HOT) / deleted; and, after a dot, read by sequential scans:")
	fmt.Fprint(w, "\n| table |")
	for _, x := range cols {
		fmt.Fprintf(w, " %s, %s |", brokerNames[x.Broker], x.Name)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(cols)))
	for _, t := range tables {
		fmt.Fprintf(w, "| %s |", t)
		for _, x := range cols {
			i := slices.IndexFunc(x.Tables, func(r tableRows) bool { return r.Table == t })
			if i < 0 {
				fmt.Fprint(w, " – |")
				continue
			}
			r := x.Tables[i]
			hot := ""
			if r.HOT > 0 {
				hot = " (" + rowsPer(r.HOT) + ")"
			}
			scanned := ""
			if r.Scanned > 0 {
				scanned = " · " + rowsPer(r.Scanned)
			}
			fmt.Fprintf(w, " %s / %s%s / %s%s |", rowsPer(r.Inserted), rowsPer(r.Updated), hot, rowsPer(r.Deleted), scanned)
		}
		fmt.Fprintln(w)
	}
}

// rowsPer is a count of rows per order, to two figures.
func rowsPer(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2g", v)
	}
	return fmt.Sprintf("%.0f", v)
}
