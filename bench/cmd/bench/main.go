// Command bench measures orderflow end to end and prints a report (markdown) and writes
// it as JSON. By default it starts its own devstack (broker, PostgreSQL with synchronous
// commit, the services as processes), once on each broker of BENCH_BROKERS (default
// "kfake,kafka": the embedded broker, then Apache Kafka), and reports the two side by
// side; BENCH_ORDER_URL with BENCH_ORDERS_DATABASE_URL, BENCH_NOTIFICATIONS_DATABASE_URL
// and BENCH_TOKEN (a customer's bearer token) point it at another stack instead.
// BENCH_TRACES=1 has its own stack's services export every span over OTLP to a sink in the
// bench, to measure what tracing costs at its most.
//
//	go run ./cmd/bench            (make bench)
//	BENCH_QUICK=1 go run ./cmd/bench   (make bench QUICK=1: the short version)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/orderflow/bench/relaycmp"
	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/ports"
	"github.com/orderflow/devstack/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "docs": // bench docs REPORT.json DOC.md
		err = writeDocs(os.Args[2], os.Args[3])
	case len(os.Args) == 2 && os.Args[1] == peerCommand: // the peer's flow, in a process of its own
		err = runPeer(ctx, os.Getenv)
	default:
		err = run(ctx, os.Getenv, os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// slowRun is an open-loop run with a provider that takes latency a charge.
type slowRun struct {
	latency string
	rate    float64
}

// plan is what one bench run does.
type plan struct {
	quick    bool
	duration time.Duration
	rates    []float64 // open loop, orders/s
	workers  []int     // closed loop
	slow     []slowRun
	// providerRate is the open load the simulator and the Stripe adapter on localstripe
	// are measured at, side by side, on the first broker (0: not measured).
	providerRate float64
	// hopRates are the open loads run with order-service and payment-service exporting
	// their spans, for the hops of POST→CONFIRMED (every run has them with BENCH_TRACES=1).
	hopRates  []float64
	yardstick time.Duration
	relayN    int           // events each relay moves in the side-by-side comparison
	relayMax  time.Duration // how long each relay gets
	authN     int           // bearer tokens verified to measure what one costs
	// peer loads the same flow built from Watermill's parts (peer.go) with the closed
	// loops and the open loops of peerRates, on every broker.
	peer      bool
	peerRates []float64
	// independent offers the best rate the runs before it sustained on the broker again,
	// from vegeta (vegeta.go): the same figure from a load generator no one here wrote.
	independent bool
}

func newPlan(quick bool) plan {
	if quick {
		return plan{quick: true, duration: 4 * time.Second, rates: []float64{250, 500}, workers: []int{32},
			slow: []slowRun{{"100ms", 250}, {"500ms", 250}}, providerRate: 100, hopRates: []float64{250, 500}, yardstick: 3 * time.Second,
			relayN: 3000, relayMax: 30 * time.Second, authN: 2000, peer: true, peerRates: []float64{250, 500}, independent: true}
	}
	return plan{duration: 10 * time.Second, rates: []float64{250, 500, 1000, 2000}, workers: []int{16, 64},
		slow: []slowRun{{"100ms", 1000}, {"500ms", 1000}}, providerRate: 100, hopRates: []float64{250, 1000}, yardstick: 5 * time.Second,
		relayN: 20000, relayMax: 90 * time.Second, authN: 10000, peer: true, peerRates: []float64{250, 1000}, independent: true}
}

// onlyRates, given BENCH_RATES (comma-separated: orders/s for an open loop, cN for a closed
// loop of N clients, vegeta for vegeta at the best rate of those), runs just those, with
// the instant provider: for looking into one load. The peer's flow runs them too with
// BENCH_PEER=1.
func (p *plan) onlyRates(v string, peer bool) error {
	if v == "" {
		return nil
	}
	p.rates, p.workers, p.slow, p.relayN, p.providerRate, p.hopRates = nil, nil, nil, 0, 0, nil
	p.peer, p.peerRates, p.independent = peer, nil, false
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "vegeta" {
			p.independent = true
			continue
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(f, "c")); strings.HasPrefix(f, "c") && err == nil && n > 0 {
			p.workers = append(p.workers, n)
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r <= 0 {
			return fmt.Errorf("BENCH_RATES: want orders/s, cN (N clients) or vegeta, comma-separated, got %q", v)
		}
		p.rates = append(p.rates, r)
		p.peerRates = append(p.peerRates, r)
	}
	if p.independent && len(p.rates) == 0 && len(p.workers) == 0 {
		return errVegetaAlone
	}
	return nil
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	p := newPlan(getenv("BENCH_QUICK") != "" && getenv("BENCH_QUICK") != "0")
	if err := p.onlyRates(getenv("BENCH_RATES"), getenv("BENCH_PEER") == "1"); err != nil {
		return err
	}
	out := getenv("BENCH_OUT")
	started := time.Now()
	brokers, err := brokersOf(getenv)
	if err != nil {
		return err
	}

	rep := report{Commit: commit(), Machine: machine(), Quick: p.quick, Started: started.UTC(), ShowStatements: getenv("BENCH_STATEMENTS") == "1"}
	for i, broker := range brokers {
		if err := p.measure(ctx, getenv, stdout, broker, i == 0, &rep); err != nil {
			return err
		}
	}
	rep.Seconds = time.Since(started).Seconds()
	rep.markdown(stdout)
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nbench: report written to %s\n", out)
	}
	return nil
}

