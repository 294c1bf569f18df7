package main

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The sink makes an order's hops of the spans exported over OTLP: consecutive, from the
// POST to the CONFIRMED commit, each from the spans that mark it; spans of other groups
// and later redeliveries do not count, and an order whose trace lacks a span is left out.
func TestTheSinkMakesTheHopsOfEachCompleteTrace(t *testing.T) {
	sink, err := startTraceSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.close()
	t0 := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	span := func(trace byte, name, group string, fromMs, toMs float64) *tracepb.Span {
		s := &tracepb.Span{TraceId: bytes.Repeat([]byte{trace}, 16), Name: name,
			StartTimeUnixNano: uint64(t0.Add(time.Duration(fromMs * float64(time.Millisecond))).UnixNano()),
			EndTimeUnixNano:   uint64(t0.Add(time.Duration(toMs * float64(time.Millisecond))).UnixNano())}
		if group != "" {
			s.Attributes = []*commonpb.KeyValue{{Key: "messaging.consumer.group.name",
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: group}}}}
		}
		return s
	}
	order := func(trace byte) []*tracepb.Span {
		return []*tracepb.Span{
			span(trace, "POST /orders", "", 0, 5),
			span(trace, "outbox order.created", "", 1, 4),
			span(trace, "publish order.created", "", 10, 20),
			span(trace, "process order.created", "notification-service", 11, 12),
			span(trace, "process order.created", "payment-service", 15, 30),
			span(trace, "publish payment.completed", "", 33, 40),
			span(trace, "process payment.completed", "order-service", 38, 50),
		}
	}
	complete := append(order(1), span(1, "process order.created", "payment-service", 100, 200)) // redelivered
	incomplete := order(2)[:6]                                                                  // not confirmed yet
	// Two exports, as the two services send theirs.
	for _, spans := range [][]*tracepb.Span{slices.Concat(complete[:3], incomplete[:3]), slices.Concat(complete[3:], incomplete[3:])} {
		body, _ := proto.Marshal(&collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
			{ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}}}}})
		resp, err := http.Post(sink.url+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	got, orders := sink.log.take()
	if orders != 1 {
		t.Fatalf("orders with complete traces = %d, want 1", orders)
	}
	want := []float64{4, 6, 5, 15, 3, 5, 12, 50, 10, 7} // ms, in the order of hops
	if len(got) != len(want) {
		t.Fatalf("%d hops, want %d: %+v", len(got), len(want), got)
	}
	for i, h := range got {
		if h.Name != hops[i].name || h.Ms.P50 != want[i] || h.Ms.Max != want[i] {
			t.Errorf("%s: %+v, want %s: %g ms", h.Name, h.Ms, hops[i].name, want[i])
		}
	}
	// 4 ms is in the bucket of at most 5 ms; 50 ms in that of at most 50.
	if b := got[0].Buckets; b[2] != 1 {
		t.Errorf("buckets of a 4 ms hop: %v", b)
	}
	if b := got[7].Buckets; b[5] != 1 {
		t.Errorf("buckets of a 50 ms hop: %v", b)
	}
	if again, n := sink.log.take(); again != nil || n != 0 {
		t.Errorf("a second take has %d orders: %+v; want the traces forgotten", n, again)
	}

	var md strings.Builder
	markdownHops(&md, []runResult{{Name: "traced 250/s", Broker: "kafka", Hops: got, HopOrders: orders}})
	for _, s := range []string{"hop by hop, Apache Kafka, traced 250/s (from the spans of 1 orders' traces", "| all: POST → CONFIRMED committed | 50 / 50 / 50 / 50 |", "| 100% |"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("hops table lacks %q:\n%s", s, md.String())
		}
	}
}
