package events

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"
	"unicode"
)

// CloudEvents 1.0 Kafka protocol binding, binary content mode: every attribute travels as a
// ce_-prefixed header, extensions included (correlationid is one), datacontenttype as
// content-type, and the value is the JSON payload. The trace context is the plain W3C
// traceparent header, which OpenTelemetry's Kafka instrumentation reads and writes.
const (
	HeaderSpecVersion   = "ce_specversion"
	HeaderID            = "ce_id"
	HeaderSource        = "ce_source"
	HeaderType          = "ce_type"
	HeaderTime          = "ce_time"
	HeaderSubject       = "ce_subject"
	HeaderContentType   = "content-type"
	HeaderCorrelationID = "ce_correlationid"
	HeaderTraceParent   = "traceparent"

	// HeaderLegacyCorrelationID is how records published before the correlation id became
	// a CloudEvents extension carry it; readers still accept it, because such records stay
	// in topics and dead-letter topics.
	HeaderLegacyCorrelationID = "correlationid"
	// headerCETraceParent is the Distributed Tracing extension's form of the trace context,
	// accepted from producers that write it instead of traceparent.
	headerCETraceParent = "ce_traceparent"

	SpecVersion = "1.0"
	ContentType = "application/json"
	// StructuredContentType marks a record whose value is the whole event as JSON.
	StructuredContentType = "application/cloudevents+json"
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Envelope is an event as it travels: CloudEvents attributes plus the JSON payload.
type Envelope struct {
	ID            string // UUIDv7
	Source        string // the producing service, its kind's Source
	Type          string
	Time          time.Time
	Subject       string // the order id, also the record key
	CorrelationID string // follows the order end to end
	TraceParent   string // W3C trace context
	Data          []byte // JSON payload
}

// Meta carries what a new event inherits from what caused it.
type Meta struct {
	CorrelationID string // empty starts a new correlation (the event's own id)
	TraceParent   string // empty starts a new trace
}

// New wraps ev in an envelope with a fresh UUIDv7 id, its source its kind's (the one
// service that produces it). It refuses an invalid payload, or one of no kind, so an
// invalid event is never published.
func New(ev Event, meta Meta, now time.Time) (Envelope, error) {
	k, ok := KindOf(ev.EventType())
	if !ok {
		return Envelope{}, fmt.Errorf("new %s event: %w", ev.EventType(), ErrUnknownType)
	}
	if err := ev.Validate(); err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", ev.EventType(), err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return Envelope{}, fmt.Errorf("new %s event: %w", ev.EventType(), err)
	}
	env := Envelope{
		ID:            NewID(now),
		Source:        k.Source,
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
func (e Envelope) Meta() Meta {
	return Meta{CorrelationID: e.CorrelationID, TraceParent: e.TraceParent}
}

// Topic is the topic the envelope's kind travels on ("" for a type of no kind).
func (e Envelope) Topic() string {
	k, _ := KindOf(e.Type)
	return k.Topic
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
// every required attribute is present and well formed. It reads what the Kafka binding
// allows, not only what we write: header names in any case, media-type parameters
// (application/json; charset=utf-8), the structured content mode, the legacy correlationid
// header, and ce_traceparent where traceparent is absent.
func ParseEnvelope(headers []Header, value []byte) (Envelope, error) {
	var h binaryHeaders
	for _, hd := range headers {
		h.set(hd.Key, hd.Value)
	}
	if h.hasContentType && h.contentType != ContentType {
		ct := h.contentType
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return Envelope{}, decodeErr(ErrInvalidHeader, "%s: %q: %v", HeaderContentType, ct, err)
		}
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			return Envelope{}, decodeErr(ErrInvalidHeader, "%s: %q: JSON is UTF-8", HeaderContentType, ct)
		}
		switch mt {
		case ContentType:
		case StructuredContentType:
			return parseStructured(h.traceParent, value)
		default:
			return Envelope{}, decodeErr(ErrInvalidHeader, "%s: want %q, got %q", HeaderContentType, ContentType, ct)
		}
	}
	env, err := envelopeOf(h.attr, value)
	if err != nil {
		return Envelope{}, err
	}
	if env.CorrelationID == "" {
		env.CorrelationID = h.legacyCorrelationID
	}
	if env.TraceParent = h.traceParent; env.TraceParent == "" {
		env.TraceParent = h.ceTraceParent
	}
	return env, nil
}

// binaryHeaders are the headers ParseEnvelope reads, each the last of its name, names in
// any case; the others are not kept.
type binaryHeaders struct {
	hasContentType                                             bool
	contentType                                                string
	specVersion, id, source, typ, time, subject, correlationID string
	legacyCorrelationID, traceParent, ceTraceParent            string
}

func (h *binaryHeaders) set(key string, value []byte) {
	if strings.ContainsFunc(key, unicode.IsUpper) {
		key = strings.ToLower(key)
	}
	if to := h.field(key); to != nil {
		*to = string(value)
		h.hasContentType = h.hasContentType || key == HeaderContentType
	}
}

// attr is the attribute of that CloudEvents name, from its ce_ header.
func (h *binaryHeaders) attr(name string) string {
	if to := h.field("ce_" + name); to != nil {
		return *to
	}
	return ""
}

// field is where the header of that name (lower case) is kept; nil: not kept.
func (h *binaryHeaders) field(key string) *string {
	switch key {
	case HeaderContentType:
		return &h.contentType
	case HeaderSpecVersion:
		return &h.specVersion
	case HeaderID:
		return &h.id
	case HeaderSource:
		return &h.source
	case HeaderType:
		return &h.typ
	case HeaderTime:
		return &h.time
	case HeaderSubject:
		return &h.subject
	case HeaderCorrelationID:
		return &h.correlationID
	case HeaderLegacyCorrelationID:
		return &h.legacyCorrelationID
	case HeaderTraceParent:
		return &h.traceParent
	case headerCETraceParent:
		return &h.ceTraceParent
	}
	return nil
}

// envelopeOf checks and reads the attributes attr returns by their CloudEvents names.
func envelopeOf(attr func(name string) string, data []byte) (Envelope, error) {
	for _, name := range []string{"specversion", "id", "source", "type", "time", "subject"} {
		if attr(name) == "" {
			return Envelope{}, decodeErr(ErrMissingHeader, "ce_%s", name)
		}
	}
	if v := attr("specversion"); v != SpecVersion {
		return Envelope{}, decodeErr(ErrInvalidHeader, "%s: want %q, got %q", HeaderSpecVersion, SpecVersion, v)
	}
	t, err := time.Parse(time.RFC3339Nano, attr("time"))
	if err != nil {
		return Envelope{}, decodeErr(ErrInvalidHeader, "%s: %v", HeaderTime, err)
	}
	return Envelope{
		ID:            attr("id"),
		Source:        attr("source"),
		Type:          attr("type"),
		Time:          t,
		Subject:       attr("subject"),
		CorrelationID: attr("correlationid"),
		TraceParent:   attr("traceparent"),
		Data:          data,
	}, nil
}

// parseStructured reads the structured content mode: the value is the event as JSON, its
// attributes as members and the payload in data (or data_base64).
func parseStructured(traceParent string, value []byte) (Envelope, error) {
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(value, &ev); err != nil {
		return Envelope{}, decodeErr(ErrInvalidPayload, "structured event: %v", err)
	}
	attrs := make(map[string]string, len(ev))
	for k, v := range ev {
		var s string
		if k != "data" && json.Unmarshal(v, &s) == nil {
			attrs[k] = s
		}
	}
	if ct := attrs["datacontenttype"]; ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != ContentType {
			return Envelope{}, decodeErr(ErrInvalidHeader, "datacontenttype: want %q, got %q", ContentType, ct)
		}
	}
	data := []byte(ev["data"])
	if b64, ok := attrs["data_base64"]; ok {
		var err error
		if data, err = base64.StdEncoding.DecodeString(b64); err != nil {
			return Envelope{}, decodeErr(ErrInvalidPayload, "data_base64: %v", err)
		}
	}
	env, err := envelopeOf(func(name string) string { return attrs[name] }, data)
	if err != nil {
		return Envelope{}, err
	}
	if env.TraceParent == "" {
		env.TraceParent = traceParent
	}
	return env, nil
}

