package kafka_test

// CloudEvents conformance, both ways, with the official CloudEvents Go SDK and its
// kafka_sarama binding, as another team's client would read and write our topics. The SDK
// is a test-only dependency: the events package stays standard-library only.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
)

// golden reads a released event of kind k: its payload, decoded.
func golden(t *testing.T, k events.Kind) (events.Event, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "events", "testdata", "golden", k.Type+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Headers map[string]string `json:"headers"`
		Data    json.RawMessage   `json:"data"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	var hs []events.Header
	for k, v := range g.Headers {
		hs = append(hs, events.Header{Key: k, Value: []byte(v)})
	}
	env, err := events.ParseEnvelope(hs, g.Data)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(env)
	if err != nil {
		t.Fatal(err)
	}
	return ev, g.Data
}

// consumed is the record a consumer reads back for what a producer sent.
func consumed(t *testing.T, pm *sarama.ProducerMessage) *sarama.ConsumerMessage {
	t.Helper()
	cm := &sarama.ConsumerMessage{Topic: pm.Topic, Partition: 2, Offset: 41}
	var err error
	if pm.Key != nil {
		if cm.Key, err = pm.Key.Encode(); err != nil {
			t.Fatal(err)
		}
	}
	if cm.Value, err = pm.Value.Encode(); err != nil {
		t.Fatal(err)
	}
	for _, h := range pm.Headers {
		cm.Headers = append(cm.Headers, &sarama.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return cm
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// Ours → SDK: every event type, as our producers publish it, reads through the SDK with
// every attribute right and the correlation id as the correlationid extension.
func TestOurRecordsReadThroughTheCloudEventsSDK(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 15, 2, 412_000_000, time.UTC)
	for _, k := range events.Kinds() {
		t.Run(k.Type, func(t *testing.T) {
			ev, _ := golden(t, k)
			env, err := events.New(ev, events.Meta{CorrelationID: "019a8f3e-6c1a-7b2e-9f10-3c5d2e8a4b61"}, now)
			if err != nil {
				t.Fatal(err)
			}
			cm := consumed(t, kafka.Message(k.Topic, env))
			got, err := binding.ToEvent(context.Background(), kafka_sarama.NewMessageFromConsumerMessage(cm))
			if err != nil {
				t.Fatalf("the SDK cannot read our record: %v", err)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("not a valid CloudEvent for the SDK: %v", err)
			}
			attrs := map[string][2]string{
				"specversion":     {got.SpecVersion(), "1.0"},
				"id":              {got.ID(), env.ID},
				"source":          {got.Source(), k.Source},
				"type":            {got.Type(), k.Type},
				"subject":         {got.Subject(), ev.Subject()},
				"time":            {got.Time().Format(time.RFC3339Nano), now.Format(time.RFC3339Nano)},
				"datacontenttype": {got.DataContentType(), "application/json"},
				"correlationid":   {extension(got, "correlationid"), env.CorrelationID},
			}
			for name, gw := range attrs {
				if gw[0] != gw[1] {
					t.Errorf("%s = %q, want %q", name, gw[0], gw[1])
				}
			}
			if !jsonEqual(t, got.Data(), env.Data) {
				t.Errorf("data = %s, want %s", got.Data(), env.Data)
			}
			if string(cm.Key) != ev.Subject() {
				t.Errorf("key = %q, want the order id", cm.Key)
			}
		})
	}
}

func extension(e *cloudevents.Event, name string) string {
	v, _ := e.Extensions()[name].(string)
	return v
}

// SDK → ours: an event written by the SDK, binary or structured, with the correlationid
// extension or without, decodes to the same envelope and event as ours; nothing valid is
// refused.
func TestEventsWrittenByTheCloudEventsSDKDecode(t *testing.T) {
	when := time.Date(2026, 11, 23, 9, 15, 3, 0, time.UTC)
	for _, k := range events.Kinds() {
		for _, tc := range []struct {
			name        string
			correlation string
			structured  bool
		}{
			{"binary with correlationid", "corr-sdk-1", false},
			{"binary without correlationid", "", false},
			{"structured with correlationid", "corr-sdk-2", true},
		} {
			t.Run(k.Type+"/"+tc.name, func(t *testing.T) {
				ev, data := golden(t, k)
				e := cloudevents.NewEvent()
				e.SetID("019a8f3e-7d02-7c11-8a3b-5e6f7a8b9c0d")
				e.SetSource(k.Source)
				e.SetType(k.Type)
				e.SetSubject(ev.Subject())
				e.SetTime(when)
				if err := e.SetData(cloudevents.ApplicationJSON, []byte(data)); err != nil {
					t.Fatal(err)
				}
				e.SetExtension("partitionkey", ev.Subject()) // the SDK's way to set the record key
				if tc.correlation != "" {
					e.SetExtension("correlationid", tc.correlation)
				}
				ctx := context.Background()
				if tc.structured {
					ctx = binding.WithForceStructured(ctx)
				}
				pm := &sarama.ProducerMessage{Topic: k.Topic}
				if err := kafka_sarama.WriteProducerMessage(ctx, binding.ToMessage(&e), pm); err != nil {
					t.Fatal(err)
				}
				cm := consumed(t, pm)
				env, err := kafka.Envelope(cm)
				if err != nil {
					t.Fatalf("refused the SDK's record (headers %s): %v", headerNames(cm), err)
				}
				want := events.Envelope{ID: e.ID(), Source: k.Source, Type: k.Type, Time: when, Subject: ev.Subject(), CorrelationID: tc.correlation}
				gotData := env.Data
				env.Data = nil
				if !reflect.DeepEqual(env, want) {
					t.Errorf("envelope = %+v, want %+v", env, want)
				}
				env.Data = gotData
				got, err := events.Decode(env)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !reflect.DeepEqual(got, ev) {
					t.Errorf("event = %+v, want %+v", got, ev)
				}
				if string(cm.Key) != ev.Subject() {
					t.Errorf("key = %q, want the order id", cm.Key)
				}
			})
		}
	}
}

func headerNames(cm *sarama.ConsumerMessage) string {
	var names []string
	for _, h := range cm.Headers {
		names = append(names, string(h.Key))
	}
	return strings.Join(names, ",")
}

// What we write, the SDK writes too: the same header names for the same event, so a record
// from either is the same to any reader.
func TestWeWriteTheHeadersTheSDKWrites(t *testing.T) {
	k := events.Kinds()[0]
	ev, _ := golden(t, k)
	env, err := events.New(ev, events.Meta{CorrelationID: "c"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ours := kafka.Message(k.Topic, env)

	e := cloudevents.NewEvent()
	e.SetID(env.ID)
	e.SetSource(env.Source)
	e.SetType(env.Type)
	e.SetSubject(env.Subject)
	e.SetTime(env.Time)
	e.SetExtension("correlationid", env.CorrelationID)
	if err := e.SetData(cloudevents.ApplicationJSON, env.Data); err != nil {
		t.Fatal(err)
	}
	theirs := &sarama.ProducerMessage{Topic: k.Topic}
	if err := kafka_sarama.WriteProducerMessage(context.Background(), binding.ToMessage(&e), theirs); err != nil {
		t.Fatal(err)
	}
	names := func(pm *sarama.ProducerMessage) map[string]string {
		m := map[string]string{}
		for _, h := range pm.Headers {
			m[string(h.Key)] = string(h.Value)
		}
		return m
	}
	o, s := names(ours), names(theirs)
	delete(o, events.HeaderTraceParent) // the W3C header, not a CloudEvents attribute
	if !reflect.DeepEqual(o, s) {
		t.Errorf("our headers %v, the SDK's %v", o, s)
	}
}
