package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/orderflow/common-events/auth"
)

// postKey sends body to POST /orders with an Idempotency-Key (none when empty).
func (a api) postKey(t *testing.T, key, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.url+"/orders", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", jsonType)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return a.do(t, req)
}

func TestIdempotencyKeyReplaysTheFirstAnswer(t *testing.T) {
	a := newAPI(t)
	body := validOrder().JSON(t)
	first := a.postKey(t, "order-attempt-1", body)
	o1 := decodeOrder(t, first, http.StatusAccepted)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Error("the first answer says it is replayed")
	}

	// The same request again, spaced differently: the same answer, marked replayed.
	again := a.postKey(t, "order-attempt-1", "  "+strings.ReplaceAll(body, ",", ", ")+"\n")
	o2 := decodeOrder(t, again, http.StatusAccepted)
	if again.Header.Get("Idempotent-Replayed") != "true" || o2.ID != o1.ID || again.Header.Get("Location") != "/orders/"+o1.ID {
		t.Errorf("replay = %+v (Idempotent-Replayed %q, Location %q), want order %s replayed",
			o2, again.Header.Get("Idempotent-Replayed"), again.Header.Get("Location"), o1.ID)
	}
	if got := a.counts(t); got != [3]int{1, 2, 1} {
		t.Errorf("orders, outbox, history = %v after a replay, want one order, its two events, one history entry", got)
	}

	// The same key for a different order is refused.
	other := validOrder().with("currency", "USD").JSON(t)
	checkProblem(t, a.postKey(t, "order-attempt-1", other), http.StatusUnprocessableEntity, "idempotency_key_reused")

	// Another key is another order.
	o3 := decodeOrder(t, a.postKey(t, "order-attempt-2", body), http.StatusAccepted)
	if o3.ID == o1.ID {
		t.Error("a new key replayed the old order")
	}
}

func TestIdempotencyKeyValidation(t *testing.T) {
	a := newAPI(t)
	body := validOrder().JSON(t)
	decodeOrder(t, a.postKey(t, strings.Repeat("k", 255), body), http.StatusAccepted)
	for name, key := range map[string]string{"256 characters": strings.Repeat("k", 256), "a space": "two words", "non-ASCII": "clé"} {
		t.Run(name, func(t *testing.T) {
			checkProblem(t, a.postKey(t, key, body), http.StatusBadRequest, "invalid_idempotency_key")
		})
	}
}

// While the first request with a key is being processed, another one is told so.
func TestIdempotencyKeyInFlight(t *testing.T) {
	a := newAPI(t)
	release := a.holdKey(t, "busy")
	checkProblem(t, a.postKey(t, "busy", validOrder().JSON(t)), http.StatusConflict, "idempotency_key_in_flight")
	release()
	decodeOrder(t, a.postKey(t, "busy", validOrder().JSON(t)), http.StatusAccepted)
}

// holdKey holds what the first request with the demo customer's key holds while it
// works, until release (or the end of the test).
func (a api) holdKey(t *testing.T, key string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('idempotency:' || $1 || ':' || $2, 0))`, customerID, key); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
			conn.Release()
		})
	}
	t.Cleanup(release)
	return release
}

func TestThousandConcurrentPostsWithOneKeyCreateOneOrder(t *testing.T) {
	a := newAPI(t)
	body := validOrder().JSON(t)
	var mu sync.Mutex
	ids := map[string]int{}
	statuses := map[int]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	for range 1000 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			req, _ := http.NewRequest(http.MethodPost, a.url+"/orders", strings.NewReader(body))
			req.Header.Set("Content-Type", jsonType)
			req.Header.Set("Idempotency-Key", "one-key")
			resp, err := a.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			statuses[resp.StatusCode]++
			if resp.StatusCode == http.StatusAccepted {
				if loc := resp.Header.Get("Location"); loc != "" {
					ids[loc]++
				}
			}
		})
	}
	wg.Wait()
	if got := a.counts(t); got != [3]int{1, 2, 1} {
		t.Errorf("orders, outbox, history = %v, want exactly one order (and its two events)", got)
	}
	if len(ids) != 1 {
		t.Errorf("202 answers name %d different orders: %v", len(ids), ids)
	}
	for status := range statuses {
		if status != http.StatusAccepted && status != http.StatusConflict {
			t.Errorf("statuses = %v, want only 202 (first or replayed) and 409 (in flight)", statuses)
		}
	}
	t.Logf("statuses: %v", statuses)
}

// A key is kept 24 hours; after that it is free again, and pruning removes it.
func TestIdempotencyKeyExpires(t *testing.T) {
	a := newAPI(t)
	body := validOrder().JSON(t)
	o1 := decodeOrder(t, a.postKey(t, "old-key", body), http.StatusAccepted)
	if _, err := a.pool.Exec(context.Background(), `UPDATE idempotency_keys SET created_at = now() - interval '25 hours'`); err != nil {
		t.Fatal(err)
	}
	resp := a.postKey(t, "old-key", body)
	o2 := decodeOrder(t, resp, http.StatusAccepted)
	if o2.ID == o1.ID || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("an expired key replayed order %s", o1.ID)
	}
	var n int
	if err := a.pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d keys stored (%v), want the renewed one only", n, err)
	}
}

// A key is its customer's: another customer sending the same key places their own order
// and never sees the first customer's answer.
func TestIdempotencyKeysArePerCustomer(t *testing.T) {
	a := newAPI(t)
	const grace = "9d7e2c1a-4b3f-4e8d-a6c5-1f0e2d3c4b5a"
	b := a.as(t, grace, auth.ScopeCustomer)
	mine := decodeOrder(t, a.postKey(t, "same-key", validOrder().JSON(t)), http.StatusAccepted)
	theirs := b.postKey(t, "same-key", validOrder().with("customer_id", nil).JSON(t))
	if theirs.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("another customer's request with the same key was answered with a replay")
	}
	other := decodeOrder(t, theirs, http.StatusAccepted)
	if other.ID == mine.ID || other.CustomerID != grace {
		t.Fatalf("the second customer's order = %s of %s; want a new order of %s", other.ID, other.CustomerID, grace)
	}
	again := a.postKey(t, "same-key", validOrder().JSON(t))
	if again.Header.Get("Idempotent-Replayed") != "true" || decodeOrder(t, again, http.StatusAccepted).ID != mine.ID {
		t.Fatal("the first customer's retry was not replayed their own first answer")
	}
}