// Decode turns the envelope's payload into its typed event and validates it.
// Unknown JSON fields are ignored: producers may add fields, never remove them.
func Decode(env Envelope) (Event, error) { return DecodeWith(env, json.Unmarshal) }

// Unmarshal reads one JSON value into v as json.Unmarshal does: unknown fields ignored,
// anything after the value refused.
type Unmarshal func(data []byte, v any) error

// DecodeWith is Decode with the payload read by unmarshal: for a consumer that brings a
// faster JSON reader than the standard library's (this package uses that one only).
func DecodeWith(env Envelope, unmarshal Unmarshal) (Event, error) {
	k, ok := KindOf(env.Type)
	if !ok {
		return nil, decodeErr(ErrUnknownType, "%q", env.Type)
	}
	ev, err := k.decode(env.Data, unmarshal)
	if err != nil {
		return nil, decodeErr(ErrInvalidPayload, "%s: %v", env.Type, err)
	}
	if err := ev.Validate(); err != nil {
		return nil, decodeErr(ErrInvalidPayload, "%s: %v", env.Type, err)
	}
	if ev.Subject() != env.Subject {
		return nil, decodeErr(ErrInvalidPayload, "%s: order_id %q does not match %s %q", env.Type, ev.Subject(), HeaderSubject, env.Subject)
	}
	return ev, nil
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
