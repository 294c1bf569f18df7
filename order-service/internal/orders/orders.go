// Package orders is what order-service does to an order on a customer's or an operator's
// behalf: place it and cancel it. Each is the order's transition, its event and the write
// of both in one transaction, and a wake-up for the outbox relay once that committed; the
// HTTP API only translates requests and answers.
package orders

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/tracing"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

// Service places and cancels orders in store and reads them back.
type Service struct {
	store *postgres.Store
	waker *outbox.Waker // nil: the relay finds new events at its next poll
	now   func() time.Time
}

// New returns the service on store, waking the relay through waker after each commit.
func New(store *postgres.Store, waker *outbox.Waker) *Service {
	return &Service{store: store, waker: waker, now: time.Now}
}

// Once asks for a placement at most once per Idempotency-Key of the customer: Key, the
// hash of what was asked (RequestHash), and the answer to replay for it, made from the
// order as placed.
type Once struct {
	Key, RequestHash string
	Answer           func(o order.Order) (status int, body []byte, err error)
}

// Place stores o, a new valid order, PENDING_PAYMENT, with its order.created event, in
// one transaction; with once, at most once per key (a key seen before returns the replay
// of its first answer instead, or order.ErrIdempotencyKeyReused or
// order.ErrIdempotencyKeyInFlight). The event carries o's correlation id, or starts one
// (its own id), which the order as placed carries too. The write is in a span of its
// own, which the event carries as its traceparent: its publication and every consumer's
// handling follow it.
func (s *Service) Place(ctx context.Context, o order.Order, once *Once) (order.Order, *order.Replay, error) {
	ctx, span := tracing.Start(ctx, "outbox "+events.TopicOrderCreated, trace.SpanKindProducer, tracing.OrderID(o.ID))
	placed, replay, err := s.place(ctx, o, once)
	tracing.End(span, err)
	return placed, replay, err
}

func (s *Service) place(ctx context.Context, o order.Order, once *Once) (order.Order, *order.Replay, error) {
	env, err := events.New(o.CreatedEvent(), events.Meta{CorrelationID: o.CorrelationID, TraceParent: tracing.TraceParent(ctx)}, o.CreatedAt)
	if err != nil {
		return order.Order{}, nil, err
	}
	o.CorrelationID = env.CorrelationID
	state, err := events.New(o.StateEvent(), env.Meta(), o.CreatedAt)
	if err != nil {
		return order.Order{}, nil, err
	}
	evs := []events.Envelope{env, state}
	trace.SpanFromContext(ctx).SetAttributes(tracing.CorrelationID(o.CorrelationID), attribute.String("messaging.message.id", env.ID))
	var replay *order.Replay
	if once == nil {
		err = s.store.Create(ctx, o, evs)
	} else {
		status, body, aerr := once.Answer(o)
		if aerr != nil {
			return order.Order{}, nil, aerr
		}
		replay, err = s.store.CreateOnce(ctx, once.Key, once.RequestHash, o, evs, status, body)
	}
	if err != nil {
		return order.Order{}, nil, err
	}
	if replay == nil {
		s.waker.Wake()
	}
	return o, replay, nil
}

// Cancel moves a pending order that v sees to CANCELLED, with its order.cancelled and
// order.state events (carrying the order's correlation id and ctx's trace), in one
// transaction. When the
// order is not pending it returns the order as it stands and order.ErrInvalidTransition
// (wrapped); unknown or not v's, order.ErrNotFound.
func (s *Service) Cancel(ctx context.Context, id string, v order.Viewer) (order.Order, error) {
	now := s.now()
	var o order.Order
	err := s.store.Change(ctx, id, v, func(current order.Order) (order.Order, []events.Envelope, error) {
		o = current
		if err := o.Transition(order.Cancelled, "", now); err != nil {
			return o, nil, err
		}
		meta := events.Meta{CorrelationID: o.CorrelationID, TraceParent: tracing.TraceParent(ctx)}
		cancelled, err := events.New(o.CancelledEvent(), meta, now)
		if err != nil {
			return o, nil, err
		}
		state, err := events.New(o.StateEvent(), meta, now)
		return o, []events.Envelope{cancelled, state}, err
	})
	if err != nil {
		return o, err
	}
	s.waker.Wake()
	return o, nil
}

// Get returns the order with id, or order.ErrNotFound. id must be a UUID.
func (s *Service) Get(ctx context.Context, id string) (order.Order, error) {
	return s.store.Get(ctx, id)
}

// List returns a page of orders, newest first.
func (s *Service) List(ctx context.Context, f order.Filter) ([]order.Order, error) {
	return s.store.List(ctx, f)
}

// History returns the order's status changes, oldest first.
func (s *Service) History(ctx context.Context, id string) ([]order.Change, error) {
	return s.store.History(ctx, id)
}
