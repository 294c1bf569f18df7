// Package tracing is a service's OpenTelemetry traces: the tracer provider, exporting over
// OTLP/HTTP when the standard OTEL_* variables ask for it, and the W3C trace context that
// ties one order's spans together across services (the traceparent of HTTP requests and of
// Kafka records).
//
// Spans are made whether or not they are exported: their ids go into the records'
// traceparent headers and into the log lines (trace_id), so the logs of one order can be
// found across the services even with no collector. Without an exporter a new trace is
// not sampled (nothing is recorded), and a span whose parent was sampled elsewhere is
// recorded and dropped, so a service without a collector never breaks a trace others
// export.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope names the instrumentation that makes orderflow's spans.
const Scope = "github.com/orderflow/common-events/tracing"

// Config says whether and where spans are exported, as the standard OTEL_* variables
// describe it (ReadConfig reads them).
type Config struct {
	// Endpoint is the OTLP/HTTP traces URL (http://collector:4318/v1/traces); empty: spans
	// are not exported.
	Endpoint string
	// Headers are sent with every export (OTEL_EXPORTER_OTLP_HEADERS), e.g. an API key.
	Headers map[string]string
	// ServiceName overrides the service's own name in the spans' resource.
	ServiceName string
	// Sampler decides which new traces are recorded; nil: every one
	// (parentbased_always_on). It applies only when exporting.
	Sampler sdktrace.Sampler
}

// Provider makes a service's spans and, when configured, exports them.
type Provider struct {
	tp        *sdktrace.TracerProvider
	exporting bool
}

// New returns the provider of service's spans. Spans are exported in batches from a
// bounded queue in the background: a slow or absent collector costs dropped spans, never
// a slower request. log gets a line when the collector stops taking spans and one when it
// takes them again.
func New(service string, cfg Config, log *slog.Logger) (*Provider, error) {
	name := service
	if cfg.ServiceName != "" {
		name = cfg.ServiceName
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(name))
	if cfg.Endpoint == "" {
		// Ids for the logs and the records, nothing recorded unless a caller's trace is.
		return &Provider{tp: sdktrace.NewTracerProvider(sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))}, nil
	}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(cfg.Endpoint), otlptracehttp.WithHeaders(cfg.Headers))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	sampler := cfg.Sampler
	if sampler == nil {
		sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	return &Provider{exporting: true, tp: sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSampler(sampler),
		sdktrace.WithBatcher(&loggedExporter{SpanExporter: exp, log: log, endpoint: cfg.Endpoint}))}, nil
}

// loggedExporter tells the service's log when exports start and stop failing, instead of
// OpenTelemetry's process-wide error handler, which would write every failure to stderr
// unstructured.
type loggedExporter struct {
	sdktrace.SpanExporter
	log      *slog.Logger
	endpoint string
	failing  atomic.Bool
}

func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if err := e.SpanExporter.ExportSpans(ctx, spans); err != nil {
		if !e.failing.Swap(true) {
			e.log.Warn("tracing: the collector does not take spans; they are dropped until it does", "endpoint", e.endpoint, "err", err)
		}
		return nil // told: the batch is dropped either way
	}
	if e.failing.Swap(false) {
		e.log.Info("tracing: the collector takes spans again", "endpoint", e.endpoint)
	}
	return nil
}

// Tracer returns the tracer orderflow's spans are made with.
func (p *Provider) Tracer() trace.Tracer { return p.tp.Tracer(Scope) }

// Exporting reports whether spans leave the process.
func (p *Provider) Exporting() bool { return p.exporting }

// Shutdown exports the spans still queued, waiting at most 5 seconds for the collector.
func (p *Provider) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.tp.Shutdown(ctx)
}

// Start starts a span as a child of the span in ctx, with that span's tracer: work done
// deep in a request or a record's handling joins its trace without a tracer being passed
// down. With no span in ctx it makes nothing.
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(Scope).Start(ctx, name,
		trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// End ends span, marked failed with err when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

var w3c = propagation.TraceContext{}

// TraceParent returns the W3C traceparent of the span in ctx, or "" when there is none.
func TraceParent(ctx context.Context) string {
	var c traceparentCarrier
	w3c.Inject(ctx, &c)
	return string(c)
}

// Remote returns ctx carrying the span context traceparent names, as the parent of the
// spans started from it; an empty or malformed traceparent leaves ctx as it is.
func Remote(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	c := traceparentCarrier(traceparent)
	return w3c.Extract(ctx, &c)
}

// traceparentCarrier carries a traceparent alone, for the propagator to read or write:
// every consumed record and published event goes through one, and a map for the one
// header cost most of the time and memory of the way.
type traceparentCarrier string

func (c *traceparentCarrier) Get(key string) string {
	if key != traceparentHeader {
		return ""
	}
	return string(*c)
}

func (c *traceparentCarrier) Set(key, value string) {
	if key == traceparentHeader {
		*c = traceparentCarrier(value)
	}
}

func (c *traceparentCarrier) Keys() []string { return []string{traceparentHeader} }

const traceparentHeader = "traceparent"

// Extract returns ctx carrying the trace context of an incoming request's headers.
func Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	return w3c.Extract(ctx, carrier)
}

// TraceID returns the trace id of the span in ctx, or "" when there is none.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// Attributes orderflow puts on its spans, so a trace can be found by either id.
func OrderID(id string) attribute.KeyValue       { return attribute.String("order_id", id) }
func CorrelationID(id string) attribute.KeyValue { return attribute.String("correlation_id", id) }

// LogHandler adds trace_id and span_id to every line logged with a context that carries a
// span (InfoContext and the like), so a log line leads to its trace. The attributes a
// logger is given With are kept as they are and written only when a line is: a consumer
// makes a logger with the record's topic, partition, offset and ids for every record,
// and most records log nothing (the JSON handler would encode them at once).
func LogHandler(h slog.Handler) slog.Handler { return logHandler{inner: h} }

type logHandler struct {
	inner   slog.Handler
	pending []slog.Attr // given With, not yet handed to inner
}

func (h logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if len(h.pending) > 0 {
		// The logger's attributes first, as the handler would have written them.
		with := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		with.AddAttrs(h.pending...)
		r.Attrs(func(a slog.Attr) bool { with.AddAttrs(a); return true })
		r = with
	}
	if sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.inner.Handle(ctx, r)
}

func (h logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return logHandler{inner: h.inner, pending: append(slices.Clip(h.pending), attrs...)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	inner := h.inner
	if len(h.pending) > 0 {
		inner = inner.WithAttrs(h.pending)
	}
	return logHandler{inner: inner.WithGroup(name)}
}
