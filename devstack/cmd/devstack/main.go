// Command devstack runs the whole of orderflow on this machine without Docker: a broker, a
// PostgreSQL cluster and the four services, until Ctrl-C.
//
// Settings (environment): BROKER (kfake, the embedded default, or kafka for Apache Kafka
// as a process; it needs Java 17+ and, the first time, Maven), ORDERFLOW_DATA_DIR (default .data in the repository),
// KAFKA_PORT (9092), PG_PORT (55432), ORDER_PORT (8080), PAYMENT_PORT (8081),
// NOTIFICATION_PORT (8082), RECONCILIATION_PORT (8083), ISSUER_PORT (8090, the development token issuer), and
// SMTP_ADDR to send emails to a real SMTP server. At each start it writes tokens valid for
// 24 hours to .data/tokens: customer.jwt, customer2.jwt and operator.jwt.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/stack"
)

func main() {
	// Whoever started us (make, a shell script) may be ended without passing the signal
	// on: ask the kernel for SIGTERM when our parent dies, so nothing is left behind.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	opts, err := stack.FromEnv(getenv)
	if err != nil {
		return err
	}
	opts.Log = stdout
	if smtp := getenv("SMTP_ADDR"); smtp != "" {
		opts.Env = map[string]string{"SMTP_ADDR": smtp}
	}
	started := time.Now()
	broker := opts.Broker
	if broker == "" {
		broker = stack.BrokerKfake
	}
	fmt.Fprintf(stdout, "devstack: building the services and starting the broker (%s), PostgreSQL and the services…\n", broker)
	s, err := stack.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer s.Stop()

	tokens := filepath.Join(s.DataDir(), "tokens")
	if err := s.WriteTokens(tokens, 24*time.Hour); err != nil {
		return fmt.Errorf("write tokens: %w", err)
	}
	rel := func(p string) string { // as the user would type it from where they are
		wd, err := os.Getwd()
		if r, rerr := filepath.Rel(wd, p); err == nil && rerr == nil && !strings.HasPrefix(r, "..") {
			return r
		}
		return p
	}
	order := s.Service(services.Order.Name).URL
	fmt.Fprintf(stdout, `
orderflow is up (%.1fs). Data in %s; Ctrl-C stops everything.

  order-service          %s    POST /orders, GET /orders/{id}
  payment-service        %s    GET /payments?order_id=        (operators)
  notification-service   %s    GET /notifications?order_id=   (operators)
  reconciliation-service %s    GET /mismatches, GET /orders/{id}/timeline   (operators)
  token issuer           %s    its keys: %s
  Kafka broker           %s  (%s)
  PostgreSQL             %s  (databases %s)

Metrics (Prometheus, no token): GET /metrics on each service, e.g. %s/metrics

Every order and operator route needs a bearer token. Ready ones, valid for 24 hours:

  %s/customer.jwt    the demo customer %s
  %s/customer2.jwt   a second customer %s
  %s/operator.jwt    an operator (every order, payments, notifications, mismatches)

  make token SUB=<customer uuid> SCOPE=orderflow:customer   mints another

Place an order:

  TOKEN=$(cat %s/customer.jwt)
  curl -si %s/orders -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{
    "customer_email": "ada@example.com",
    "currency": "EUR",
    "items": [{"sku": "BOOK-42", "quantity": 2, "unit_price_cents": 1999}],
    "payment_method": "tok_visa"
  }'

then GET the Location it answers with (same header), or run scripts/place-order.sh.

`, time.Since(started).Seconds(), s.DataDir(), order, s.Service(services.Payment.Name).URL,
		s.Service(services.Notification.Name).URL, s.Service(services.Reconciliation.Name).URL, s.Issuer.URL, s.Issuer.JWKSURL(), s.KafkaAddr(), s.BrokerName(),
		s.Postgres.URL(services.Order.Database), strings.Join(services.Databases(), ", "), order,
		rel(tokens), issuer.Customer, rel(tokens), issuer.Customer2, rel(tokens), rel(tokens), order)

	// make reconcile-rebuild: SIGUSR1 (to the pid in devstack.pid) rebuilds
	// reconciliation-service's read model; the account goes to reconcile-rebuild.log,
	// whose last line says how it ended.
	pidFile := filepath.Join(s.DataDir(), "devstack.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "devstack: stopping…")
			return nil
		case <-usr1:
			rebuild(ctx, s, filepath.Join(s.DataDir(), "reconcile-rebuild.log"), stdout)
		}
	}
}

// rebuild runs the stack's reconciliation rebuild, its account to log and stdout.
func rebuild(ctx context.Context, s *stack.Stack, log string, stdout io.Writer) {
	f, err := os.Create(log)
	if err != nil {
		fmt.Fprintf(stdout, "devstack: reconcile-rebuild: %v\n", err)
		return
	}
	defer f.Close()
	w := io.MultiWriter(f, stdout)
	fmt.Fprintln(w, "devstack: rebuilding reconciliation-service's read model…")
	if err := s.RebuildReconciliation(ctx, w); err != nil {
		fmt.Fprintf(w, "rebuild: failed: %v\n", err)
		return
	}
	fmt.Fprintln(w, "rebuild: done")
}
