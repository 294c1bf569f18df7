package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/tracing"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// provider is one service's spans, recorded into exp as they end.
func provider(t *testing.T, service string, exp *tracetest.InMemoryExporter) trace.Tracer {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service))))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp.Tracer(tracing.Scope)
}

// One request's trace follows its event through the outbox, the relay, the broker and a
// consumer in another service, down to the work the handler does: every span a child of
// the one before, in the trace the caller's traceparent named, with the order's ids.
func TestOneTraceFromRequestToConsumer(t *testing.T) {
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	front, back := provider(t, "front", exp), provider(t, "back", exp)

	ordersDB, paymentsDB := testenv.Pool(t), testenv.Pool(t)
	if err := migrations.UpPool(ctx, ordersDB, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	if err := migrations.UpPool(ctx, paymentsDB, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	brokers := testenv.Kafka(t).Addrs
	if err := kafka.EnsureTopics(brokers, testenv.KafkaConfig("t"), kafka.TopicSpec{Partitions: 1}, events.TopicOrderCreated); err != nil {
		t.Fatal(err)
	}

	// The front service: a request writes an order.created event to its outbox, in a
	// span of its own, as order-service does.
	e := web.NewEcho(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	e.Use(web.Traced(front, "/healthz"))
	e.POST("/orders", func(c echo.Context) error {
		ctx, span := tracing.Start(c.Request().Context(), "outbox order.created", trace.SpanKindProducer, tracing.OrderID("o-1"))
		defer span.End()
		env, err := events.New(events.OrderCreated{
			OrderID: "o-1", CustomerID: "c", CustomerEmail: "a@b.c", Items: []events.Item{{SKU: "S", Quantity: 1, UnitPriceCents: 100}},
			TotalCents: 100, Currency: "EUR", PaymentMethod: "tok_visa", CreatedAt: time.Now(),
		}, events.Meta{CorrelationID: "corr-1", TraceParent: tracing.TraceParent(ctx)}, time.Now())
		if err != nil {
			return err
		}
		return pgx.BeginFunc(ctx, ordersDB, func(tx pgx.Tx) error {
			return outbox.Write(ctx, tx, env)
		})
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	producer, err := sarama.NewSyncProducer(brokers, testenv.KafkaConfig("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	relay := &outbox.Relay{Pool: ordersDB, Producer: producer, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Tracer: front}

	// The back service: consumes it and calls out, in the record's trace; its log lines
	// carry the trace id.
	client, err := sarama.NewClient(brokers, testenv.KafkaConfig("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	logged := &testenv.LogBuffer{}
	handled := make(chan struct{}, 1)
	runner := &consumer.Runner{
		Group: "back", Client: client, Pool: paymentsDB, DeadLetters: producer, Tracer: back,
		Log: slog.New(slog.NewJSONHandler(logged, nil)),
		Handlers: map[string]consumer.Handler{events.TopicOrderCreated: func(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
			_, span := tracing.Start(ctx, "provider charge", trace.SpanKindClient)
			span.End()
			msg.Log.Info("charged")
			handled <- struct{}{}
			return consumer.Apply{}, nil
		}},
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(rctx) })
	wg.Go(func() { _ = runner.Run(rctx) })
	defer func() { stop(); wg.Wait() }()

	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", nil)
	req.Header.Set("traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-handled:
	case <-time.After(30 * time.Second):
		t.Fatal("the event was not consumed within 30 s")
	}

	// The consumer's span ends after its Apply commits: wait for it.
	var spans tracetest.SpanStubs
	testenv.Eventually(10*time.Second, 20*time.Millisecond, func() bool { spans = exp.GetSpans(); return len(spans) >= 5 })
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	chain := []struct{ name, service string }{
		{"POST /orders", "front"}, {"outbox order.created", "front"}, {"publish order.created", "front"},
		{"process order.created", "back"}, {"provider charge", "back"},
	}
	var parent trace.SpanContext
	for i, want := range chain {
		s, ok := byName[want.name]
		if !ok {
			t.Fatalf("no span %q among %d: %v", want.name, len(spans), names(spans))
		}
		if got := s.SpanContext.TraceID().String(); got != callerTrace {
			t.Errorf("%s: trace %s, want the caller's %s", want.name, got, callerTrace)
		}
		if i > 0 && s.Parent.SpanID() != parent.SpanID() {
			t.Errorf("%s: parent %s, want %s (%s)", want.name, s.Parent.SpanID(), parent.SpanID(), chain[i-1].name)
		}
		if got := serviceOf(s); got != want.service {
			t.Errorf("%s: service %q, want %q", want.name, got, want.service)
		}
		parent = s.SpanContext
	}
	for _, name := range []string{"publish order.created", "process order.created"} {
		if attrs := attributes(byName[name]); attrs["order_id"] != "o-1" || attrs["correlation_id"] != "corr-1" {
			t.Errorf("%s: attributes %v, want order_id o-1 and correlation_id corr-1", name, attrs)
		}
	}
	if !strings.Contains(logged.String(), `"trace_id":"`+callerTrace+`"`) {
		t.Errorf("the handler's log line has no trace_id %s: %s", callerTrace, logged.String())
	}
}

// A line logged with a context that carries a span names its trace and span.
func TestLogLinesCarryTheTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	ctx, span := provider(t, "svc", exp).Start(context.Background(), "work")
	defer span.End()
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "svc")
	log.InfoContext(ctx, "with")
	log.Info("without")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var with, without map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &with)
	_ = json.Unmarshal([]byte(lines[1]), &without)
	if with["trace_id"] != span.SpanContext().TraceID().String() || with["span_id"] != span.SpanContext().SpanID().String() {
		t.Errorf("line = %v, want trace_id %s and span_id %s", with, span.SpanContext().TraceID(), span.SpanContext().SpanID())
	}
	if _, ok := without["trace_id"]; ok {
		t.Errorf("a line without a context has a trace_id: %v", without)
	}
}

// A logger's attributes are written as the JSON handler writes them, in order and in
// their groups, and only when a line is: a logger made and not used encodes nothing.
func TestLoggersAttributesAreWrittenWhenALineIs(t *testing.T) {
	var buf bytes.Buffer
	counted := &countingHandler{Handler: slog.NewJSONHandler(&buf, nil)}
	log := slog.New(tracing.LogHandler(counted)).With("service", "svc")
	for i := range 100 {
		_ = log.With("topic", "order.created", "offset", i) // a record's logger, never used
	}
	rec := log.With("topic", "order.created", "offset", 7)
	rec.Info("applied", "status", "ok")
	rec.WithGroup("g").With("inner", 1).Info("grouped", "x", 2)
	rec.Debug("not enabled")
	if counted.withAttrs != 1 { // the one under the group, when the group was made
		t.Errorf("the JSON handler was given attributes %d times; want once, for the group", counted.withAttrs)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	for i, want := range []string{
		`"msg":"applied","service":"svc","topic":"order.created","offset":7,"status":"ok"}`,
		`"msg":"grouped","service":"svc","topic":"order.created","offset":7,"g":{"inner":1,"x":2}}`,
	} {
		if !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d = %s; want it to end %s", i, lines[i], want)
		}
	}
}

type countingHandler struct {
	slog.Handler
	withAttrs int
}

func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h.withAttrs++
	return h.Handler.WithAttrs(attrs)
}

// Without an exporter, spans still have ids (for the logs and the records), a new trace
// is not sampled, and a trace sampled upstream stays sampled for the services after.
func TestWithoutAnExporterTracesStillPropagate(t *testing.T) {
	p, err := tracing.New("svc", tracing.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	ctx, span := p.Tracer().Start(context.Background(), "root")
	span.End()
	if tp := tracing.TraceParent(ctx); !strings.HasSuffix(tp, "-00") || tracing.TraceID(ctx) == "" {
		t.Errorf("a new trace's traceparent = %q, want ids and flags 00 (not sampled)", tp)
	}
	upstream := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, span = p.Tracer().Start(tracing.Remote(context.Background(), upstream), "child")
	span.End()
	tp := tracing.TraceParent(ctx)
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || !strings.HasSuffix(tp, "-01") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Errorf("child of a sampled upstream span: traceparent %q, want its trace, a span of its own, flags 01", tp)
	}
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}

func serviceOf(s tracetest.SpanStub) string {
	if v, ok := s.Resource.Set().Value(semconv.ServiceNameKey); ok {
		return v.AsString()
	}
	return ""
}

func attributes(s tracetest.SpanStub) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}
