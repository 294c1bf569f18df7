package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/payment-service/internal/payment"
)

// RegisterMetrics registers the service's domain metrics, read from its tables in the
// background (metrics.Tally): reg must be the service Registry's Registerer.
func RegisterMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) error {
	var known [][]string
	for _, s := range []payment.Status{payment.Charging, payment.Completed, payment.Failed, payment.Refunded, payment.Cancelled} {
		known = append(known, []string{string(s)})
	}
	return metrics.Tally(reg, pool, "payments", "Payments by status (CHARGING, COMPLETED, FAILED, REFUNDED, CANCELLED), as of the last reading from the database.",
		[]string{"status"}, `SELECT status, count(*)::float8 FROM payments GROUP BY status`, known...)
}
