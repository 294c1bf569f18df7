package e2e

// The scenarios drive a running stack only through its public interfaces (REST), so the
// same suite runs against any deployment: set E2E_ORDER_URL, E2E_PAYMENT_URL and
// E2E_NOTIFICATION_URL to point it at one (docker compose, say). Without them it starts
// its own devstack: broker, PostgreSQL and the three services as OS processes, which also
// lets the scenarios that stop, start and kill services run.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/stack"
	"github.com/orderflow/devstack/testenv"
)

// target is a running orderflow seen from outside.
type target struct {
	t            *testing.T
	order        string
	payment      string
	notification string
	ctl          *stack.Stack        // nil for an external stack: no stop, start or kill
	mail         *testenv.MailServer // nil for an external stack
}

// parallel lets t run beside the package's other parallel tests: each has a stack of its
// own, on a broker of its own (testenv.Parallel). Against an external stack (E2E_ORDER_URL)
// they run one at a time. A test that counts the process's goroutines, times a scrape or
// an answer, or needs so many charges in flight at once (a rate) stays out: it runs
// first, alone.
func parallel(t *testing.T) {
	t.Helper()
	if os.Getenv("E2E_ORDER_URL") == "" {
		testenv.Parallel(t)
	}
}

var buildOnce struct {
	sync.Once
	dir string
	err error
}

// newTarget returns the external stack named by E2E_*_URL, or a fresh devstack of its own
// (with a real SMTP server catching its emails) that is stopped when the test ends.
func newTarget(t *testing.T, serviceEnv map[string]map[string]string) *target {
	t.Helper()
	return newLoggedTarget(t, serviceEnv, nil)
}

