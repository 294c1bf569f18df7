package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/notification-service/internal/notification"
)

// RegisterMetrics registers the service's domain metrics, read from its tables in the
// background (metrics.Tally): reg must be the service Registry's Registerer.
func RegisterMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) error {
	// Every kind can be sent; only a kind something suppresses can be suppressed.
	var known [][]string
	for _, k := range []notification.Kind{notification.OrderConfirmed, notification.PaymentFailed, notification.OrderCancelled, notification.PaymentRefunded} {
		known = append(known, []string{string(k), notification.Sent})
		if _, ok := k.SuppressedBy(); ok {
			known = append(known, []string{string(k), notification.Suppressed})
		}
	}
	return metrics.Tally(reg, pool, "notifications", "Emails by kind and status (SENT, or SUPPRESSED: the order had moved on), as of the last reading from the database.",
		[]string{"kind", "status"}, `SELECT kind, status, count(*)::float8 FROM notifications GROUP BY kind, status`, known...)
}
