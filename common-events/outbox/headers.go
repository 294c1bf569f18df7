package outbox

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
)

// The outbox's headers column holds an event's Kafka headers as a JSON object of strings
// (json). The relay reads every row's, and the writers write one for every event:
// through encoding/json's maps both ways that was a share of the services' CPU under
// load (docs/performance.md, "The outbox's headers"), so both ways have a path of their
// own for what events' headers are, plain strings, and hand the rest to encoding/json.

// appendHeaders appends hs as a JSON object of strings.
func appendHeaders(b []byte, hs []events.Header) []byte {
	b = append(b, '{')
	for i, h := range hs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, h.Key)
		b = append(b, ':')
		b = appendString(b, string(h.Value))
	}
	return append(b, '}')
}

// appendString appends s as a JSON string: quotes, backslashes and control characters
// escaped. Text that is not UTF-8 goes through encoding/json, which writes U+FFFD for
// what is not (PostgreSQL takes no text that is not).
func appendString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		q, _ := json.Marshal(s) // a string always marshals
		return append(b, q...)
	}
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// recordHeaders reads a headers column, the text of a JSON object of strings, as
// Kafka record headers, sharing text's bytes. Strings without escapes, which is what
// events' headers are, are read here; anything else goes through encoding/json.
func recordHeaders(text []byte) ([]sarama.RecordHeader, error) {
	hs := make([]sarama.RecordHeader, 0, 10)
	i := skipSpace(text, 0)
	if i == len(text) || text[i] != '{' {
		return slowHeaders(text)
	}
	if i = skipSpace(text, i+1); i < len(text) && text[i] == '}' {
		if skipSpace(text, i+1) != len(text) {
			return slowHeaders(text)
		}
		return hs, nil
	}
	for {
		k, next, ok := plainString(text, i)
		if !ok {
			return slowHeaders(text)
		}
		if i = skipSpace(text, next); i == len(text) || text[i] != ':' {
			return slowHeaders(text)
		}
		v, next, ok := plainString(text, skipSpace(text, i+1))
		if !ok {
			return slowHeaders(text)
		}
		hs = append(hs, sarama.RecordHeader{Key: k, Value: v})
		switch i = skipSpace(text, next); {
		case i < len(text) && text[i] == ',':
			i = skipSpace(text, i+1)
		case i < len(text) && text[i] == '}' && skipSpace(text, i+1) == len(text):
			return hs, nil
		default:
			return slowHeaders(text)
		}
	}
}

// plainString is the JSON string at text[i:] when it holds no escape and no control
// character: its bytes, and where it ends.
func plainString(text []byte, i int) (s []byte, end int, ok bool) {
	if i >= len(text) || text[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(text); j++ {
		switch c := text[j]; {
		case c == '"':
			return text[i+1 : j : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func skipSpace(text []byte, i int) int {
	for i < len(text) && strings.IndexByte(" \t\n\r", text[i]) >= 0 {
		i++
	}
	return i
}

// slowHeaders reads headers through encoding/json, in the order of their keys.
func slowHeaders(text []byte) ([]sarama.RecordHeader, error) {
	var m map[string]string
	if err := json.Unmarshal(text, &m); err != nil {
		return nil, err
	}
	hs := make([]sarama.RecordHeader, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		hs = append(hs, sarama.RecordHeader{Key: []byte(k), Value: []byte(m[k])})
	}
	return hs, nil
}

// header is the value of hs's header key ("" if none).
func header(hs []sarama.RecordHeader, key string) string {
	for _, h := range hs {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// setHeader sets hs's header key to value, adding it if hs has none.
func setHeader(hs []sarama.RecordHeader, key, value string) []sarama.RecordHeader {
	for i, h := range hs {
		if string(h.Key) == key {
			hs[i].Value = []byte(value)
			return hs
		}
	}
	return append(hs, sarama.RecordHeader{Key: []byte(key), Value: []byte(value)})
}
