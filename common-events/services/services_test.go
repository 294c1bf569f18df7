package services_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/services"
)

// A group's handlers must be exactly the topics it reads: a missing one would leave a
// topic unread (its records dead-lettered as unknown), an extra one would never run.
func TestCheckHandlersWantsExactlyTheTopicsRead(t *testing.T) {
	p := services.Payment
	if err := p.CheckHandlers([]string{events.TopicOrderCancelled, events.TopicOrderCreated}); err != nil {
		t.Errorf("the topics read, in another order: %v", err)
	}
	for _, topics := range [][]string{{events.TopicOrderCreated}, append(slices.Clone(p.Consumes), events.TopicPaymentFailed), nil} {
		if err := p.CheckHandlers(topics); err == nil {
			t.Errorf("handlers for %v accepted; the group reads %v", topics, p.Consumes)
		}
	}
}

// Every name, group, port, port setting and database is one service's alone, and every
// topic read is one the contract has.
func TestIdentitiesAreDistinct(t *testing.T) {
	seen := map[any]string{}
	for _, s := range services.All() {
		for _, v := range []any{s.Name, "group " + s.Group, s.Port, s.PortVar, "db " + s.Database, fmt.Sprint("compose ", s.ComposePort)} {
			if other, ok := seen[v]; ok {
				t.Errorf("%v is both %s's and %s's", v, other, s.Name)
			}
			seen[v] = s.Name
		}
		for _, topic := range s.Consumes {
			if !slices.Contains(events.Topics(), topic) {
				t.Errorf("%s reads %s, which no event travels on", s.Name, topic)
			}
		}
		if got, ok := services.Named(s.Name); !ok || got.Name != s.Name {
			t.Errorf("Named(%q) = %v, %v", s.Name, got, ok)
		}
	}
	for _, k := range events.Kinds() {
		if _, ok := services.Named(k.Source); !ok {
			t.Errorf("%s is produced by %q, which is no service", k.Type, k.Source)
		}
	}
}

// The events order-service reads to decide an order are on the way from POST to
// CONFIRMED: the service that emits them wakes its relay at once, never a little later.
func TestTheEventsOnTheWayToConfirmedGoAtOnce(t *testing.T) {
	for _, k := range events.Kinds() {
		if !slices.Contains(services.Order.Consumes, k.Topic) {
			continue
		}
		s, ok := services.Named(k.Source)
		if !ok {
			t.Fatalf("%s comes from %s, which is no service", k.Topic, k.Source)
		}
		if s.EmitsOffTheWay {
			t.Errorf("%s emits %s, which order-service decides by, yet says its events may wait", s.Name, k.Topic)
		}
	}
}
