package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

// transition moves order id to status to, as the payment consumer would.
func (a api) transition(t *testing.T, id string, to order.Status) {
	t.Helper()
	err := pgx.BeginFunc(context.Background(), a.pool, func(tx pgx.Tx) error {
		_, err := postgres.NewStore(a.pool).Transition(context.Background(), tx, id, to, "card_declined", "payment-event-1", time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// request sends method path with the headers given as name, value pairs.
func (a api) request(t *testing.T, ctx context.Context, method, path, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return a.do(t, req)
}

// waitFor polls cond for up to 10 s: for the test's own checks, not the API's.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !testenv.Eventually(10*time.Second, 10*time.Millisecond, cond) {
		t.Fatalf("still not so after 10s: %s", what)
	}
}

func TestPreferWaitOnGet(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()

	t.Run("answers 200 with the final order as soon as it changes", func(t *testing.T) {
		o := a.place(t, customerID)
		go func() {
			waitFor(t, "the GET waits", func() bool { return a.changes.Waiting() == 1 })
			a.transition(t, o.ID, order.Confirmed)
		}()
		resp := a.request(t, ctx, http.MethodGet, "/orders/"+o.ID, "", "Prefer", "wait=20")
		got := decodeOrder(t, resp, http.StatusOK)
		if got.Status != "CONFIRMED" || resp.Header.Get("Preference-Applied") != "wait=20" {
			t.Errorf("status %s, Preference-Applied %q; want CONFIRMED, wait=20", got.Status, resp.Header.Get("Preference-Applied"))
		}
	})
	t.Run("answers 202 with the pending order when the wait runs out", func(t *testing.T) {
		o := a.place(t, customerID)
		resp := a.request(t, ctx, http.MethodGet, "/orders/"+o.ID, "", "Prefer", "respond-async, wait=1")
		got := decodeOrder(t, resp, http.StatusAccepted)
		if got.Status != "PENDING_PAYMENT" || resp.Header.Get("Preference-Applied") != "wait=1" {
			t.Errorf("status %s, Preference-Applied %q; want PENDING_PAYMENT, wait=1", got.Status, resp.Header.Get("Preference-Applied"))
		}
	})
	t.Run("a final order is answered at once; a wait over 30 s counts as 30", func(t *testing.T) {
		o := a.place(t, customerID)
		a.transition(t, o.ID, order.PaymentFailed)
		resp := a.request(t, ctx, http.MethodGet, "/orders/"+o.ID, "", "Prefer", "wait=3600")
		if got := decodeOrder(t, resp, http.StatusOK); got.Status != "PAYMENT_FAILED" || got.FailureReason != "card_declined" {
			t.Errorf("order = %+v", got)
		}
		if pa := resp.Header.Get("Preference-Applied"); pa != "wait=30" {
			t.Errorf("Preference-Applied = %q, want wait=30", pa)
		}
	})
	t.Run("a malformed preference is ignored, as RFC 7240 asks", func(t *testing.T) {
		o := a.place(t, customerID)
		for _, prefer := range []string{"wait=abc", "wait=-1", "wait", "handling=strict"} {
			resp := a.request(t, ctx, http.MethodGet, "/orders/"+o.ID, "", "Prefer", prefer)
			if got := decodeOrder(t, resp, http.StatusOK); got.Status != "PENDING_PAYMENT" || resp.Header.Get("Preference-Applied") != "" {
				t.Errorf("Prefer: %s → %s, Preference-Applied %q", prefer, got.Status, resp.Header.Get("Preference-Applied"))
			}
		}
	})
	t.Run("unknown and malformed ids are 404 without waiting", func(t *testing.T) {
		for _, id := range []string{"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "not-a-uuid"} {
			checkProblem(t, a.request(t, ctx, http.MethodGet, "/orders/"+id, "", "Prefer", "wait=30"), http.StatusNotFound, "not_found")
		}
	})
	t.Run("no waiter is left behind when the client goes away", func(t *testing.T) {
		o := a.place(t, customerID)
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(cctx, http.MethodGet, a.url+"/orders/"+o.ID, nil)
			req.Header.Set("Prefer", "wait=30")
			resp, err := a.client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		waitFor(t, "the GET waits", func() bool { return a.changes.Waiting() == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("client: %v, want context.Canceled", err)
		}
		waitFor(t, "the waiter is gone", func() bool { return a.changes.Waiting() == 0 })
	})
	if n := a.changes.Waiting(); n != 0 {
		t.Errorf("%d waiters left behind", n)
	}
}

func TestPreferWaitOnPost(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	customer := "6c1d4b5f-3a7e-4c2b-8b68-9e3f7d2a1b04"

	t.Run("201 Created with the final order when payment decides in time", func(t *testing.T) {
		go func() {
			waitFor(t, "the POST waits", func() bool { return a.changes.Waiting() == 1 })
			var id string
			if err := a.pool.QueryRow(ctx, `SELECT id::text FROM orders WHERE customer_id = $1`, customer).Scan(&id); err != nil {
				t.Error(err)
				return
			}
			a.transition(t, id, order.Confirmed)
		}()
		resp := a.as(t, customer, auth.ScopeCustomer).request(t, ctx, http.MethodPost, "/orders", validOrder().with("customer_id", nil).JSON(t),
			"Content-Type", jsonType, "Prefer", "wait=20")
		got := decodeOrder(t, resp, http.StatusCreated)
		if got.Status != "CONFIRMED" || resp.Header.Get("Location") != "/orders/"+got.ID || resp.Header.Get("Preference-Applied") != "wait=20" {
			t.Errorf("status %s, Location %q, Preference-Applied %q", got.Status, resp.Header.Get("Location"), resp.Header.Get("Preference-Applied"))
		}
	})
	t.Run("202 with the pending order when the wait runs out", func(t *testing.T) {
		resp := a.request(t, ctx, http.MethodPost, "/orders", validOrder().JSON(t), "Content-Type", jsonType, "Prefer", "wait=1")
		got := decodeOrder(t, resp, http.StatusAccepted)
		if got.Status != "PENDING_PAYMENT" || resp.Header.Get("Location") != "/orders/"+got.ID || resp.Header.Get("Preference-Applied") != "wait=1" {
			t.Errorf("status %s, Location %q, Preference-Applied %q", got.Status, resp.Header.Get("Location"), resp.Header.Get("Preference-Applied"))
		}
	})
	t.Run("a bad request is refused before any wait", func(t *testing.T) {
		checkProblem(t, a.request(t, ctx, http.MethodPost, "/orders", `{"items":`, "Content-Type", jsonType, "Prefer", "wait=30"),
			http.StatusBadRequest, "malformed_json")
	})
	if n := a.changes.Waiting(); n != 0 {
		t.Errorf("%d waiters left behind", n)
	}
}

type sseEvent struct {
	ID, Event string
	Data      struct {
		OrderID      string `json:"order_id"`
		From, To     string
		CauseEventID string `json:"cause_event_id"`
		At           time.Time
	}
}

// readEvents reads the stream until the server closes it, reporting each event on ch.
func readEvents(t *testing.T, body io.Reader, ch chan<- sseEvent) {
	defer close(ch)
	sc := bufio.NewScanner(body)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Event != "" {
				ch <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			ev.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.Event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Data); err != nil {
				t.Errorf("data %q: %v", line, err)
			}
		}
	}
}

func TestOrderEventsStreamEachChangeAndClose(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	o := a.place(t, customerID)

	resp := a.request(t, ctx, http.MethodGet, "/orders/"+o.ID+"/events", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent)
	go readEvents(t, resp.Body, ch)
	first := <-ch
	if first.ID != "1" || first.Event != "status" || first.Data.To != "PENDING_PAYMENT" || first.Data.From != "" || first.Data.OrderID != o.ID {
		t.Errorf("first event = %+v", first)
	}
	a.transition(t, o.ID, order.Confirmed)
	second := <-ch
	if second.ID != "2" || second.Data.From != "PENDING_PAYMENT" || second.Data.To != "CONFIRMED" || second.Data.CauseEventID != "payment-event-1" {
		t.Errorf("second event = %+v", second)
	}
	if ev, open := <-ch; open {
		t.Errorf("after the terminal change the stream went on: %+v", ev)
	}

	// Resuming: only what came after Last-Event-ID, then the end.
	resp = a.request(t, ctx, http.MethodGet, "/orders/"+o.ID+"/events", "", "Last-Event-ID", "1")
	ch = make(chan sseEvent)
	go readEvents(t, resp.Body, ch)
	var got []string
	for ev := range ch {
		got = append(got, ev.ID+":"+ev.Data.To)
	}
	if strings.Join(got, ",") != "2:CONFIRMED" {
		t.Errorf("resumed after 1: %v, want [2:CONFIRMED]", got)
	}
	resp = a.request(t, ctx, http.MethodGet, "/orders/"+o.ID+"/events", "", "Last-Event-ID", "2")
	if body, _ := io.ReadAll(resp.Body); strings.Contains(string(body), "event:") {
		t.Errorf("resumed after the last change: %q, want an empty stream", body)
	}

	// An id the stream never gave out (too high, garbage) starts it over.
	for _, last := range []string{"99", "-3", "x"} {
		resp = a.request(t, ctx, http.MethodGet, "/orders/"+o.ID+"/events", "", "Last-Event-ID", last)
		ch = make(chan sseEvent)
		go readEvents(t, resp.Body, ch)
		n := 0
		for range ch {
			n++
		}
		if n != 2 {
			t.Errorf("Last-Event-ID %s: %d events, want both", last, n)
		}
	}

	checkProblem(t, a.get(t, "/orders/019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f/events"), http.StatusNotFound, "not_found")
	checkProblem(t, a.get(t, "/orders/nope/events"), http.StatusNotFound, "not_found")
	waitFor(t, "no stream is left subscribed", func() bool { return a.changes.Waiting() == 0 })
}

func TestCancelOrder(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	o := a.place(t, customerID)
	var correlationID string
	if err := a.pool.QueryRow(ctx, `SELECT correlation_id FROM orders WHERE id = $1`, o.ID).Scan(&correlationID); err != nil {
		t.Fatal(err)
	}

	got := decodeOrder(t, a.request(t, ctx, http.MethodPost, "/orders/"+o.ID+"/cancel", ""), http.StatusOK)
	if got.Status != "CANCELLED" || got.ID != o.ID || !got.UpdatedAt.After(o.UpdatedAt) {
		t.Errorf("cancelled order = %+v", got)
	}
	// Published through the outbox, with the order's correlation id, and recorded as the
	// cause of the change.
	var key string
	var headers map[string]string
	var payload []byte
	err := a.pool.QueryRow(ctx, `SELECT key, headers, payload FROM outbox WHERE topic = $1`, events.TopicOrderCancelled).Scan(&key, &headers, &payload)
	if err != nil {
		t.Fatal(err)
	}
	var ev events.OrderCancelled
	if err := json.Unmarshal(payload, &ev); err != nil {
		t.Fatal(err)
	}
	if key != o.ID || headers[events.HeaderCorrelationID] != correlationID || ev.OrderID != o.ID ||
		ev.TotalCents != o.TotalCents || ev.CustomerEmail != o.CustomerEmail || ev.Currency != o.Currency {
		t.Errorf("order.cancelled key %s headers %v payload %+v", key, headers, ev)
	}
	var cause string
	if err := a.pool.QueryRow(ctx, `SELECT cause_event_id FROM order_history WHERE order_id = $1 AND to_status = 'CANCELLED'`, o.ID).Scan(&cause); err != nil {
		t.Fatal(err)
	}
	if cause != headers[events.HeaderID] {
		t.Errorf("history cause %s, want the order.cancelled event %s", cause, headers[events.HeaderID])
	}

	p := checkProblem(t, a.request(t, ctx, http.MethodPost, "/orders/"+o.ID+"/cancel", ""), http.StatusConflict, "order_not_cancellable")
	if !strings.Contains(p.Detail, "CANCELLED") {
		t.Errorf("detail %q does not say where the order stands", p.Detail)
	}
	confirmed := a.place(t, customerID)
	a.transition(t, confirmed.ID, order.Confirmed)
	checkProblem(t, a.request(t, ctx, http.MethodPost, "/orders/"+confirmed.ID+"/cancel", ""), http.StatusConflict, "order_not_cancellable")
	checkProblem(t, a.request(t, ctx, http.MethodPost, "/orders/019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f/cancel", ""), http.StatusNotFound, "not_found")
	checkProblem(t, a.request(t, ctx, http.MethodPost, "/orders/x'--/cancel", ""), http.StatusNotFound, "not_found")
	checkProblem(t, a.request(t, ctx, http.MethodGet, "/orders/"+o.ID+"/cancel", ""), http.StatusMethodNotAllowed, "method_not_allowed")

	var n int
	if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE topic = $1`, events.TopicOrderCancelled).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d order.cancelled events (%v), want 1: a refused cancel publishes nothing", n, err)
	}
}