// brokerKafkaSecure is Apache Kafka as devstack runs it by default: SASL_SSL with
// SCRAM-SHA-512, each service its own principal under its ACLs. The bench's plain
// "kafka" is the same broker open (PLAINTEXT, no ACLs), so the two side by side say what
// the security costs.
const brokerKafkaSecure = "kafka-secure"

// brokersOf reads BENCH_BROKERS: the brokers to run the bench on, in order. Against
// another stack (BENCH_ORDER_URL) there is one pass, on whatever broker it has.
func brokersOf(getenv func(string) string) ([]string, error) {
	if getenv("BENCH_ORDER_URL") != "" {
		return []string{"external"}, nil
	}
	v := getenv("BENCH_BROKERS")
	if v == "" {
		v = stack.BrokerKfake + "," + stack.BrokerKafka
	}
	var out []string
	for _, b := range strings.Split(v, ",") {
		if b != stack.BrokerKfake && b != stack.BrokerKafka && b != brokerKafkaSecure {
			return nil, fmt.Errorf("BENCH_BROKERS: want %s, %s and/or %s, comma-separated, got %q", stack.BrokerKfake, stack.BrokerKafka, brokerKafkaSecure, v)
		}
		out = append(out, b)
	}
	return out, nil
}

// measure runs the plan on a stack with broker; the first pass also measures the
// yardstick and compares the outbox relays.
func (p plan) measure(ctx context.Context, getenv func(string) string, stdout io.Writer, broker string, first bool, rep *report) error {
	tg, err := openTarget(ctx, getenv, stdout, broker)
	if err != nil {
		return err
	}
	defer tg.close()

	if first {
		fmt.Fprintf(stdout, "bench: %s; yardstick…\n", rep.Machine)
		if rep.Yardstick, err = yardstick(ctx, tg.adminDB, p.yardstick); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bench: %.0f single-row INSERT transactions/s (synchronous commit)\n", rep.Yardstick.TPS)
		fmt.Fprintf(stdout, "bench: waking the relay: NOTIFY in each transaction, then a Waker after the commits, %s each…\n", p.yardstick)
		if rep.Wake, err = wakeCost(ctx, tg.adminDB, p.yardstick); err != nil {
			return err
		}
		if rep.Auth, err = authCost(ctx, p.authN); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bench: verifying a bearer token: %.1f µs the first time, %.2f µs again\n", rep.Auth.FirstMicros, rep.Auth.AgainMicros)
	}
	// A new stack's consumer groups join and its JVM (on Apache Kafka) warms up under a
	// little load first, so the first measured run is not the start-up.
	fmt.Fprintf(stdout, "bench [%s]: warming up at 50 orders/s for 3s…\n", broker)
	if _, err := tg.openLoop(ctx, "warm-up", 50, 3*time.Second); err != nil {
		return err
	}
	if tg.sink != nil {
		tg.sink.log.take() // the warm-up's
	}
	add := func(r runResult, err error) error {
		if err != nil {
			return err
		}
		r.Broker = broker
		if tg.tracing {
			time.Sleep(time.Second) // the last spans' export (OTEL_BSP_SCHEDULE_DELAY)
			r.Hops, r.HopOrders = tg.sink.log.take()
		}
		rep.Runs = append(rep.Runs, r)
		return nil
	}
	for _, rate := range p.rates {
		fmt.Fprintf(stdout, "bench [%s]: open loop at %.0f orders/s for %s…\n", broker, rate, p.duration)
		if err := add(tg.openLoop(ctx, fmt.Sprintf("open %g/s", rate), rate, p.duration)); err != nil {
			return err
		}
	}
	for _, w := range p.workers {
		fmt.Fprintf(stdout, "bench [%s]: closed loop with %d clients for %s…\n", broker, w, p.duration)
		if err := add(tg.closedLoop(ctx, fmt.Sprintf("closed %d clients", w), w, p.duration)); err != nil {
			return err
		}
	}
	if rate := bestSustained(rep.Runs, broker); p.independent && rate == 0 {
		fmt.Fprintf(stdout, "bench [%s]: no vegeta: every run before it left orders pending, so none sustained a rate\n", broker)
	} else if p.independent {
		fmt.Fprintf(stdout, "bench [%s]: vegeta, open loop at %.0f orders/s (the best rate sustained so far) for %s…\n", broker, rate, p.duration)
		if err := add(tg.vegetaLoop(ctx, rate, p.duration)); err != nil {
			return err
		}
	}
	if tg.stack == nil {
		return nil
	}
	for _, sr := range p.slow {
		fmt.Fprintf(stdout, "bench [%s]: slow provider (%s a charge), open loop at %.0f orders/s for %s…\n", broker, sr.latency, sr.rate, p.duration)
		if err := tg.restartPayment(ctx, sr.latency); err != nil {
			return err
		}
		if err := add(tg.openLoop(ctx, fmt.Sprintf("provider %s, %g/s", sr.latency, sr.rate), sr.rate, p.duration)); err != nil {
			return err
		}
	}
	if err := tg.restartPayment(ctx, "0s"); err != nil {
		return err
	}
	if !tg.traceAll && len(p.hopRates) > 0 {
		if err := tg.traced(ctx, stdout, true); err != nil {
			return err
		}
		tg.tracing = true
		tg.sink.log.take()
		for _, rate := range p.hopRates {
			fmt.Fprintf(stdout, "bench [%s]: open loop at %.0f orders/s for %s, its hops traced…\n", broker, rate, p.duration)
			if err := add(tg.openLoop(ctx, fmt.Sprintf("traced %g/s", rate), rate, p.duration)); err != nil {
				return err
			}
		}
		tg.tracing = false
		if err := tg.traced(ctx, stdout, false); err != nil {
			return err
		}
	}
	if first && p.providerRate > 0 {
		if err := tg.providerRuns(ctx, stdout, broker, p.providerRate, p.duration, add); err != nil {
			return err
		}
	}
	if p.peer && broker != brokerKafkaSecure { // the peer's clients are plaintext
		if err := p.peerRuns(ctx, stdout, tg, broker, add); err != nil {
			return err
		}
	}
	if tg.traceAll {
		rep.Traces = append(rep.Traces, tracesResult{Broker: broker, Spans: tg.sink.spans.Load(), Exports: tg.sink.exports.Load()})
		fmt.Fprintf(stdout, "bench [%s]: the services exported %d spans in %d OTLP requests\n", broker, tg.sink.spans.Load(), tg.sink.exports.Load())
	}
	if !first || p.relayN == 0 || broker == brokerKafkaSecure { // the relays' clients are plaintext
		return nil
	}
	fmt.Fprintf(stdout, "bench [%s]: outbox relay vs Watermill SQL Forwarder, %d events each…\n", broker, p.relayN)
	ours, peer, err := relaycmp.Compare(ctx, tg.adminDB, tg.brokers, p.relayN, p.relayMax, tg.log)
	if err != nil {
		return err
	}
	rep.RelayBroker = broker
	rep.Relay = []relayResult{toRelayResult(ours), toRelayResult(peer)}
	return nil
}

