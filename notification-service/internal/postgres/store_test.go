package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/notification-service/internal/notification"
	"github.com/orderflow/notification-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Orders asked about at once are read together, and each gets its own kinds.
func TestConcurrentKindsAreEachTheirOrders(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Notifications); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool, 0)
	const n = 120
	orders := make([]string, n)
	want := make([][]notification.Kind, n)
	var ns []notification.Notification
	for i := range orders {
		orders[i] = fmt.Sprintf("019A8F3E-6C19-7D4A-8E55-0A1B2C3D%04d", i) // upper case, as a UUID may come
		for _, k := range []notification.Kind{notification.OrderConfirmed, notification.PaymentRefunded}[:i%3] {
			want[i] = append(want[i], k)
			ns = append(ns, notification.Notification{ID: uuid.Must(uuid.NewV7()).String(), OrderID: orders[i], Kind: k,
				Recipient: "ada@example.com", Subject: "s", Body: "b", MessageID: fmt.Sprintf("<%d-%s@orderflow>", i, k),
				Status: notification.Sent, CauseEventID: fmt.Sprintf("ev-%d-%s", i, k), CreatedAt: time.Now(), SentAt: time.Now()})
		}
	}
	sql, args := postgres.RecordStatement(ns, 1, "")
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, id := range orders {
		wg.Go(func() {
			got, err := store.Kinds(ctx, id)
			slices.Sort(got)
			slices.Sort(want[i])
			if err != nil || !slices.Equal(got, want[i]) {
				t.Errorf("Kinds(%s) = %v, %v; want %v", id, got, err, want[i])
			}
		})
	}
	wg.Wait()
}
