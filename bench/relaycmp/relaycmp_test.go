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
		t.Logf("%s: live %d events in %.2fs = %.0f/s, commit→published p50 %s p99 %s; backlog drained at %.0f/s",
			r.Name, r.Events, r.Seconds, r.EventsPerSec, r.P50, r.P99, r.DrainPerSec)
		if r.Events != n || r.Drained != n {
			t.Errorf("%s delivered %d (live) and %d (backlog) of %d events", r.Name, r.Events, r.Drained, n)
		}
	}
}
