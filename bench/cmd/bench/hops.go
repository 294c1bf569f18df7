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

// The spans an order's hops are made of, as orderTrace holds them.
const (
	spanPost          = iota // POST /orders, in order-service
	spanWrite                // outbox order.created: the order and its event committed
	spanCreatedSent          // publish order.created, by order-service's relay
	spanCharged              // process order.created, in payment-service
	spanCompletedSent        // publish payment.completed, by payment-service's relay
	spanConfirmed            // process payment.completed, in order-service
	spans
)

// mark is a span's start, or its end.
type mark struct {
	span int
	end  bool
}

func start(span int) mark { return mark{span, false} }
func end(span int) mark   { return mark{span, true} }

// hop is the time from one mark of an order's trace to another.
type hop struct {
	name     string
	from, to mark
}

// hops are where POST→CONFIRMED spends its time. The first seven follow each other, so
// they add up to the whole, which comes next; the last two, the broker's
// acknowledgements, overlap the hops through the broker.
var hops = []hop{
	{"POST → order and order.created committed (order-service)", start(spanPost), end(spanWrite)},
	{"commit → relay sends order.created", end(spanWrite), start(spanCreatedSent)},
	{"order.created through the broker to payment-service", start(spanCreatedSent), start(spanCharged)},
	{"payment-service: charge, payment and payment.completed committed", start(spanCharged), end(spanCharged)},
	{"commit → relay sends payment.completed", end(spanCharged), start(spanCompletedSent)},
	{"payment.completed through the broker to order-service", start(spanCompletedSent), start(spanConfirmed)},
	{"order-service: CONFIRMED committed", start(spanConfirmed), end(spanConfirmed)},
	{"all: POST → CONFIRMED committed", start(spanPost), end(spanConfirmed)},
	{"of which the broker acknowledging order.created", start(spanCreatedSent), end(spanCreatedSent)},
	{"of which the broker acknowledging payment.completed", start(spanCompletedSent), end(spanCompletedSent)},
}

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

// orderTrace is what the hops need of one order's trace: its spans, by the span* constants.
type orderTrace [spans]interval

// keep records a span that makes the hops, by its name and, for a process span, its
// consumer group; other spans are ignored.
func (t *orderTrace) keep(name, group string, iv interval) {
	var i int
	switch {
	case name == "POST /orders":
		i = spanPost
	case name == "outbox order.created":
		i = spanWrite
	case name == "publish order.created":
		i = spanCreatedSent
	case name == "process order.created" && group == "payment-service":
		i = spanCharged
	case name == "publish payment.completed":
		i = spanCompletedSent
	case name == "process payment.completed" && group == "order-service":
		i = spanConfirmed
	default:
		return
	}
	if !t[i].seen() || iv.start < t[i].start { // a redelivery: the first handling counts
		t[i] = iv
	}
}

func (t *orderTrace) complete() bool {
	for _, iv := range t {
		if !iv.seen() {
			return false
		}
	}
	return true
}

// at is the time of m, in ns since the epoch.
func (t *orderTrace) at(m mark) int64 {
	if m.end {
		return t[m.span].end
	}
	return t[m.span].start
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
func (l *traceLog) take() (results []hopResult, orders int) {
	l.mu.Lock()
	traces := l.traces
	l.traces = nil
	l.mu.Unlock()
	all := make([][]time.Duration, len(hops))
	for _, t := range traces {
		if !t.complete() {
			continue
		}
		orders++
		for i, h := range hops {
			d := time.Duration(t.at(h.to) - t.at(h.from))
			all[i] = append(all[i], max(d, 0)) // a few µs of clock order between processes
		}
	}
	if orders == 0 {
		return nil, 0
	}
	for i, hop := range hops {
		h := hopResult{Name: hop.name, Ms: percentiles(all[i]), Buckets: make([]int, len(hopBounds)+1)}
		for _, d := range all[i] {
			ms := float64(d.Microseconds()) / 1000
			b := 0
			for b < len(hopBounds) && ms > hopBounds[b] {
				b++
			}
			h.Buckets[b]++
		}
		results = append(results, h)
	}
	return results, orders
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
		if err := tg.restart(ctx, name, "OTEL_EXPORTER_OTLP_ENDPOINT", endpoint); err != nil {
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
