package events_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/issuer"
)

type golden struct {
	Headers map[string]string `json:"headers"`
	Data    json.RawMessage   `json:"data"`
}

func readGolden(t *testing.T, name string) ([]events.Header, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var hs []events.Header
	for k, v := range g.Headers {
		hs = append(hs, events.Header{Key: k, Value: []byte(v)})
	}
	return hs, g.Data
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// Every released payload must still decode to the same values: this is the schema
// evolution guard. Add fields only; never edit these files to make a change pass.
func TestGoldenPayloadsStillDecode(t *testing.T) {
	const orderID = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"
	tests := []struct {
		file string
		want events.Event
	}{
		{"order.created.json", events.OrderCreated{
			OrderID: orderID, CustomerID: issuer.Customer, CustomerEmail: "ada@example.com",
			Items:      []events.Item{{SKU: "BOOK-42", Quantity: 2, UnitPriceCents: 1999}, {SKU: "PEN-7", Quantity: 1, UnitPriceCents: 350}},
			TotalCents: 4348, Currency: "EUR", PaymentMethod: "tok_visa", CreatedAt: mustTime("2026-11-23T09:15:02.12Z"),
		}},
		{"payment.completed.json", events.PaymentCompleted{
			OrderID: orderID, PaymentID: "019a8f3e-7d01-7e20-b1c2-d3e4f5a6b7c8", ChargeID: "ch_019a8f3e7d007f33a4b5c6d7e8f90a1b",
			CustomerID: issuer.Customer, CustomerEmail: "ada@example.com",
			AmountCents: 4348, Currency: "EUR", CompletedAt: mustTime("2026-11-23T09:15:02.41Z"),
		}},
		{"payment.failed.json", events.PaymentFailed{
			OrderID: orderID, PaymentID: "019a8f3e-7d01-7e20-b1c2-d3e4f5a6b7c9",
			CustomerID: issuer.Customer, CustomerEmail: "ada@example.com",
			AmountCents: 4348, Currency: "EUR", Reason: events.ReasonCardDeclined, FailedAt: mustTime("2026-11-23T09:15:02.41Z"),
		}},
		{"order.cancelled.json", events.OrderCancelled{
			OrderID: orderID, CustomerID: issuer.Customer, CustomerEmail: "ada@example.com",
			TotalCents: 4348, Currency: "EUR", CancelledAt: mustTime("2026-11-23T09:15:03Z"),
		}},
		{"payment.refunded.json", events.PaymentRefunded{
			OrderID: orderID, PaymentID: "019a8f3e-7d01-7e20-b1c2-d3e4f5a6b7c8", ChargeID: "ch_019a8f3e7d007f33a4b5c6d7e8f90a1b",
			RefundID: "re_019a8f3e7e3f7b44a5b6c7d8e9f0a1b2", CustomerID: issuer.Customer,
			CustomerEmail: "ada@example.com", AmountCents: 4348, Currency: "EUR", RefundedAt: mustTime("2026-11-23T09:15:03.51Z"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			env, err := events.ParseEnvelope(readGolden(t, tt.file))
			if err != nil {
				t.Fatalf("ParseEnvelope: %v", err)
			}
			if env.Type != tt.want.EventType() || env.Subject != orderID || env.CorrelationID == "" || env.TraceParent == "" {
				t.Errorf("envelope = %+v", env)
			}
			got, err := events.Decode(env)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestNewEnvelopeRoundTrips(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ev := events.PaymentFailed{OrderID: "o-1", PaymentID: "p-1", CustomerEmail: "a@b.c", AmountCents: 5, Currency: "USD", Reason: events.ReasonInsufficientFunds, FailedAt: now}
	env, err := events.New(ev, events.Meta{CorrelationID: "corr-1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(env.ID) {
		t.Errorf("ce_id %q is not a UUIDv7", env.ID)
	}
	ms := fmt.Sprintf("%012x", now.UnixMilli())
	if want := ms[:8] + "-" + ms[8:]; !strings.HasPrefix(env.ID, want) {
		t.Errorf("ce_id %q does not start with the timestamp %s", env.ID, want)
	}
	if !regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`).MatchString(env.TraceParent) {
		t.Errorf("traceparent %q is not W3C", env.TraceParent)
	}
	back, err := events.ParseEnvelope(env.Headers(), env.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, env) {
		t.Errorf("round trip = %+v, want %+v", back, env)
	}
	got, err := events.Decode(back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ev) {
		t.Errorf("Decode = %+v, want %+v", got, ev)
	}
}

func TestNewRefusesInvalidPayload(t *testing.T) {
	_, err := events.New(events.OrderCreated{OrderID: "o-1"}, events.Meta{}, time.Now())
	if err == nil {
		t.Fatal("New accepted an order.created without items, email or total")
	}
}

func TestDecodeErrors(t *testing.T) {
	hs, data := readGolden(t, "order.created.json")
	without := func(key string) []events.Header {
		var out []events.Header
		for _, h := range hs {
			if h.Key != key {
				out = append(out, h)
			}
		}
		return out
	}
	with := func(key, value string) []events.Header {
		return append(without(key), events.Header{Key: key, Value: []byte(value)})
	}
	tests := []struct {
		name    string
		headers []events.Header
		data    string
		want    error
	}{
		{"no ce_id", without(events.HeaderID), string(data), events.ErrMissingHeader},
		{"no ce_type", without(events.HeaderType), string(data), events.ErrMissingHeader},
		{"no headers at all", nil, string(data), events.ErrMissingHeader},
		{"bad spec version", with(events.HeaderSpecVersion, "0.3"), string(data), events.ErrInvalidHeader},
		{"bad time", with(events.HeaderTime, "yesterday"), string(data), events.ErrInvalidHeader},
		{"xml content", with(events.HeaderContentType, "application/xml"), string(data), events.ErrInvalidHeader},
		{"json in latin-1", with(events.HeaderContentType, "application/json; charset=iso-8859-1"), string(data), events.ErrInvalidHeader},
		{"malformed content type", with(events.HeaderContentType, "application/json; charset"), string(data), events.ErrInvalidHeader},
		{"structured, not json", with(events.HeaderContentType, events.StructuredContentType), "{", events.ErrInvalidPayload},
		{"structured, no id", with(events.HeaderContentType, events.StructuredContentType),
			`{"specversion":"1.0","source":"x","type":"order.created","time":"2026-11-23T09:15:02Z","subject":"s","data":{}}`, events.ErrMissingHeader},
		{"unknown type", with(events.HeaderType, "order.shipped"), string(data), events.ErrUnknownType},
		{"not json", hs, "\x00\x01garbage", events.ErrInvalidPayload},
		{"wrong field type", hs, `{"order_id": 7}`, events.ErrInvalidPayload},
		{"missing fields", hs, `{"order_id":"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"}`, events.ErrInvalidPayload},
		{"subject mismatch", with(events.HeaderSubject, "someone-else"), string(data), events.ErrInvalidPayload},
		{"trailing data", hs, string(data) + "{}", events.ErrInvalidPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := events.ParseEnvelope(tt.headers, []byte(tt.data))
			if err == nil {
				_, err = events.Decode(env)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var de *events.DecodeError
			if !errors.As(err, &de) {
				t.Errorf("err %T is not a *DecodeError", err)
			}
		})
	}
}

func TestDecodeIgnoresAddedFields(t *testing.T) {
	hs, data := readGolden(t, "payment.completed.json")
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["loyalty_points"] = 12
	more, _ := json.Marshal(m)
	env, err := events.ParseEnvelope(hs, more)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Decode(env); err != nil {
		t.Fatalf("a payload with an added field no longer decodes: %v", err)
	}
}

// Readers take what the CloudEvents Kafka binding allows, not only what we write: each of
// these records decodes to the same envelope as the golden one.
func TestParseEnvelopeIsLiberalWhereTheBindingAllows(t *testing.T) {
	hs, data := readGolden(t, "payment.completed.json")
	want, err := events.ParseEnvelope(hs, data)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(k, v string) (string, string)) []events.Header {
		var out []events.Header
		for _, h := range hs {
			if k, v := f(h.Key, string(h.Value)); k != "" {
				out = append(out, events.Header{Key: k, Value: []byte(v)})
			}
		}
		return out
	}
	legacyToCE := func(k, v string) (string, string) {
		if k == events.HeaderLegacyCorrelationID {
			return events.HeaderCorrelationID, v
		}
		return k, v
	}
	// structured is the event in the structured content mode, its payload in dataField.
	structured := func(dataField string) []byte {
		env := map[string]any{"specversion": "1.0", "datacontenttype": "application/json"}
		for _, h := range hs {
			if name, ok := strings.CutPrefix(h.Key, "ce_"); ok {
				env[name] = string(h.Value)
			}
		}
		env["correlationid"] = want.CorrelationID
		b, _ := json.Marshal(env)
		return append(b[:len(b)-1], []byte(`,`+dataField+`}`)...)
	}
	structuredHeaders := func(contentType string) []events.Header {
		return []events.Header{{Key: events.HeaderContentType, Value: []byte(contentType)},
			{Key: events.HeaderTraceParent, Value: []byte(want.TraceParent)}}
	}
	tests := []struct {
		name    string
		headers []events.Header
		value   []byte
	}{
		{"ce_correlationid, as we write it now", edit(legacyToCE), data},
		{"the legacy correlationid header", hs, data},
		{"media-type parameters", edit(func(k, v string) (string, string) {
			if k == events.HeaderContentType {
				return k, "application/json; charset=utf-8"
			}
			return k, v
		}), data},
		{"no content-type", edit(func(k, v string) (string, string) {
			if k == events.HeaderContentType {
				return "", ""
			}
			return k, v
		}), data},
		{"header names in upper case", edit(func(k, v string) (string, string) { return strings.ToUpper(k), v }), data},
		{"header names in mixed case", edit(func(k, v string) (string, string) {
			k, v = legacyToCE(k, v)
			return strings.Replace(k, "ce_", "CE_", 1), v
		}), data},
		{"ce_traceparent instead of traceparent", edit(func(k, v string) (string, string) {
			if k == events.HeaderTraceParent {
				return "ce_traceparent", v
			}
			return k, v
		}), data},
		{"structured content mode", structuredHeaders("application/cloudevents+json; charset=UTF-8"), structured(`"data":` + string(data))},
		{"structured, data_base64", structuredHeaders(events.StructuredContentType),
			structured(`"data_base64":"` + base64.StdEncoding.EncodeToString(data) + `"`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := events.ParseEnvelope(tt.headers, tt.value)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !reflect.DeepEqual(got.Data, want.Data) && !jsonEqual(got.Data, want.Data) {
				t.Errorf("data = %s, want %s", got.Data, want.Data)
			}
			got.Data = want.Data
			if !reflect.DeepEqual(got, want) {
				t.Errorf("envelope = %+v, want %+v", got, want)
			}
			if _, err := events.Decode(got); err != nil {
				t.Errorf("Decode: %v", err)
			}
		})
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// Producers write the correlation id as the CloudEvents extension, never the legacy header.
func TestHeadersCarryTheCorrelationIDAsAnExtension(t *testing.T) {
	env, err := events.New(events.OrderCancelled{OrderID: "o-1", CustomerID: "c", CustomerEmail: "a@b.c", TotalCents: 1, Currency: "EUR"},
		events.Meta{CorrelationID: "corr-1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, h := range env.Headers() {
		got[h.Key] = string(h.Value)
	}
	if got["ce_correlationid"] != "corr-1" {
		t.Errorf("ce_correlationid = %q, want corr-1", got["ce_correlationid"])
	}
	if _, ok := got["correlationid"]; ok {
		t.Error("the legacy correlationid header is still written")
	}
}

// Every kind is declared once, and Topics follows from the kinds.
func TestKindsAreDeclaredOnce(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range events.Kinds() {
		if seen[k.Type] || k.Topic == "" || k.Source == "" {
			t.Errorf("kind %+v: declared twice or incomplete", k)
		}
		seen[k.Type] = true
		if got, ok := events.KindOf(k.Type); !ok || got.Topic != k.Topic {
			t.Errorf("KindOf(%s) = %+v, %v", k.Type, got, ok)
		}
	}
	if len(events.Topics()) != len(events.Kinds()) {
		t.Errorf("Topics() = %v, want one a kind", events.Topics())
	}
}

// One form of UUID, the contract's: 36 characters, 8-4-4-4-12, either case.
func TestIsUUIDTakesOnlyTheContractsForm(t *testing.T) {
	for _, s := range []string{"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "019A8F3E-6C19-7D4A-8E55-0A1B2C3D4E5F", "00000000-0000-0000-0000-000000000000"} {
		if !events.IsUUID(s) {
			t.Errorf("IsUUID(%q) = false", s)
		}
	}
	for _, s := range []string{"", "019a8f3e6c197d4a8e550a1b2c3d4e5f", "{019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f}",
		"urn:uuid:019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5g", "019a8f3e-6c19-7d4a-8e55_0a1b2c3d4e5f",
		"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5", " 019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4é"} {
		if events.IsUUID(s) {
			t.Errorf("IsUUID(%q) = true", s)
		}
	}
}
