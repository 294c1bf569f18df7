package events

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CloudEvents 1.0 Kafka protocol binding, binary content mode: the attributes travel as
// headers, the value is the JSON payload.
const (
	HeaderSpecVersion   = "ce_specversion"
	HeaderID            = "ce_id"
	HeaderSource        = "ce_source"
	HeaderType          = "ce_type"
	HeaderTime          = "ce_time"
	HeaderSubject       = "ce_subject"
	HeaderContentType   = "content-type"
	HeaderCorrelationID = "correlationid"
	HeaderTraceParent   = "traceparent"

	SpecVersion = "1.0"
	ContentType = "application/json"
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Envelope is an event as it travels: CloudEvents attributes plus the JSON payload.
type Envelope struct {
	ID            string // UUIDv7
	Source        string // the producing service
	Type          string
	Time          time.Time
	Subject       string // the order id, also the record key
	CorrelationID string // follows the order end to end
	TraceParent   string // W3C trace context
	Data          []byte // JSON payload
}

// Meta carries what a new event inherits from what caused it.
type Meta struct {
	Source        string
	CorrelationID string // empty starts a new correlation (the event's own id)
	TraceParent   string // empty starts a new trace
}

// New wraps ev in an envelope with a fresh UUIDv7 id. It refuses an invalid payload, so an
// invalid event is never published.
func New(ev Event, meta Meta, now time.Time) (Envelope, error) {
	if err := ev.Validate(); err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", ev.EventType(), err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", ev.EventType(), err)
	}
	env := Envelope{
		ID:            NewID(now),
		Source:        meta.Source,
		Type:          ev.EventType(),
		Time:          now.UTC(),
		Subject:       ev.Subject(),
		CorrelationID: meta.CorrelationID,
		TraceParent:   meta.TraceParent,
		Data:          data,
	}
	if env.CorrelationID == "" {
		env.CorrelationID = env.ID
	}
	if env.TraceParent == "" {
		env.TraceParent = NewTraceParent()
	}
	return env, nil
}

// Headers returns the envelope's attributes as Kafka headers.
func (e Envelope) Headers() []Header {
	return []Header{
		{HeaderSpecVersion, []byte(SpecVersion)},
		{HeaderID, []byte(e.ID)},
		{HeaderSource, []byte(e.Source)},
		{HeaderType, []byte(e.Type)},
		{HeaderTime, []byte(e.Time.UTC().Format(time.RFC3339Nano))},
		{HeaderSubject, []byte(e.Subject)},
		{HeaderContentType, []byte(ContentType)},
		{HeaderCorrelationID, []byte(e.CorrelationID)},
		{HeaderTraceParent, []byte(e.TraceParent)},
	}
}

// Meta returns what an event caused by this one inherits: correlation and trace.
func (e Envelope) Meta(source string) Meta {
	return Meta{Source: source, CorrelationID: e.CorrelationID, TraceParent: e.TraceParent}
}

// Sentinels for what makes a record undecodable. Every decode error wraps one of them and
// is a *DecodeError, so a consumer can tell a poison record from a transient failure.
var (
	ErrMissingHeader  = errors.New("missing header")
	ErrInvalidHeader  = errors.New("invalid header")
	ErrUnknownType    = errors.New("unknown event type")
	ErrInvalidPayload = errors.New("invalid payload")
)

// DecodeError says why a record cannot be turned into an event. It is permanent:
// redelivering the same bytes fails the same way.
type DecodeError struct {
	Err    error // one of the sentinels above
	Detail string
}

func (e *DecodeError) Error() string { return e.Err.Error() + ": " + e.Detail }
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(sentinel error, format string, args ...any) error {
	return &DecodeError{Err: sentinel, Detail: fmt.Sprintf(format, args...)}
}

// ParseEnvelope reads a record's headers and value back into an envelope, checking that
// every required attribute is present and well formed.
func ParseEnvelope(headers []Header, value []byte) (Envelope, error) {
	h := make(map[string]string, len(headers))
	for _, hd := range headers {
		h[hd.Key] = string(hd.Value)
	}
	for _, k := range []string{HeaderSpecVersion, HeaderID, HeaderSource, HeaderType, HeaderTime, HeaderSubject} {
		if h[k] == "" {
			return Envelope{}, decodeErr(ErrMissingHeader, "%s", k)
		}
	}
	if v := h[HeaderSpecVersion]; v != SpecVersion {
		return Envelope{}, decodeErr(ErrInvalidHeader, "%s: want %q, got %q", HeaderSpecVersion, SpecVersion, v)
	}
	if ct, ok := h[HeaderContentType]; ok && ct != ContentType {
		return Envelope{}, decodeErr(ErrInvalidHeader, "%s: want %q, got %q", HeaderContentType, ContentType, ct)
	}
	t, err := time.Parse(time.RFC3339Nano, h[HeaderTime])
	if err != nil {
		return Envelope{}, decodeErr(ErrInvalidHeader, "%s: %v", HeaderTime, err)
	}
	return Envelope{
		ID:            h[HeaderID],
		Source:        h[HeaderSource],
		Type:          h[HeaderType],
		Time:          t,
		Subject:       h[HeaderSubject],
		CorrelationID: h[HeaderCorrelationID],
		TraceParent:   h[HeaderTraceParent],
		Data:          value,
	}, nil
}

// Decode turns the envelope's payload into its typed event and validates it.
// Unknown JSON fields are ignored: producers may add fields, never remove them.
func Decode(env Envelope) (Event, error) {
	var ev Event
	switch env.Type {
	case TypeOrderCreated:
		ev = &OrderCreated{}
	case TypePaymentCompleted:
		ev = &PaymentCompleted{}
	case TypePaymentFailed:
		ev = &PaymentFailed{}
	case TypeOrderCancelled:
		ev = &OrderCancelled{}
	case TypePaymentRefunded:
		ev = &PaymentRefunded{}
	default:
		return nil, decodeErr(ErrUnknownType, "%q", env.Type)
	}
	dec := json.NewDecoder(bytes.NewReader(env.Data))
	if err := dec.Decode(ev); err != nil {
		return nil, decodeErr(ErrInvalidPayload, "%s: %v", env.Type, err)
	}
	if dec.More() {
		return nil, decodeErr(ErrInvalidPayload, "%s: trailing data after the JSON object", env.Type)
	}
	if err := ev.Validate(); err != nil {
		return nil, decodeErr(ErrInvalidPayload, "%s: %v", env.Type, err)
	}
	if ev.Subject() != env.Subject {
		return nil, decodeErr(ErrInvalidPayload, "%s: order_id %q does not match %s %q", env.Type, ev.Subject(), HeaderSubject, env.Subject)
	}
	// Hand back values, not pointers, so a type switch reads naturally.
	switch e := ev.(type) {
	case *OrderCreated:
		return *e, nil
	case *PaymentCompleted:
		return *e, nil
	case *PaymentFailed:
		return *e, nil
	case *OrderCancelled:
		return *e, nil
	default:
		return *(e.(*PaymentRefunded)), nil
	}
}

// NewID returns a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, so ids
// sort by creation time.
func NewID(now time.Time) string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails on supported platforms
	ms := uint64(now.UnixMilli())
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x70 // version 7
	u[8] = u[8]&0x3f | 0x80 // variant 10
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// NewTraceParent starts a W3C trace: version 00, random trace and span ids, sampled.
func NewTraceParent() string {
	var id [24]byte
	_, _ = rand.Read(id[:])
	return "00-" + hex.EncodeToString(id[:16]) + "-" + hex.EncodeToString(id[16:]) + "-01"
}