// target is the stack under load: its order API, the databases the report reads the
// server-side timestamps from, and, for our own devstack, control of the processes.
type target struct {
	orderURL string
	// tokens are the customers' bearer tokens, taken in turn, one per order: the load
	// of many customers, each within its own rate limit and share of the service.
	tokens          []string
	next            atomic.Uint64
	ordersDB        string
	notificationsDB string
	adminDB         string
	brokers         []string
	stack           *stack.Stack
	dir             string
	pprof           map[string]string // service → its pprof address
	profileDir      string            // BENCH_PROFILE: CPU profiles of the runs go here
	broker          string            // the bench's name of the broker: kfake, kafka, kafka-secure
	// sink takes the spans of our own stack's services, when they export them: all of
	// them with BENCH_TRACES=1 (traceAll), order-service's and payment-service's in the hop
	// runs; tracing says whether they do now.
	sink              *traceSink
	traceAll, tracing bool
	log               *slog.Logger
	// dbs are the databases whose work the report counts; default the services'.
	dbs []string
	// peer is the process of the peer's flow this target is (peer.go), closed peerExited
	// once it ended; nil for orderflow.
	peer       *exec.Cmd
	peerExited chan struct{}
}

// databases are the databases whose statements, commits and rows a run counts.
func (tg *target) databases() []string {
	if tg.dbs != nil {
		return tg.dbs
	}
	return services.Databases()
}

// stackBroker is the devstack broker a bench broker runs on.
func stackBroker(broker string) string {
	if broker == brokerKafkaSecure {
		return stack.BrokerKafka
	}
	return broker
}

