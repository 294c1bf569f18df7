package consumer

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/tracing"
)

// withAttrsCounter counts the calls to WithAttrs of the JSON handler it wraps.
type withAttrsCounter struct {
	slog.Handler
	calls *int
}

func (h withAttrsCounter) WithAttrs(as []slog.Attr) slog.Handler {
	*h.calls++
	return withAttrsCounter{h.Handler.WithAttrs(as), h.calls}
}

// A record's logger, on the services' handler, renders its attributes only when a line is
// logged: decoding a record that logs nothing hands the JSON handler nothing. A line
// logged has them all, in the order they were given.
func TestARecordsLoggerRendersItsAttributesOnlyWhenALineIsLogged(t *testing.T) {
	g := golden(t, "../events/testdata/golden/order.created.json")
	var out bytes.Buffer
	calls := 0
	r := &Runner{Group: "g", Log: slog.New(tracing.LogHandler(withAttrsCounter{slog.NewJSONHandler(&out, nil), &calls})),
		Handlers: map[string]Handler{events.TopicOrderCreated: func(context.Context, Message) (Apply, error) { return Apply{}, nil }}}
	it, _, err := r.decode(g.record(events.TopicOrderCreated, 3, 42))
	if err != nil {
		t.Fatal(err)
	}
	log := recordLogger(it.msg.Log, slog.String("trace_id", "t"))
	log.Debug("below the level")
	if calls != 0 || out.Len() != 0 {
		t.Fatalf("a record that logged nothing: WithAttrs called %d times, output %q", calls, out.String())
	}
	log.Info("handled", "extra", 1)
	line := out.String()
	want := []string{`"group":"g"`, `"topic":"` + events.TopicOrderCreated + `"`, `"partition":3`, `"offset":42`,
		`"event_id":"` + g.Headers["ce_id"] + `"`, `"event_type":"` + g.Headers["ce_type"] + `"`, `"order_id":"` + g.Headers["ce_subject"] + `"`,
		`"correlation_id":`, `"trace_id":"t"`, `"extra":1`}
	at := 0
	for _, w := range want {
		i := strings.Index(line[at:], w)
		if i < 0 {
			t.Fatalf("line %s: no %s after position %d", line, w, at)
		}
		at += i + len(w)
	}
}

// BenchmarkDecode is the runner's decoding of one record, its logger made: the
// allocations it reports are what every record consumed costs before its handler runs.
func BenchmarkDecode(b *testing.B) {
	g := golden(b, "../events/testdata/golden/order.created.json")
	r := &Runner{Group: "g", Log: slog.New(tracing.LogHandler(slog.NewJSONHandler(io.Discard, nil))),
		Handlers: map[string]Handler{events.TopicOrderCreated: func(context.Context, Message) (Apply, error) { return Apply{}, nil }}}
	rec := g.record(events.TopicOrderCreated, 3, 42)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.decode(rec); err != nil {
			b.Fatal(err)
		}
	}
}
