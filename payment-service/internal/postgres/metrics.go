package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
)

// RegisterMetrics registers the service's domain metrics, read from its tables.
func RegisterMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) error {
	return metrics.Tally(reg, pool, "payments", "Payments by status (CHARGING, COMPLETED, FAILED, REFUNDED, CANCELLED), read from the database when scraped.",
		[]string{"status"}, `SELECT status, count(*)::float8 FROM payments GROUP BY status`)
}
