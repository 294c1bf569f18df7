package kafka_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
)

// A consumer reads a payload as events.Decode does, through a JSON reader of its own: the
// same event for every released record and for what encoding/json reads alike (unknown
// members, nulls, whitespace, escapes, a member's order), and a DecodeError for what
// encoding/json refuses too (trailing data, a wrong type, a missing order id). What only
// it refuses is named: a name given twice, a name in another case, a string that is not
// UTF-8; no producer of orderflow writes them.
func TestAConsumerReadsAPayloadAsDecodeDoes(t *testing.T) {
	for _, k := range events.Kinds() {
		_, data := golden(t, k)
		env := events.Envelope{ID: "e", Source: k.Source, Type: k.Type, Subject: "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", Data: data}
		sameAsDecode(t, k.Type+" (golden)", env, true)
	}
	const id = `"order_id":"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"`
	const rest = `"customer_id":"c","customer_email":"a@example.com","amount_cents":100,"currency":"EUR","reason":"card_declined","payment_id":"p","failed_at":"2026-11-23T09:15:02Z"`
	alike := map[string]string{
		"an unknown member":        `{` + id + `,` + rest + `,"added_later":{"x":[1,2]}}`,
		"members in another order": `{` + rest + `,` + id + `}`,
		"whitespace around":        " \n{" + id + "," + rest + "}\t\n",
		"an escaped string":        `{` + id + `,` + strings.Replace(rest, `"card_declined"`, `"card\u005fdeclined \"x\""`, 1) + `}`,
		"a null member":            `{` + id + `,` + strings.Replace(rest, `"customer_id":"c"`, `"customer_id":null`, 1) + `}`,
		"data after the value":     `{` + id + `,` + rest + `}{}`,
		"a stray brace after it":   `{` + id + `,` + rest + `}}`,
		"a string for a number":    `{` + id + `,` + strings.Replace(rest, `100`, `"100"`, 1) + `}`,
		"a fraction for cents":     `{` + id + `,` + strings.Replace(rest, `100`, `100.5`, 1) + `}`,
		"no order id":              `{` + rest + `}`,
		"not JSON":                 `{` + id,
		"empty":                    ``,
	}
	for name, data := range alike {
		sameAsDecode(t, name, failed([]byte(data)), false)
	}
	stricter := map[string]string{
		"a name given twice":         `{` + id + `,` + rest + `,"currency":"USD"}`,
		"a name in another case":     `{"Order_ID":"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f",` + rest + `}`,
		"a string that is not UTF-8": `{` + id + `,` + strings.Replace(rest, `card_declined`, "card\xffdeclined", 1) + `}`,
	}
	for name, data := range stricter {
		if _, err := kafka.Event(failed([]byte(data))); !errors.Is(err, events.ErrInvalidPayload) {
			t.Errorf("%s: %v, want ErrInvalidPayload", name, err)
		}
	}
}

func failed(data []byte) events.Envelope {
	return events.Envelope{ID: "e", Source: "payment-service", Type: events.PaymentFailed{}.EventType(),
		Subject: "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", Data: data}
}

// sameAsDecode holds kafka.Event to events.Decode's answer for env; ok: that answer is an event.
func sameAsDecode(t *testing.T, name string, env events.Envelope, ok bool) {
	t.Helper()
	want, werr := events.Decode(env)
	got, gerr := kafka.Event(env)
	if ok && werr != nil {
		t.Fatalf("%s: events.Decode: %v", name, werr)
	}
	switch {
	case (werr == nil) != (gerr == nil):
		t.Errorf("%s: kafka.Event %v, %v; events.Decode %v, %v", name, got, gerr, want, werr)
	case werr != nil:
		var de *events.DecodeError
		if !errors.As(gerr, &de) || !errors.Is(gerr, events.ErrInvalidPayload) {
			t.Errorf("%s: kafka.Event refused with %v, want ErrInvalidPayload as events.Decode (%v)", name, gerr, werr)
		}
	case !reflect.DeepEqual(got, want):
		t.Errorf("%s: kafka.Event read %+v, events.Decode %+v", name, got, want)
	}
}
