package tracing_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/tracing"
)

// Remote and TraceParent read and write a traceparent as OpenTelemetry's W3C propagator
// does through a map of headers, refusals included.
func TestTraceParentIsReadAndWrittenAsThePropagatorDoes(t *testing.T) {
	w3c := propagation.TraceContext{}
	for _, tp := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",       // reserved flags
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", // a later version's extra field
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
		"4bf92f3577b34da6a3ce929d0e0e4736",
		"",
	} {
		got := tracing.Remote(context.Background(), tp)
		want := w3c.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
		if g, w := trace.SpanContextFromContext(got), trace.SpanContextFromContext(want); !g.Equal(w) || g.IsRemote() != w.IsRemote() {
			t.Errorf("%q read as %v, the propagator reads %v", tp, g, w)
		}
		written := propagation.MapCarrier{}
		w3c.Inject(want, written)
		if g := tracing.TraceParent(got); g != written["traceparent"] {
			t.Errorf("%q written back as %q, the propagator writes %q", tp, g, written["traceparent"])
		}
	}
}

// BenchmarkRemoteThenTraceParent is what a consumed record's trace costs the way in and
// the way out: its traceparent read, and written again for the events it causes.
func BenchmarkRemoteThenTraceParent(b *testing.B) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if tracing.TraceParent(tracing.Remote(ctx, tp)) != tp {
			b.Fatal("not the traceparent read")
		}
	}
}
