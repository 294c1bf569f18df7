package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
)

// goldenRecord is one of events' golden records: its headers and its value.
type goldenRecord struct {
	Headers map[string]string `json:"headers"`
	Data    json.RawMessage   `json:"data"`
}

// record is g as a consumed record of topic, at partition and offset.
func (g goldenRecord) record(topic string, partition int32, offset int64) *sarama.ConsumerMessage {
	var hs []*sarama.RecordHeader
	for k, v := range g.Headers {
		hs = append(hs, &sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	return &sarama.ConsumerMessage{Topic: topic, Partition: partition, Offset: offset, Headers: hs, Value: g.Data}
}

// golden reads the golden record in file.
func golden(t testing.TB, file string) goldenRecord {
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var g goldenRecord
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// FuzzRecordDecoding feeds the runner's decoding arbitrary records: headers (one "key:
// value" a line) and a value, on a topic it consumes. No input panics; every refusal is a
// *events.DecodeError, a permanent error, so the record is dead-lettered rather than
// retried forever; what is accepted is a valid event of the record's subject, and reads
// back the same from the headers we would write for it.
func FuzzRecordDecoding(f *testing.F) {
	files, err := filepath.Glob("../events/testdata/golden/*.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("golden records: %v (%d files)", err, len(files))
	}
	for _, file := range files {
		g := golden(f, file)
		var hs strings.Builder
		for k, v := range g.Headers {
			hs.WriteString(k + ": " + v + "\n")
		}
		f.Add(hs.String(), []byte(g.Data))
		// The same event in the structured content mode, and with a header missing.
		structured, _ := json.Marshal(map[string]any{
			"specversion": "1.0", "id": g.Headers["ce_id"], "source": g.Headers["ce_source"], "type": g.Headers["ce_type"],
			"time": g.Headers["ce_time"], "subject": g.Headers["ce_subject"], "datacontenttype": "application/json", "data": g.Data,
		})
		f.Add("content-type: application/cloudevents+json\n", structured)
		f.Add(strings.Replace(hs.String(), "ce_type", "ce_typo", 1), []byte(g.Data))
	}
	f.Add("", []byte(nil))
	f.Add("content-type: application/json; charset=latin1\n", []byte("{}"))

	handlers := map[string]Handler{}
	for _, k := range events.Kinds() {
		handlers[k.Topic] = func(ctx context.Context, msg Message) (Apply, error) { return Apply{}, nil }
	}
	r := &Runner{Group: "fuzz", Handlers: handlers, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, headers string, value []byte) {
		var hs []*sarama.RecordHeader
		for _, line := range strings.Split(headers, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				hs = append(hs, &sarama.RecordHeader{Key: []byte(k), Value: []byte(strings.TrimPrefix(v, " "))})
			}
		}
		for _, topic := range []string{events.TopicOrderCreated, events.TopicPaymentCompleted} {
			it, _, err := r.decode(&sarama.ConsumerMessage{Topic: topic, Headers: hs, Value: value})
			if err != nil {
				if de := (*events.DecodeError)(nil); !errors.As(err, &de) {
					t.Fatalf("refused with %T %v, want a *events.DecodeError (dead-lettered, not retried)", err, err)
				}
				continue
			}
			msg := it.msg
			if err := msg.Event.Validate(); err != nil || msg.Event.Subject() != msg.Subject {
				t.Fatalf("accepted an invalid event: %v; subject %q, record's %q", err, msg.Event.Subject(), msg.Subject)
			}
			again := make([]events.Header, 0, 9)
			again = append(again, msg.Envelope.Headers()...)
			env, err := events.ParseEnvelope(again, msg.Data)
			if err != nil {
				t.Fatalf("our own headers for an accepted record do not read back: %v", err)
			}
			if env.ID != msg.ID || env.Type != msg.Type || env.Subject != msg.Subject || !env.Time.Equal(msg.Time) || !bytes.Equal(env.Data, msg.Data) {
				t.Fatalf("read back %+v, want %+v", env, msg.Envelope)
			}
		}
	})
}