func openTarget(ctx context.Context, getenv func(string) string, stdout io.Writer, broker string) (*target, error) {
	if u := getenv("BENCH_ORDER_URL"); u != "" {
		tg := &target{orderURL: u, ordersDB: getenv("BENCH_ORDERS_DATABASE_URL"), tokens: strings.Fields(strings.ReplaceAll(getenv("BENCH_TOKEN"), ",", " ")),
			notificationsDB: getenv("BENCH_NOTIFICATIONS_DATABASE_URL"), adminDB: getenv("BENCH_ORDERS_DATABASE_URL")}
		if tg.ordersDB == "" || tg.notificationsDB == "" || len(tg.tokens) == 0 {
			return nil, errors.New("BENCH_ORDER_URL needs BENCH_ORDERS_DATABASE_URL and BENCH_NOTIFICATIONS_DATABASE_URL, where the report reads the outcomes, and BENCH_TOKEN, customers' tokens (comma-separated; enough that each stays within ORDER_RATE_LIMIT)")
		}
		return tg, nil
	}
	dir, err := os.MkdirTemp("", "orderflow-bench-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "stack.log"))
	if err != nil {
		return nil, err
	}
	// Spans, when exported, leave at least every 100 ms, and none is dropped for a full
	// queue: the hops are made of every order's.
	env := map[string]string{"LOG_LEVEL": "warn", "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BSP_MAX_QUEUE_SIZE": "200000"}
	sink, err := startTraceSink() // before the ports are chosen, so none is its
	if err != nil {
		return nil, err
	}
	traceAll := getenv("BENCH_TRACES") == "1"
	if traceAll {
		env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
	}
	names := services.Names()
	chosen := make([]int, 3+2*len(names)) // broker, PostgreSQL, issuer, and each service's HTTP and pprof
	for i := range chosen {
		if chosen[i], err = ports.Free(); err != nil {
			sink.close()
			return nil, err
		}
	}
	fmt.Fprintf(stdout, "bench: starting a devstack on %s in %s (logs in stack.log there; spans exported: %t)…\n", broker, dir, traceAll)
	httpPorts, serviceEnv, pprof := map[string]int{}, map[string]map[string]string{}, map[string]string{}
	for i, name := range names {
		httpPorts[name] = chosen[3+2*i]
		pprof[name] = fmt.Sprintf("127.0.0.1:%d", chosen[4+2*i])
		serviceEnv[name] = map[string]string{"PPROF_ADDR": pprof[name]}
	}
	s, err := stack.Start(ctx, stack.Options{
		DataDir: filepath.Join(dir, "data"), KafkaPort: chosen[0], PGPort: chosen[1], IssuerPort: chosen[2], Broker: stackBroker(broker),
		KafkaPlaintext: broker != brokerKafkaSecure, // the relay comparison's clients reach it as they are
		HTTPPorts:      httpPorts, Env: env, Log: logf, PostgresStats: true, ServiceEnv: serviceEnv,
	})
	if err != nil {
		sink.close()
		return nil, err
	}
	// Enough customers that each orders at most a few a second at the highest rate the
	// bench offers, within the default ORDER_RATE_LIMIT.
	tokens := make([]string, benchCustomers)
	for i := range tokens {
		if tokens[i], err = s.Token(uuid.NewString(), []string{auth.ScopeCustomer}, 24*time.Hour); err != nil {
			s.Stop()
			sink.close()
			return nil, err
		}
	}
	return &target{sink: sink, traceAll: traceAll, tracing: traceAll,
		orderURL: s.Service("order-service").URL, tokens: tokens, ordersDB: s.Postgres.URL("orders"),
		notificationsDB: s.Postgres.URL("notifications"), adminDB: s.Postgres.URL("postgres"),
		brokers: []string{s.KafkaAddr()}, stack: s, dir: dir, profileDir: getenv("BENCH_PROFILE"), broker: broker,
		pprof: pprof,
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, nil
}

// benchCustomers is how many customers the bench's own stack is loaded by.
const benchCustomers = 500

// token is the next order's customer.
func (tg *target) token() string { return tg.tokens[tg.next.Add(1)%uint64(len(tg.tokens))] }

func (tg *target) close() {
	if tg.stack != nil {
		tg.stack.Stop()
		_ = os.RemoveAll(tg.dir)
	}
	if tg.sink != nil {
		tg.sink.close()
	}
}

func (tg *target) restartPayment(ctx context.Context, latency string) error {
	return tg.restart(ctx, "payment-service", "PROVIDER_LATENCY", latency)
}

// restart stops service and starts it again with key set to value.
func (tg *target) restart(ctx context.Context, service, key, value string) error {
	sv := tg.stack.Service(service)
	if err := sv.Stop(); err != nil {
		return err
	}
	sv.Setenv(key, value)
	return sv.Start(ctx)
}