// newLoggedTarget is newTarget whose services also write their logs to logs, each line
// prefixed with the instance's name.
func newLoggedTarget(t *testing.T, serviceEnv map[string]map[string]string, logs io.Writer) *target {
	t.Helper()
	if u := os.Getenv("E2E_ORDER_URL"); u != "" {
		if serviceEnv != nil {
			t.Skip("needs settings on the services; run it against its own devstack")
		}
		return &target{t: t, order: u, payment: os.Getenv("E2E_PAYMENT_URL"), notification: os.Getenv("E2E_NOTIFICATION_URL")}
	}
	root := testenv.Root(t)
	buildOnce.Do(func() {
		buildOnce.dir, buildOnce.err = os.MkdirTemp("", "orderflow-bin-")
		if buildOnce.err == nil {
			buildOnce.err = stack.Build(context.Background(), root, buildOnce.dir)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	mail := testenv.SMTP(t)
	if logs == nil {
		logs = io.Discard
	}
	if os.Getenv("E2E_LOGS") != "" {
		logs = io.MultiWriter(logs, os.Stderr)
	}
	var brokers []string // on Apache Kafka, the test binary's; on kfake, the stack's own
	var secure *kafkabroker.Secure
	if testenv.BrokerKind() == testenv.ApacheKafka {
		b := testenv.Kafka(t)
		brokers, secure = b.Addrs, b.Secure
	}
	s, err := stack.Start(context.Background(), stack.Options{
		Root: root, DataDir: filepath.Join(t.TempDir(), "data"), BinDir: buildOnce.dir, Prebuilt: true, Brokers: brokers, KafkaSecure: secure,
		KafkaPort: testenv.FreePort(t), PGPort: testenv.FreePort(t), Issuer: authority,
		HTTPPorts: freePorts(t, stack.Services),
		Env:       withLoadLimits(map[string]string{"SMTP_ADDR": mail.Addr, "LOG_LEVEL": "warn"}), ServiceEnv: serviceEnv,
		Log: logs, FastPostgres: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return &target{
		t: t, ctl: s, mail: mail, order: s.Service("order-service").URL,
		payment: s.Service("payment-service").URL, notification: s.Service("notification-service").URL,
	}
}

// withLoadLimits raises each client's rate limits in env: the scenarios drive hundreds of
// orders a second as one customer, which the default limits (proven in edge_test.go)
// would slow to a crawl.
func withLoadLimits(env map[string]string) map[string]string {
	env["ORDER_RATE_LIMIT"], env["HTTP_RATE_LIMIT"], env["HTTP_RATE_BURST"] = "10000", "10000", "10000"
	return env
}

func (tg *target) control() *stack.Stack {
	if tg.ctl == nil {
		tg.t.Skip("stops or kills services: run it against its own devstack")
	}
	return tg.ctl
}

func (tg *target) startService(name string) {
	tg.t.Helper()
	if err := tg.control().Service(name).Start(context.Background()); err != nil {
		tg.t.Fatal(err)
	}
}

func (tg *target) stopService(name string) {
	tg.t.Helper()
	if err := tg.control().Service(name).Stop(); err != nil {
		tg.t.Fatalf("%s did not stop cleanly: %v", name, err)
	}
}

func (tg *target) killService(name string) {
	tg.t.Helper()
	if err := tg.control().Service(name).Kill(); err != nil {
		tg.t.Fatal(err)
	}
}

type placed struct {
	ID, Token, Email string
}

// place posts one order paid with token, for a customer with a fresh address.
func (tg *target) place(token string) (placed, error) {
	email := fmt.Sprintf("c-%x@example.com", rand.Uint64())
	o, err := placeOrder(tg.order, orderBody(email, token))
	return placed{ID: o.ID, Token: token, Email: email}, err
}

// placeMany posts n orders from workers goroutines; token(i) picks each one's token.
func (tg *target) placeMany(n, workers int, token func(i int) string) []placed {
	tg.t.Helper()
	out := make([]placed, n)
	errs := make(chan error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				p, err := tg.place(token(i))
				if err != nil {
					errs <- err
					continue
				}
				out[i] = p
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		tg.t.Fatal(err)
	}
	return out
}

func (tg *target) status(id string) orderResp {
	tg.t.Helper()
	var o orderResp
	if err := getJSON(tg.order+"/orders/"+id, &o); err != nil {
		tg.t.Fatal(err)
	}
	return o
}

// waitTerminal waits until every order left PENDING_PAYMENT and returns their states.
func (tg *target) waitTerminal(orders []placed, within time.Duration) map[string]orderResp {
	tg.t.Helper()
	got := map[string]orderResp{}
	pending := 0
	if !testenv.Eventually(within, 200*time.Millisecond, func() bool {
		for _, p := range orders {
			if o, ok := got[p.ID]; ok && o.Status != "PENDING_PAYMENT" {
				continue
			}
			got[p.ID] = tg.status(p.ID)
		}
		pending = 0
		for _, o := range got {
			if o.Status == "PENDING_PAYMENT" {
				pending++
			}
		}
		return pending == 0
	}) {
		tg.t.Fatalf("%d of %d orders still PENDING_PAYMENT after %s", pending, len(orders), within)
	}
	return got
}

func (tg *target) list(url string, v any) {
	tg.t.Helper()
	if err := getJSON(url, v); err != nil {
		tg.t.Fatal(err)
	}
}

func (tg *target) paymentsOf(id string) []paymentResp {
	var l listResp[paymentResp]
	tg.list(tg.payment+"/payments?order_id="+id, &l)
	return l.Items
}

func (tg *target) chargesOf(id string) int {
	var l listResp[json.RawMessage]
	tg.list(tg.payment+"/provider/charges?order_id="+id, &l)
	return len(l.Items)
}

func (tg *target) notificationsOf(id string) []notificationResp {
	var l listResp[notificationResp]
	tg.list(tg.notification+"/notifications?order_id="+id, &l)
	return l.Items
}

var expected = map[string]struct{ status, reason, kind string }{
	"tok_visa":                            {"CONFIRMED", "", "order_confirmed"},
	"tok_mastercard":                      {"CONFIRMED", "", "order_confirmed"},
	"tok_chargeDeclined":                  {"PAYMENT_FAILED", "card_declined", "payment_failed"},
	"tok_chargeDeclinedInsufficientFunds": {"PAYMENT_FAILED", "insufficient_funds", "payment_failed"},
}

// checkOutcomes asserts, for each order, the status its token calls for, exactly one
// payment, exactly one provider charge, and exactly one notification (and, on the
// devstack, one email) of the right kind.
func (tg *target) checkOutcomes(orders []placed, states map[string]orderResp) {
	tg.t.Helper()
	if tg.mail != nil {
		testenv.Eventually(30*time.Second, 100*time.Millisecond, func() bool { return len(tg.mail.Emails()) >= len(orders) })
		time.Sleep(300 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second) // one for all, so a failure fails fast
	for _, p := range orders {
		want := expected[p.Token]
		if o := states[p.ID]; o.Status != want.status || o.FailureReason != want.reason {
			tg.t.Errorf("order %s paid with %s = %s (%q), want %s (%q)", p.ID, p.Token, o.Status, o.FailureReason, want.status, want.reason)
		}
		if ps := tg.paymentsOf(p.ID); len(ps) != 1 {
			tg.t.Errorf("order %s has %d payments, want 1", p.ID, len(ps))
		}
		if n := tg.chargesOf(p.ID); n != 1 {
			tg.t.Errorf("order %s was charged %d times by the provider, want 1", p.ID, n)
		}
		ns := tg.notificationsOf(p.ID)
		for len(ns) == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			ns = tg.notificationsOf(p.ID)
		}
		if len(ns) != 1 || ns[0].Kind != want.kind {
			tg.t.Errorf("order %s has notifications %+v, want one %s", p.ID, ns, want.kind)
		}
		if tg.mail != nil {
			if es := tg.mail.To(p.Email); len(es) != 1 {
				tg.t.Errorf("order %s: %d emails reached %s, want 1", p.ID, len(es), p.Email)
			}
		}
	}
}

func TestScenario200ConcurrentOrders(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	tokens := []string{"tok_visa", "tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds"}
	orders := tg.placeMany(200, 20, func(i int) string { return tokens[i%len(tokens)] })
	states := tg.waitTerminal(orders, 30*time.Second)
	tg.checkOutcomes(orders, states)
}

// Seed 004's outage story: with payment-service down, orders are accepted and wait,
// honestly PENDING_PAYMENT, and nobody is emailed; when it returns, each is paid once.
func TestScenarioPaymentServiceOutage(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	tg.stopService("payment-service")
	orders := tg.placeMany(50, 10, func(int) string { return "tok_visa" })
	time.Sleep(2 * time.Second)
	for _, p := range orders {
		if o := tg.status(p.ID); o.Status != "PENDING_PAYMENT" {
			t.Fatalf("order %s = %s while payment-service is down, want PENDING_PAYMENT", p.ID, o.Status)
		}
		if ns := tg.notificationsOf(p.ID); len(ns) != 0 {
			t.Fatalf("order %s notified while payment-service is down: %+v", p.ID, ns)
		}
	}
	if n := len(tg.mail.Emails()); n != 0 {
		t.Fatalf("%d emails went out while payment-service was down", n)
	}
	tg.startService("payment-service")
	tg.checkOutcomes(orders, tg.waitTerminal(orders, 30*time.Second))
}

// notification-service is independent: orders are confirmed without it, and the emails
// follow when it returns.
func TestScenarioNotificationServiceOutage(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	tg.stopService("notification-service")
	orders := tg.placeMany(30, 10, func(int) string { return "tok_visa" })
	states := tg.waitTerminal(orders, 30*time.Second)
	if n := len(tg.mail.Emails()); n != 0 {
		t.Fatalf("%d emails went out while notification-service was down", n)
	}
	tg.startService("notification-service")
	tg.checkOutcomes(orders, states)
}

// order-service dies (SIGKILL) right after accepting orders: each accepted order is in its
// outbox, so after the restart every one is paid, none twice.
func TestScenarioOrderServiceKilledAfterAccepting(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	orders := tg.placeMany(40, 10, func(int) string { return "tok_visa" })
	tg.killService("order-service")
	tg.startService("order-service")
	tg.checkOutcomes(orders, tg.waitTerminal(orders, 30*time.Second))
}

// payment-service dies (SIGKILL) while it is charging a batch: after the restart every
// order ends up terminal and the provider's ledger shows one charge per order.
func TestScenarioPaymentServiceKilledWhileCharging(t *testing.T) {
	parallel(t)
	tg := newTarget(t, map[string]map[string]string{"payment-service": {"PROVIDER_LATENCY": "40ms"}})
	orders := tg.placeMany(60, 10, func(int) string { return "tok_visa" })
	time.Sleep(150 * time.Millisecond) // some charged, some in flight, some waiting
	tg.killService("payment-service")
	charged := 0
	for _, p := range orders {
		if o := tg.status(p.ID); o.Status != "PENDING_PAYMENT" {
			charged++
		}
	}
	t.Logf("%d of %d orders were through when payment-service was killed", charged, len(orders))
	tg.startService("payment-service")
	tg.checkOutcomes(orders, tg.waitTerminal(orders, 60*time.Second))
}

// A client that retries POST /orders with the same Idempotency-Key (a timeout, a lost
// answer) gets the first answer back and is charged once.
func TestScenarioIdempotencyKeyRetry(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	key := fmt.Sprintf("checkout-%x", rand.Uint64())
	body := `{"customer_id":"` + issuer.Customer + `","customer_email":"idem@example.com","currency":"EUR",
		"items":[{"sku":"BOOK-42","quantity":1,"unit_price_cents":1999}],"payment_method":"tok_visa"}`
	var ids []string
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, tg.order+"/orders", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var o orderResp
		_ = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		replayed := resp.Header.Get("Idempotent-Replayed") == "true"
		if resp.StatusCode != http.StatusAccepted || replayed != (i > 0) {
			t.Fatalf("attempt %d: %d, replayed %v", i+1, resp.StatusCode, replayed)
		}
		ids = append(ids, o.ID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("three attempts with one key gave orders %v", ids)
	}
	p := placed{ID: ids[0], Token: "tok_visa", Email: "idem@example.com"}
	tg.checkOutcomes([]placed{p}, tg.waitTerminal([]placed{p}, 30*time.Second))
}

// A customer's orders can be listed page by page, and an order's story told.
func TestScenarioListingAndHistory(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	customer := fmt.Sprintf("%08x-0000-4000-8000-%012x", rand.Uint32(), rand.Uint64()&0xffffffffffff)
	as := "Bearer " + customerToken(t, customer)
	var ids []string
	for range 3 {
		req := newRequest(t, context.Background(), http.MethodPost, tg.order+"/orders", `{"customer_email":"list@example.com","currency":"EUR",
			"items":[{"sku":"BOOK-42","quantity":1,"unit_price_cents":1999}],"payment_method":"tok_visa"}`,
			"Content-Type", "application/json", "Authorization", as)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var o orderResp
		_ = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		ids = append(ids, o.ID)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		var p struct {
			Items      []orderResp `json:"items"`
			NextCursor string      `json:"next_cursor"`
		}
		status, _, body := send(t, http.MethodGet, tg.order+"/orders?limit=2&cursor="+cursor, "", "Authorization", as)
		if err := json.Unmarshal(body, &p); status != http.StatusOK || err != nil {
			t.Fatalf("listing = %d %s (%v)", status, body, err)
		}
		for _, o := range p.Items {
			got = append(got, o.ID)
		}
		if p.NextCursor == "" || pages > 3 {
			break
		}
		cursor = p.NextCursor
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{ids[2], ids[1], ids[0]}) {
		t.Fatalf("listing = %v, want %v newest first", got, ids)
	}
	var o orderResp
	if status, _, body := send(t, http.MethodGet, tg.order+"/orders/"+ids[0], "", "Authorization", as, "Prefer", "wait=30"); status != http.StatusOK ||
		json.Unmarshal(body, &o) != nil || o.Status != "CONFIRMED" {
		t.Fatalf("order = %d %s, want CONFIRMED", status, body)
	}
	var h struct {
		Items []struct {
			From, To     string
			CauseEventID string `json:"cause_event_id"`
		} `json:"items"`
	}
	if status, _, body := send(t, http.MethodGet, tg.order+"/orders/"+ids[0]+"/history", "", "Authorization", as); status != http.StatusOK || json.Unmarshal(body, &h) != nil {
		t.Fatalf("history = %d %s", status, body)
	}
	if len(h.Items) != 2 || h.Items[1].From != "PENDING_PAYMENT" || h.Items[1].To != "CONFIRMED" || h.Items[1].CauseEventID == "" {
		t.Errorf("history = %+v, want PENDING_PAYMENT then CONFIRMED with its cause", h.Items)
	}
}
