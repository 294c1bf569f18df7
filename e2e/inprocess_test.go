package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/testenv"
	notificationapp "github.com/orderflow/notification-service/app"
	orderapp "github.com/orderflow/order-service/app"
	paymentapp "github.com/orderflow/payment-service/app"
	reconciliationapp "github.com/orderflow/reconciliation-service/app"
)

type runFunc func(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error

var runs = map[string]runFunc{
	"order":          orderapp.Run,
	"payment":        paymentapp.Run,
	"notification":   notificationapp.Run,
	"reconciliation": reconciliationapp.Run,
}

// identity is the service called name.
func identity(name string) services.Service {
	s, ok := services.Named(name)
	if !ok {
		panic("no service " + name)
	}
	return s
}

// inproc is the four services in this process, each with its own database, on one broker.
type inproc struct {
	t       *testing.T
	brokers []string
	mail    *testenv.MailServer
	dbs     map[string]string
	addrs   map[string]string
	env     map[string]map[string]string
	stops   map[string]func()
	logs    map[string]*testenv.LogBuffer // what each service logged
	mu      sync.Mutex
}

// newStack starts the services on b, each logged in as its own principal when b wants a
// login, after its kafka-setup granted it its ACLs.
func newStack(t *testing.T, b testenv.Broker, extra map[string]map[string]string) *inproc {
	t.Helper()
	brokers := b.Addrs
	s := &inproc{
		t: t, brokers: brokers, mail: testenv.SMTP(t),
		dbs: map[string]string{}, addrs: map[string]string{}, env: map[string]map[string]string{}, stops: map[string]func(){},
		logs: map[string]*testenv.LogBuffer{},
	}
	for name := range runs {
		s.logs[name] = &testenv.LogBuffer{}
		s.dbs[name] = testenv.Database(t)
		s.addrs[name] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		s.env[name] = map[string]string{
			"HTTP_ADDR": s.addrs[name], "DATABASE_URL": s.dbs[name], "KAFKA_BROKERS": strings.Join(brokers, ","),
			"KAFKA_TOPIC_PARTITIONS": "3", "LOG_LEVEL": "warn", "SMTP_ADDR": s.mail.Addr,
		}
		for k, v := range authEnv() {
			s.env[name][k] = v
		}
		for k, v := range b.ServiceEnv(name + "-service") {
			s.env[name][k] = v
		}
		for k, v := range extra[name] {
			s.env[name][k] = v
		}
		if b.Secure != nil {
			setupKafka(t, b, name)
		}
	}
	if _, set := extra["reconciliation"]["PROVIDER_LEDGER_URL"]; !set { // the simulator's ledger: payment-service's database
		s.env["reconciliation"]["PROVIDER_LEDGER_URL"] = s.dbs["payment"]
	}
	for _, name := range []string{"order", "payment", "notification", "reconciliation"} {
		s.start(name)
	}
	return s
}

// setupKafka runs service's kafka-setup as the broker's administrator.
func setupKafka(t *testing.T, b testenv.Broker, service string) {
	t.Helper()
	env := map[string]string{"KAFKA_BROKERS": strings.Join(b.Addrs, ","), "KAFKA_TOPIC_PARTITIONS": "3"}
	for k, v := range b.AdminEnv() {
		env[k] = v
	}
	if err := platform.SetupKafka(identity(service+"-service"), func(k string) string { return env[k] }, io.Discard); err != nil {
		t.Fatalf("%s-service kafka-setup: %v", service, err)
	}
}

// start runs a service and waits until it is ready.
func (s *inproc) start(name string) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out io.Writer = s.logs[name]
	if os.Getenv("E2E_LOGS") != "" {
		out = io.MultiWriter(out, os.Stderr)
	}
	env := s.env[name]
	go func() { done <- runs[name](ctx, func(k string) string { return env[k] }, out, out) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("%s-service stopped with: %v", name, err)
		}
	}
	s.mu.Lock()
	s.stops[name] = stop
	s.mu.Unlock()
	s.t.Cleanup(func() { s.stop(name) })

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			s.t.Fatalf("%s-service exited at start: %v", name, err)
		default:
		}
		resp, err := client.Get(s.url(name, "/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s-service not ready after 30s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *inproc) stop(name string) {
	s.mu.Lock()
	stop := s.stops[name]
	delete(s.stops, name)
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (s *inproc) url(name, path string) string { return "http://" + s.addrs[name] + path }

type orderResp struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	FailureReason string `json:"failure_reason"`
	CustomerEmail string `json:"customer_email"`
	TotalCents    int64  `json:"total_cents"`
}

// placeOrder posts an order paid with token and returns it as accepted.
func (s *inproc) placeOrder(token, email string) orderResp {
	s.t.Helper()
	o, err := placeOrder(s.url("order", ""), orderBody(email, token,
		`{"sku":"BOOK-42","quantity":2,"unit_price_cents":1999}`, `{"sku":"PEN-7","quantity":1,"unit_price_cents":350}`))
	must(s.t, err)
	return o
}

func (s *inproc) getOrder(id string) orderResp {
	s.t.Helper()
	var o orderResp
	s.getJSON("order", "/orders/"+id, &o)
	return o
}

func (s *inproc) getJSON(service, path string, v any) {
	s.t.Helper()
	must(s.t, getJSON(s.url(service, path), v))
}

// waitStatus polls the order until it leaves PENDING_PAYMENT or timeout passes.
func (s *inproc) waitStatus(id string, timeout time.Duration) orderResp {
	s.t.Helper()
	var o orderResp
	testenv.Eventually(timeout, 50*time.Millisecond, func() bool { o = s.getOrder(id); return o.Status != "PENDING_PAYMENT" })
	return o
}

type listResp[T any] struct {
	Items []T `json:"items"`
}

type paymentResp struct {
	Status        string `json:"status"`
	AmountCents   int64  `json:"amount_cents"`
	FailureReason string `json:"failure_reason"`
	ChargeID      string `json:"charge_id"`
}

type notificationResp struct {
	Kind      string `json:"kind"`
	Recipient string `json:"recipient"`
	Status    string `json:"status"`
}

func (s *inproc) payments(orderID string) []paymentResp {
	var l listResp[paymentResp]
	s.getJSON("payment", "/payments?order_id="+orderID, &l)
	return l.Items
}

func (s *inproc) notifications(orderID string) []notificationResp {
	var l listResp[notificationResp]
	s.getJSON("notification", "/notifications?order_id="+orderID, &l)
	return l.Items
}

// waitEmails waits until n emails reached rcpt, then lingers briefly to catch extras.
func (s *inproc) waitEmails(rcpt string, n int, timeout time.Duration) []testenv.Email {
	testenv.Eventually(timeout, 50*time.Millisecond, func() bool { return len(s.mail.To(rcpt)) >= n })
	time.Sleep(300 * time.Millisecond)
	return s.mail.To(rcpt)
}
