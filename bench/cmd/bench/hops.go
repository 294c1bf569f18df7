package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// The hops of an order's way from POST to CONFIRMED, each from the spans of its trace:
// where POST→CONFIRMED spends its time. Consecutive, so they add up to the whole.
var hopNames = []string{
	"POST → order and order.created committed (order-service)",
	"commit → relay sends order.created",
	"order.created through the broker to payment-service",
	"payment-service: charge, payment and payment.completed committed",
	"commit → relay sends payment.completed",
	"payment.completed through the broker to order-service",
	"order-service: CONFIRMED committed",
}

// The hops' total and the two sends, which overlap the hops through the broker.
const (
	hopTotal        = "all: POST → CONFIRMED committed"
	hopCreatedAck   = "of which the broker acknowledging order.created"
	hopCompletedAck = "of which the broker acknowledging payment.completed"
)

// hopBounds are the upper bounds, in ms, of the histograms' buckets; one more bucket
// takes what is slower.
var hopBounds = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}

type hopResult struct {
	Name string  `json:"name"`
	Ms   latency `json:"ms"`
	// Buckets counts the orders by the hop's time: Buckets[i] took at most hopBounds[i]
	// ms (and more than the bound before); the last counts the rest.
	Buckets []int `json:"buckets"`
}

// interval is a span's start and end, in ns since the epoch; the zero one: not seen.
type interval struct{ start, end int64 }

func (i interval) seen() bool { return i.start != 0 }

// orderTrace is what the hops need of one order's trace.
type orderTrace struct {
	post, write, createdSent, charged, completedSent, confirmed interval
}

// spans that make the hops, by span name, and the consumer group for a process span.
func (t *orderTrace) keep(name, group string, iv interval) {
	var at *interval
	switch {
	case name == "POST /orders":
		at = &t.post
	case name == "outbox order.created":
		at = &t.write
	case name == "publish order.created":
		at = &t.createdSent
	case name == "process order.created" && group == "payment-service":
		at = &t.charged
	case name == "publish payment.completed":
		at = &t.completedSent
	case name == "process payment.completed" && group == "order-service":
		at = &t.confirmed
	default:
		return
	}
	if !at.seen() || iv.start < at.start { // a redelivery: the first handling counts
		*at = iv
	}
}

func (t *orderTrace) complete() bool {
	return t.post.seen() && t.write.seen() && t.createdSent.seen() && t.charged.seen() && t.completedSent.seen() && t.confirmed.seen()
}

// hops are the order's hops, in hopNames' order, then the total and the two sends.
func (t *orderTrace) hops() []time.Duration {
	d := func(from, to int64) time.Duration { return time.Duration(to - from) }
	return []time.Duration{
		d(t.post.start, t.write.end),
		d(t.write.end, t.createdSent.start),
		d(t.createdSent.start, t.charged.start),
		d(t.charged.start, t.charged.end),
		d(t.charged.end, t.completedSent.start),
		d(t.completedSent.start, t.confirmed.start),
		d(t.confirmed.start, t.confirmed.end),
		d(t.post.start, t.confirmed.end),
		d(t.createdSent.start, t.createdSent.end),
		d(t.completedSent.start, t.completedSent.end),
	}
}

// traceLog keeps, per trace, the spans the hops are made of.
type traceLog struct {
	mu     sync.Mutex
	traces map[[16]byte]*orderTrace
}

func (l *traceLog) add(s *tracepb.Span) {
	var group string
	for _, a := range s.Attributes {
		if a.Key == "messaging.consumer.group.name" {
			group = a.Value.GetStringValue()
		}
	}
	var id [16]byte
	copy(id[:], s.TraceId)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.traces == nil {
		l.traces = map[[16]byte]*orderTrace{}
	}
	t := l.traces[id]
	if t == nil {
		t = &orderTrace{}
		l.traces[id] = t
	}
	t.keep(s.Name, group, interval{int64(s.StartTimeUnixNano), int64(s.EndTimeUnixNano)})
}

// take returns the hops of the orders whose traces are complete, and how many those are,
// and forgets every trace.
func (l *traceLog) take() (hops []hopResult, orders int) {
	l.mu.Lock()
	traces := l.traces
	l.traces = nil
	l.mu.Unlock()
	names := append(append([]string{}, hopNames...), hopTotal, hopCreatedAck, hopCompletedAck)
	all := make([][]time.Duration, len(names))
	for _, t := range traces {
		if !t.complete() {
			continue
		}
		orders++
		for i, d := range t.hops() {
			all[i] = append(all[i], max(d, 0)) // a few µs of clock order between processes
		}
	}
	if orders == 0 {
		return nil, 0
	}
	for i, name := range names {
		h := hopResult{Name: name, Ms: percentiles(all[i]), Buckets: make([]int, len(hopBounds)+1)}
		for _, d := range all[i] {
			ms := float64(d.Microseconds()) / 1000
			b := 0
			for b < len(hopBounds) && ms > hopBounds[b] {
				b++
			}
			h.Buckets[b]++
		}
		hops = append(hops, h)
	}
	return hops, orders
}

// traced has order-service and payment-service export every span to the bench's sink
// (on) or none (off), restarting both: the spans the hops are made of. Then it warms
// the two up again, their consumers back in their groups.
func (tg *target) traced(ctx context.Context, stdout io.Writer, on bool) error {
	endpoint := ""
	if on {
		endpoint = tg.sink.url
	}
	for _, name := range []string{"payment-service", "order-service"} {
		sv := tg.stack.Service(name)
		if err := sv.Stop(); err != nil {
			return err
		}
		sv.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
		if err := sv.Start(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "bench: order-service and payment-service exporting spans: %t; warming up at 50 orders/s for 3s…\n", on)
	_, err := tg.openLoop(ctx, "warm-up", 50, 3*time.Second)
	return err
}

// markdownHops prints each run's hops as a table: percentiles and a histogram.
func markdownHops(w io.Writer, runs []runResult) {
	for _, x := range runs {
		if len(x.Hops) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nWhere POST→CONFIRMED spends its time, hop by hop, %s, %s (from the spans of %d orders' traces; the share of orders in each bucket of ms):\n\n",
			brokerNames[x.Broker], x.Name, x.HopOrders)
		fmt.Fprint(w, "| hop | p50 / p95 / p99 / max ms |")
		for _, b := range hopBounds {
			fmt.Fprintf(w, " ≤%g |", b)
		}
		fmt.Fprintf(w, " >%g |\n|---|---|%s\n", hopBounds[len(hopBounds)-1], strings.Repeat("---|", len(hopBounds)+1))
		for _, h := range x.Hops {
			total := 0
			for _, n := range h.Buckets {
				total += n
			}
			fmt.Fprintf(w, "| %s | %s / %s / %s / %s |", h.Name, ms(h.Ms.P50), ms(h.Ms.P95), ms(h.Ms.P99), ms(h.Ms.Max))
			for _, n := range h.Buckets {
				fmt.Fprintf(w, " %s |", share(n, total))
			}
			fmt.Fprintln(w)
		}
	}
}

// share is n of total as a percentage for a histogram's cell; empty for none.
func share(n, total int) string {
	switch {
	case n == 0 || total == 0:
		return ""
	case n*1000 < total:
		return "<0.1%"
	case n*100 < total:
		return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(total))
}
