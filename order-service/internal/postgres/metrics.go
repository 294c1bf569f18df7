package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/order-service/internal/order"
)

// RegisterMetrics registers the service's domain metrics, read from its tables in the
// background (metrics.Tally): reg must be the service Registry's Registerer.
func RegisterMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) error {
	err := metrics.Tally(reg, pool, "orders", "Orders by status (PENDING_PAYMENT, CONFIRMED, PAYMENT_FAILED, CANCELLED), as of the last reading from the database.",
		[]string{"status"}, `SELECT status, count(*)::float8 FROM orders GROUP BY status`,
		[]string{string(order.PendingPayment)}, []string{string(order.Confirmed)}, []string{string(order.PaymentFailed)}, []string{string(order.Cancelled)})
	if err != nil {
		return err
	}
	// Read through the partial index orders_pending: only the orders still pending.
	return metrics.Tally(reg, pool, "orders_oldest_pending_age_seconds",
		"Age of the oldest order still PENDING_PAYMENT, as of the last reading; 0 when none is. Growing: payment is not deciding.",
		nil, `SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM orders WHERE status = 'PENDING_PAYMENT'`)
}
