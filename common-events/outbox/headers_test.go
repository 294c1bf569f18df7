package outbox

import (
	"context"
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
)

// asMap is hs as a map, as encoding/json reads a headers column.
func asMap(hs []sarama.RecordHeader) map[string]string {
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[string(h.Key)] = string(h.Value)
	}
	return m
}

// The relay reads a headers column as encoding/json does, whatever the text: plain
// strings on its own path, escapes and odd spacing through encoding/json, and what is not
// an object of strings refused.
func TestHeadersAreReadAsEncodingJSONReadsThem(t *testing.T) {
	for _, text := range []string{
		`{}`, ` { } `, `{"ce_id": "1", "ce_type": "order.created"}`, `{"a":"b","c":""}`, "{\n\t\"a\" :\r \"b\" ,\"c\": \"d\"}",
		`{"a": "quote \" inside"}`, `{"a\\b": "back\\slash"}`, `{"a": "\u00fcn\u0069"}`, `{"a": "ün€"}`, `{"a": "x", "a": "y"}`,
	} {
		got, err := recordHeaders([]byte(text))
		var want map[string]string
		if jerr := json.Unmarshal([]byte(text), &want); err != nil || jerr != nil {
			t.Fatalf("%s: %v (encoding/json: %v)", text, err, jerr)
		}
		if !maps.Equal(asMap(got), want) {
			t.Errorf("%s: read %v, want %v", text, asMap(got), want)
		}
	}
	for _, text := range []string{``, `{`, `{"a": 1}`, `{"a": "b"} x`, `{"a": "b",}`, `["a"]`, `{"a" "b"}`, `{"a": "b"`, `null x`} {
		if got, err := recordHeaders([]byte(text)); err == nil {
			t.Errorf("%q read as %v", text, asMap(got))
		}
	}
}

// An event's headers written to the outbox read back the same through its column,
// whatever its correlation id holds: quotes, backslashes, control characters, other
// alphabets, bytes that are not UTF-8 (written as encoding/json writes them, U+FFFD).
func TestHeadersReadBackThroughPostgreSQL(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	odd := []string{"plain-1", `quote " and \ back`, "tab\tnew\nline\x01\x1f", "ünï €𝄞", "<&>", "not utf-8 \xff\xfe"}
	var rows Rows
	var envs []events.Envelope
	for i, c := range odd {
		env, err := events.New(events.OrderCancelled{OrderID: "00000000-0000-7000-8000-00000000000" + string(rune('1'+i)),
			CustomerID: "00000000-0000-7000-8000-000000000001", CustomerEmail: "a@b.c", TotalCents: 100, Currency: "EUR",
			CancelledAt: time.Now()},
			events.Meta{CorrelationID: c}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rows.Add(i, env)
		envs = append(envs, env)
	}
	sql, args := rows.SQL(1, "")
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(must(pool.Query(ctx, `SELECT headers FROM outbox ORDER BY id`)), pgx.RowTo[[]byte])
	if err != nil || len(got) != len(envs) {
		t.Fatalf("%d rows, %v", len(got), err)
	}
	for i, text := range got {
		hs, err := recordHeaders(text)
		if err != nil {
			t.Fatalf("row %d %s: %v", i, text, err)
		}
		var want map[string]string
		if err := json.Unmarshal(text, &want); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(asMap(hs), want) {
			t.Errorf("row %d %s: read %v, encoding/json reads %v", i, text, asMap(hs), want)
		}
		wrote, _ := json.Marshal(odd[i])
		var c string
		_ = json.Unmarshal(wrote, &c)
		if h := header(hs, events.HeaderCorrelationID); h != c || header(hs, events.HeaderID) != envs[i].ID {
			t.Errorf("row %d: correlation id %q, want %q; id %q, want %q", i, h, c, header(hs, events.HeaderID), envs[i].ID)
		}
	}
}

func must(rows pgx.Rows, err error) pgx.Rows {
	if err != nil {
		panic(err)
	}
	return rows
}
