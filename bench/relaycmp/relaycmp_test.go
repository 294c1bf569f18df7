package relaycmp_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/orderflow/bench/relaycmp"
	"github.com/orderflow/devstack/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Both relays must deliver every event written; the figures are printed, not asserted.
func TestBothRelaysDeliverEverything(t *testing.T) {
	admin := testenv.Database(t) // its owner may create the databases Compare needs
	b := testenv.Kafka(t)
	const n = 1000
	ours, peer, err := relaycmp.Compare(context.Background(), admin, b.Addrs, n, 60*time.Second,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []relaycmp.Result{ours, peer} {
		t.Logf("%s: %d events in %.2fs = %.0f/s, commit→published p50 %s p99 %s", r.Name, r.Events, r.Seconds, r.EventsPerSec, r.P50, r.P99)
		if r.Events != n {
			t.Errorf("%s delivered %d of %d events", r.Name, r.Events, n)
		}
	}
}
