package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/internal/backoff"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/tracing"
)

type groupHandler struct{ r *Runner }

func (groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim runs one partition: records of one key one after the other, different
// keys concurrently, the commit point at the oldest unfinished record. Every goroutine it
// starts has returned when it returns.
func (h groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	p := &partition{
		r: h.r, sess: sess, claim: claim,
		waiting: map[string][]*sarama.ConsumerMessage{},
		results: make(chan result),
		applier: h.r.applier,
	}
	p.run()
	return nil
}

// partition is the bookkeeping of one claimed partition. Only run's goroutine touches it;
// the records' goroutines report back through results.
type partition struct {
	r     *Runner
	sess  sarama.ConsumerGroupSession
	claim sarama.ConsumerGroupClaim

	// taken holds the offsets taken and not yet committed, oldest first, with whether
	// each is finished; the commit point is the first unfinished one.
	taken []slot
	// waiting has an entry for every key with a record running; the entry lists the
	// records of that key taken since, in offset order.
	waiting  map[string][]*sarama.ConsumerMessage
	inFlight int // taken and not finished: running or waiting
	running  int // goroutines started and not reported back
	results  chan result
	wg       sync.WaitGroup
	applier  *applier
}

type slot struct {
	offset   int64
	finished bool
}

type result struct {
	rec      *sarama.ConsumerMessage
	finished bool // false: the session ended before the record was dealt with
}

func (p *partition) run() {
	ctx := p.sess.Context()
	messages, done := p.claim.Messages(), ctx.Done()
	stopping, paused := false, false
	defer func() {
		if paused {
			p.r.Metrics.pause(p.r.Group, -1)
		}
	}()
	for !stopping || p.running > 0 {
		var in <-chan *sarama.ConsumerMessage
		full := p.inFlight >= p.r.Concurrency || len(p.taken) >= p.r.MaxUncommitted
		if !stopping && !full {
			in = messages // otherwise paused: sarama stops fetching once its buffer is full
		}
		if full != paused {
			paused = full
			p.r.Metrics.pause(p.r.Group, map[bool]float64{true: 1, false: -1}[full])
		}
		select {
		case rec, ok := <-in:
			if !ok {
				stopping, done = true, nil
				continue
			}
			p.take(ctx, rec)
		case res := <-p.results:
			p.finish(ctx, res, stopping)
		case <-done:
			stopping, done = true, nil // finish what runs, start nothing new; wait on results only
		}
	}
	p.wg.Wait()
}

func (p *partition) take(ctx context.Context, rec *sarama.ConsumerMessage) {
	p.taken = append(p.taken, slot{offset: rec.Offset})
	p.inFlight++
	key := string(rec.Key) // records without a key share one queue
	if q, busy := p.waiting[key]; busy {
		p.waiting[key] = append(q, rec)
		return
	}
	p.waiting[key] = nil
	p.start(ctx, rec)
}

func (p *partition) start(ctx context.Context, rec *sarama.ConsumerMessage) {
	p.running++
	p.wg.Go(func() {
		p.results <- result{rec: rec, finished: p.r.handle(ctx, rec, p.applier)}
	})
}

// finish books a record's end and starts the next record of its key.
func (p *partition) finish(ctx context.Context, res result, stopping bool) {
	p.running--
	if !res.finished {
		return // the session is ending: the record stays uncommitted and comes again
	}
	p.inFlight--
	p.markFinished(res.rec.Offset)
	key := string(res.rec.Key)
	q := p.waiting[key]
	if len(q) == 0 || stopping {
		delete(p.waiting, key)
		return
	}
	p.waiting[key] = q[1:]
	p.start(ctx, q[0])
}

// markFinished marks offset finished and moves the commit point past every finished
// record at the front.
func (p *partition) markFinished(offset int64) {
	i := sort.Search(len(p.taken), func(i int) bool { return p.taken[i].offset >= offset })
	if i == len(p.taken) || p.taken[i].offset != offset {
		return
	}
	p.taken[i].finished = true
	n := 0
	for n < len(p.taken) && p.taken[n].finished {
		n++
	}
	if n == 0 {
		return
	}
	p.sess.MarkOffset(p.claim.Topic(), p.claim.Partition(), p.taken[n-1].offset+1, "")
	p.taken = p.taken[n:]
	if cap(p.taken) > 4*p.r.Concurrency && len(p.taken) < cap(p.taken)/4 {
		p.taken = append([]slot(nil), p.taken...) // give back what a long stall grew
	}
}

type item struct {
	handler Handler
	msg     Message
}

// decode turns a record into a message for its handler, or says why it is poison.
func (r *Runner) decode(rec *sarama.ConsumerMessage) (item, *slog.Logger, error) {
	// One logger a record, made once what it carries is known: the record's place, then
	// its event's ids.
	attrs := append(make([]slog.Attr, 0, 8), slog.String("group", r.Group), slog.String("topic", rec.Topic),
		slog.Int("partition", int(rec.Partition)), slog.Int64("offset", rec.Offset))
	env, err := kafka.Envelope(rec)
	if err != nil {
		return item{}, recordLogger(r.Log, attrs...), err
	}
	ev, err := kafka.Event(env)
	if err != nil {
		return item{}, recordLogger(r.Log, attrs...), err
	}
	log := recordLogger(r.Log, append(attrs, slog.String("event_id", env.ID), slog.String("event_type", env.Type),
		slog.String("order_id", env.Subject), slog.String("correlation_id", env.CorrelationID))...)
	handler, ok := r.Handlers[rec.Topic]
	if !ok {
		return item{}, log, fmt.Errorf("no handler for topic %s", rec.Topic)
	}
	msg := Message{Envelope: env, Event: ev, Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Log: log}
	return item{handler: handler, msg: msg}, log, nil
}

// handle deals with one record: it is applied, skipped as a duplicate, or dead-lettered,
// and handle reports true; or the session ends first, and it reports false. Transient
// failures are retried with backoff; an attempt under way is not cut short when the
// session ends, it finishes within HandlerTimeout.
func (r *Runner) handle(ctx context.Context, rec *sarama.ConsumerMessage, ap *applier) bool {
	r.Metrics.flight(r.Group, 1)
	defer r.Metrics.flight(r.Group, -1)
	it, log, err := r.decode(rec)
	if err != nil {
		return r.deadLettered(ctx, log, rec, err)
	}
	ctx, span := r.span(ctx, &it)
	log = it.msg.Log
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := r.attempt(ctx, it, ap)
		r.Metrics.handled(r.Group, rec.Topic, time.Since(start))
		if err == nil {
			span.End()
			return true
		}
		if errors.Is(err, ErrPoison) {
			tracing.End(span, err)
			return r.deadLettered(ctx, log, rec, err)
		}
		if ctx.Err() != nil {
			span.End() // the session ended: the record is handled again in the next
			return false
		}
		span.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", attempt), attribute.String("error", err.Error())))
		r.Metrics.outcome(r.Group, rec.Topic, OutcomeRetried, 1)
		d := retryDelay(r.Retry, attempt, err)
		log.Warn("handler failed; retrying", "err", err, "attempt", attempt, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			span.End()
			return false
		}
	}
}

