package pipecmp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/bench/pipecmp"
	"github.com/orderflow/devstack/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const body = `{"customer_email":"peer@example.com","currency":"EUR","items":[{"sku":"BOOK-42","quantity":2,"unit_price_cents":1999}],"payment_method":"tok_visa"}`

// The peer must do what it is compared on: every order accepted is charged once,
// confirmed and notified, and a redelivered order.created neither holds up the orders
// after it nor publishes a second payment.completed.
func TestTheWatermillFlowConfirmsEveryOrderOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := testenv.Database(t) // its owner may create the databases Prepare needs
	b := testenv.Kafka(t)
	c, err := pipecmp.Prepare(ctx, admin, b.Addrs, 3, strconv.FormatInt(time.Now().UnixNano(), 36))
	if err != nil {
		t.Fatal(err)
	}
	c.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	done := make(chan error, 1)
	go func() { done <- pipecmp.Run(ctx, c) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	url := "http://" + c.HTTPAddr
	if !testenv.Eventually(60*time.Second, 100*time.Millisecond, func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatal("not ready within 60 s")
	}

	post := func(body string) (int, string) {
		resp, err := http.Post(url+"/orders", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		var o struct{ ID string }
		_ = json.NewDecoder(resp.Body).Decode(&o)
		return resp.StatusCode, o.ID
	}
	if code, _ := post(`{"customer_email":"peer@example.com","currency":"EUR","items":[{"sku":"X","quantity":0,"unit_price_cents":1}],"payment_method":"tok_visa"}`); code != http.StatusUnprocessableEntity {
		t.Errorf("an item of quantity 0: %d, want 422", code)
	}
	const n = 50
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if code, id := post(body); code != http.StatusAccepted || id == "" {
				t.Errorf("POST /orders = %d %q, want 202 with an id", code, id)
			} else {
				ids[i] = id
			}
		})
	}
	wg.Wait()

	orders, payments, notes := connect(t, c.OrdersDB), connect(t, c.PaymentsDB), connect(t, c.NotificationsDB)
	count := func(conn *pgx.Conn, q string) int {
		var k int
		if err := conn.QueryRow(ctx, q).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	settled := func(want int) bool {
		return testenv.Eventually(30*time.Second, 100*time.Millisecond, func() bool {
			return count(orders, `SELECT count(*) FROM orders WHERE status = 'CONFIRMED'`) == want &&
				count(notes, `SELECT count(*) FROM notifications`) == want
		})
	}
	if !settled(n) {
		t.Fatalf("%d of %d orders confirmed, %d notified", count(orders, `SELECT count(*) FROM orders WHERE status = 'CONFIRMED'`), n,
			count(notes, `SELECT count(*) FROM notifications`))
	}

	// order.created again for the first order, then one more order after it.
	again, _ := json.Marshal(map[string]any{"order_id": ids[0], "customer_email": "peer@example.com", "total_cents": 3998, "currency": "EUR", "payment_method": "tok_visa"})
	testenv.Produce(t, b.Addrs, &sarama.ProducerMessage{Topic: c.Topics + "order.created", Value: sarama.ByteEncoder(again)})
	if code, _ := post(body); code != http.StatusAccepted {
		t.Fatalf("the last POST /orders = %d", code)
	}
	if !settled(n + 1) {
		t.Fatalf("after a redelivered order.created, the next order did not settle")
	}
	if got := count(payments, `SELECT count(*) FROM payments WHERE amount_cents = 3998`); got != n+1 {
		t.Errorf("%d payments of 39.98, want %d: one per order", got, n+1)
	}
	if got := testenv.Records(t, b.Addrs, c.Topics+"payment.completed", n+1, 10*time.Second); len(got) != n+1 {
		t.Errorf("%d payment.completed published, want %d: the redelivered order.created published another", len(got), n+1)
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
