package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/orderflow/devstack/testenv"
)

// span is one span as an OTLP collector receives it.
type span struct {
	service, name                  string
	traceID, spanID, parentID      string
	orderID, correlationID, status string
	kind                           string // SPAN_KIND_SERVER, …
}

// collector is an OTLP/HTTP traces receiver: what a service configured with
// OTEL_EXPORTER_OTLP_ENDPOINT really sends, decoded with the protocol's own types.
type collector struct {
	*httptest.Server
	mu    sync.Mutex
	spans []span
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want a protobuf POST to /v1/traces", http.StatusBadRequest)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, _ := io.ReadAll(body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, rs := range req.ResourceSpans {
			var service string
			for _, a := range rs.Resource.GetAttributes() {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					sp := span{service: service, name: s.Name, traceID: hex.EncodeToString(s.TraceId),
						spanID: hex.EncodeToString(s.SpanId), parentID: hex.EncodeToString(s.ParentSpanId), status: s.Status.GetCode().String(),
						kind: s.Kind.String()}
					for _, a := range s.Attributes {
						switch a.Key {
						case "order_id":
							sp.orderID = a.Value.GetStringValue()
						case "correlation_id":
							sp.correlationID = a.Value.GetStringValue()
						}
					}
					c.spans = append(c.spans, sp)
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(c.Close)
	return c
}

// trace returns the spans of the trace that has a span naming orderID.
func (c *collector) trace(orderID string) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var id string
	for _, s := range c.spans {
		if s.orderID == orderID {
			id = s.traceID
		}
	}
	var out []span
	for _, s := range c.spans {
		if id != "" && s.traceID == id {
			out = append(out, s)
		}
	}
	return out
}

// One order is one trace across the three services, exported over OTLP as the standard
// OTEL_* variables say: the POST, the outbox write and its publication, payment-service's
// handling with the provider's charge and its own event's publication, and both
// order-service's and notification-service's handling of that event, down to the email.
// Every span's parent is in the trace; the log lines of each service carry its trace_id.
func TestOneTracePerOrderAcrossTheServices(t *testing.T) {
	parallel(t)
	col := newCollector(t)
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL, "LOG_LEVEL": "info"}
	s := newStack(t, testenv.Kafka(t), map[string]map[string]string{"order": env, "payment": env, "notification": env})
	o := s.placeOrder("tok_visa", "traced@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	s.waitEmails("traced@example.com", 1, 30*time.Second)

	type wanted struct{ service, name, parent, kind string }
	want := []wanted{
		{"order-service", "POST /orders", "", "SPAN_KIND_SERVER"},
		{"order-service", "outbox order.created", "POST /orders", "SPAN_KIND_PRODUCER"},
		{"order-service", "publish order.created", "outbox order.created", "SPAN_KIND_PRODUCER"},
		{"payment-service", "process order.created", "publish order.created", "SPAN_KIND_CONSUMER"},
		{"payment-service", "provider charge", "process order.created", "SPAN_KIND_CLIENT"},
		{"payment-service", "publish payment.completed", "process order.created", "SPAN_KIND_PRODUCER"},
		{"order-service", "process payment.completed", "publish payment.completed", "SPAN_KIND_CONSUMER"},
		{"notification-service", "process payment.completed", "publish payment.completed", "SPAN_KIND_CONSUMER"},
		{"notification-service", "send email", "process payment.completed", "SPAN_KIND_CLIENT"},
	}
	// Spans leave in batches, every few seconds: wait until the last ones arrived.
	var spans []span
	find := func(service, name string) *span {
		i := slices.IndexFunc(spans, func(s span) bool { return s.service == service && s.name == name })
		if i < 0 {
			return nil
		}
		return &spans[i]
	}
	testenv.Eventually(30*time.Second, 200*time.Millisecond, func() bool {
		spans = col.trace(o.ID)
		return !slices.ContainsFunc(want, func(w wanted) bool { return find(w.service, w.name) == nil })
	})
	for _, w := range want {
		s := find(w.service, w.name)
		if s == nil {
			t.Errorf("no span %q from %s in the order's trace; it has %v", w.name, w.service, spans)
			continue
		}
		if s.status == "STATUS_CODE_ERROR" {
			t.Errorf("%s %q failed", w.service, w.name)
		}
		if s.kind != w.kind {
			t.Errorf("%s %q is a %s span, want %s", w.service, w.name, s.kind, w.kind)
		}
		if w.parent == "" {
			if s.parentID != "" {
				t.Errorf("%q has a parent %s, want the trace's root", w.name, s.parentID)
			}
			continue
		}
		if !slices.ContainsFunc(spans, func(p span) bool { return p.spanID == s.parentID && p.name == w.parent }) {
			t.Errorf("%s %q: its parent %s is not %q", w.service, w.name, s.parentID, w.parent)
		}
	}
	for _, name := range []string{"process order.created", "publish payment.completed"} {
		first, p := find("order-service", "publish order.created"), find("payment-service", name)
		if first != nil && p != nil && (p.correlationID == "" || p.correlationID != first.correlationID || p.orderID != o.ID) {
			t.Errorf("payment-service's %q: order_id %q, correlation_id %q; want %q and order-service's %q", name, p.orderID, p.correlationID, o.ID, first.correlationID)
		}
	}
	if len(spans) > 0 {
		for _, name := range []string{"order", "payment", "notification"} {
			if lines := s.logs[name].Lines(map[string]string{"trace_id": spans[0].traceID}); len(lines) == 0 {
				t.Errorf("%s-service logged no line with the order's trace_id %s", name, spans[0].traceID)
			}
		}
	}
}