// RetryAfter is what an error says about its retry: a transient failure may carry the
// least wait its cause asked for (a provider's Retry-After), which the runner honours,
// up to maxRetryAfter, when it is longer than its backoff's delay.
type RetryAfter interface {
	error
	RetryAfter() time.Duration
}

// maxRetryAfter bounds the wait an error may ask for.
const maxRetryAfter = time.Minute

// retryDelay is the wait before attempt number attempt, after err.
func retryDelay(p backoff.Policy, attempt int, err error) time.Duration {
	d := p.Delay(attempt)
	if ra, ok := errors.AsType[RetryAfter](err); ok {
		d = max(d, min(ra.RetryAfter(), maxRetryAfter))
	}
	return d
}

// span starts the span of it's handling, a child of its record's traceparent, and makes it
// the trace of what the handler does (tracing.Start) and causes (the events of
// it.msg.Meta), and of its log lines (trace_id).
func (r *Runner) span(ctx context.Context, it *item) (context.Context, trace.Span) {
	m := &it.msg
	ctx, span := r.Tracer.Start(tracing.Remote(ctx, m.TraceParent), "process "+m.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", m.Topic), attribute.String("messaging.consumer.group.name", r.Group),
			attribute.Int("messaging.destination.partition.id", int(m.Partition)), attribute.Int64("messaging.kafka.offset", m.Offset),
			attribute.String("messaging.message.id", m.ID), tracing.OrderID(m.Subject), tracing.CorrelationID(m.CorrelationID)))
	if tp := tracing.TraceParent(ctx); tp != "" {
		m.TraceParent = tp
	}
	if id := tracing.TraceID(ctx); id != "" {
		m.Log = recordLogger(m.Log, slog.String("trace_id", id))
	}
	return ctx, span
}

// deadLettered dead-letters rec and reports whether it was.
func (r *Runner) deadLettered(ctx context.Context, log *slog.Logger, rec *sarama.ConsumerMessage, cause error) bool {
	if r.deadLetter(ctx, log, rec, cause) != nil {
		return false
	}
	r.Metrics.outcome(r.Group, rec.Topic, OutcomeDeadLettered, 1)
	return true
}

// attempt runs the handler's first step here, then has the applier commit its Apply.
func (r *Runner) attempt(ctx context.Context, it item, ap *applier) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.HandlerTimeout)
	defer cancel()
	apply, err := it.handler(actx, it.msg)
	if err != nil {
		return err
	}
	return ap.apply(actx, it.msg, apply)
}
