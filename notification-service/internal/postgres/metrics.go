package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
)

// RegisterMetrics registers the service's domain metrics, read from its tables.
func RegisterMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) error {
	return metrics.Tally(reg, pool, "notifications", "Emails by kind and status (SENT, or SUPPRESSED: the order had moved on), read from the database when scraped.",
		[]string{"kind", "status"}, `SELECT kind, status, count(*)::float8 FROM notifications GROUP BY kind, status`)
}
