package events_test

// The AsyncAPI document is kept true the way order-service's openapi_test.go keeps the
// OpenAPI document true: what we release validates against it, and it declares exactly
// the topics and event types the code declares. (The consumer groups and dead-letter
// topics live in the services; e2e/contract_test.go holds the document against those, and
// against the records the running services publish.)

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/events/eventstest"
)

func loadContract(t *testing.T) *eventstest.Contract {
	t.Helper()
	c, err := eventstest.Load()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func headerMap(hs []events.Header) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}

// Every golden record, headers and payload, is a message of the document, and so is the
// same event as producers write it now (ce_correlationid instead of the legacy header).
func TestGoldenRecordsAreMessagesOfTheAsyncAPIDocument(t *testing.T) {
	c := loadContract(t)
	for _, k := range events.Kinds() {
		t.Run(k.Type, func(t *testing.T) {
			hs, data := readGolden(t, k.Type+".json")
			if err := c.Check(k.Topic, headerMap(hs), data); err != nil {
				t.Errorf("golden: %v", err)
			}
			env, err := events.ParseEnvelope(hs, data)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := events.Decode(env)
			if err != nil {
				t.Fatal(err)
			}
			now, err := events.New(ev, env.Meta(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CheckEnvelope(k.Topic, now); err != nil {
				t.Errorf("as published now: %v", err)
			}
		})
	}
}

// Every topic in code is a channel and every channel a topic in code (or a dead-letter
// topic of one); every event type has exactly one message, on its own channel, and one
// send operation, by its one producer.
func TestAsyncAPIDocumentDeclaresWhatTheCodeDeclares(t *testing.T) {
	c := loadContract(t)
	var channels []string
	for addr, ch := range c.Channels {
		if slices.Equal(ch.Messages, []string{eventstest.DeadLetter}) {
			if !slices.ContainsFunc(events.Topics(), func(topic string) bool {
				group, ok := strings.CutSuffix(strings.TrimPrefix(addr, topic+"."), ".dlq")
				return ok && strings.HasPrefix(addr, topic+".") && group != "" && events.DeadLetterTopic(topic, group) == addr
			}) {
				t.Errorf("channel %s carries dead letters but is no topic's dead-letter topic", addr)
			}
			continue
		}
		channels = append(channels, addr)
	}
	topics := events.Topics()
	sort.Strings(channels)
	sort.Strings(topics)
	if !slices.Equal(channels, topics) {
		t.Errorf("event channels %v, topics in code %v", channels, topics)
	}

	names := []string{eventstest.DeadLetter}
	for _, k := range events.Kinds() {
		names = append(names, k.Type)
		if got := c.Channels[k.Topic].Messages; !slices.Equal(got, []string{k.Type}) {
			t.Errorf("channel %s carries %v, want only %s", k.Topic, got, k.Type)
		}
		var senders [][]string
		for _, op := range c.Operations {
			if op.Action == "send" && op.Channel == k.Topic {
				senders = append(senders, op.Services)
			}
		}
		if len(senders) != 1 || !slices.Equal(senders[0], []string{k.Source}) {
			t.Errorf("%s is sent by %v, want by %s alone", k.Type, senders, k.Source)
		}
	}
	var got []string
	for name := range c.Messages {
		got = append(got, name)
	}
	sort.Strings(got)
	sort.Strings(names)
	if !slices.Equal(got, names) {
		t.Errorf("messages %v, want one for each event type and dead-letter: %v", got, names)
	}
}

// The document states our rules: a record that breaks one fails, and a payload that drops
// or renames a field fails (payloads evolve by adding fields only), while one that adds a
// field passes.
func TestAsyncAPIDocumentRefusesWhatBreaksTheContract(t *testing.T) {
	c := loadContract(t)
	type edit struct {
		name    string
		headers func(map[string]string)
		payload func(map[string]any)
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	setHeader := func(k, v string) func(map[string]string) { return func(m map[string]string) { m[k] = v } }
	common := []edit{
		{name: "no ce_id", headers: func(m map[string]string) { delete(m, events.HeaderID) }},
		{name: "ce_id not a UUID", headers: setHeader(events.HeaderID, "42")},
		{name: "ce_type of another event", headers: setHeader(events.HeaderType, "order.shipped")},
		{name: "ce_time not RFC 3339", headers: setHeader(events.HeaderTime, "yesterday")},
		{name: "xml content", headers: setHeader(events.HeaderContentType, "application/xml")},
		{name: "no correlation id at all", headers: func(m map[string]string) {
			delete(m, events.HeaderLegacyCorrelationID)
			delete(m, events.HeaderCorrelationID)
		}},
		{name: "traceparent not W3C", headers: setHeader(events.HeaderTraceParent, "abc")},
		{name: "order_id not a UUID", payload: set("order_id", "o-1")},
	}
	for _, k := range events.Kinds() {
		hs, data := readGolden(t, k.Type+".json")
		var payload map[string]any
		if err := json.Unmarshal(data, &payload); err != nil {
			t.Fatal(err)
		}
		edits := slices.Clone(common)
		for field := range payload {
			edits = append(edits,
				edit{name: "drops " + field, payload: func(m map[string]any) { delete(m, field) }},
				edit{name: "renames " + field, payload: func(m map[string]any) { m[field+"_v2"] = m[field]; delete(m, field) }})
		}
		if _, ok := payload["currency"]; ok {
			edits = append(edits, edit{name: "currency in lower case", payload: set("currency", "eur")},
				edit{name: "currency as a float", payload: set("currency", 9.99)})
		}
		for _, field := range []string{"total_cents", "amount_cents"} {
			if _, ok := payload[field]; ok {
				edits = append(edits, edit{name: field + " zero", payload: set(field, 0)},
					edit{name: field + " a float", payload: set(field, 43.48)})
			}
		}
		if k.Type == events.TypePaymentFailed {
			edits = append(edits, edit{name: "an unknown reason", payload: set("reason", "cosmic_rays")})
		}
		if k.Type == events.TypeOrderState {
			edits = append(edits, edit{name: "an unknown status", payload: set("status", "SHIPPED")},
				edit{name: "version 0", payload: set("version", 0)})
		}
		if k.Type == events.TypeNotificationSent {
			edits = append(edits, edit{name: "an unknown kind", payload: set("kind", "newsletter")},
				edit{name: "the whole address", payload: set("recipient_domain", "ada@example.com")})
		}
		if k.Type == events.TypeOrderCreated {
			edits = append(edits, edit{name: "no items", payload: set("items", []any{})},
				edit{name: "an item of quantity 0", payload: set("items", []any{map[string]any{"sku": "A", "quantity": 0, "unit_price_cents": 1}})})
		}
		for _, e := range edits {
			t.Run(k.Type+"/"+e.name, func(t *testing.T) {
				h := headerMap(hs)
				p := map[string]any{}
				for key, v := range payload {
					p[key] = v
				}
				if e.headers != nil {
					e.headers(h)
				}
				if e.payload != nil {
					e.payload(p)
				}
				b, _ := json.Marshal(p)
				if err := c.Check(k.Topic, h, b); err == nil {
					t.Error("the document accepts it")
				}
			})
		}
		t.Run(k.Type+"/adds a field", func(t *testing.T) {
			p := map[string]any{"loyalty_points": 12}
			for key, v := range payload {
				p[key] = v
			}
			b, _ := json.Marshal(p)
			if err := c.Check(k.Topic, headerMap(hs), b); err != nil {
				t.Errorf("an added field is refused: %v", err)
			}
		})
	}
}

// The document every service serves is this one, and it is a YAML AsyncAPI 3.0 document.
func TestAsyncAPIDocumentIsEmbedded(t *testing.T) {
	doc := events.AsyncAPI()
	if !strings.HasPrefix(string(doc), "asyncapi: 3.0.0\n") {
		t.Errorf("AsyncAPI() starts %q", doc[:min(len(doc), 40)])
	}
	doc[0] = 'x'
	if events.AsyncAPI()[0] != 'a' {
		t.Error("AsyncAPI() hands out the embedded document itself: a caller can change it")
	}
}
