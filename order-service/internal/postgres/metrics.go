package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
)

// RegisterMetrics registers the service's domain metrics, read from its tables.
func RegisterMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) error {
	err := metrics.Tally(reg, pool, "orders", "Orders by status (PENDING_PAYMENT, CONFIRMED, PAYMENT_FAILED, CANCELLED), read from the database when scraped.",
		[]string{"status"}, `SELECT status, count(*)::float8 FROM orders GROUP BY status`)
	if err != nil {
		return err
	}
	// Read through the partial index orders_pending: only the orders still pending.
	return metrics.Tally(reg, pool, "orders_oldest_pending_age_seconds",
		"Age of the oldest order still PENDING_PAYMENT; 0 when none is. Growing: payment is not deciding.",
		nil, `SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM orders WHERE status = 'PENDING_PAYMENT'`)
}
