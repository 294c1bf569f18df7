package kafka

import (
	jsonv2 "github.com/go-json-experiment/json"

	"github.com/orderflow/common-events/events"
)

// Event reads an envelope's payload into its event, as every consumer reads a record: the
// rules of events.Decode, with the payload's JSON read by encoding/json/v2 (this module is
// its mirror until the toolchain ships it without GOEXPERIMENT=jsonv2), which reads a
// payload in one pass, without copying it, where encoding/json's Decoder copies it and
// scans it twice (docs/performance.md, "Reading a record").
// It reads what encoding/json reads from orderflow's producers, unknown members ignored
// and anything after the value refused; it is stricter with what they never write: a name
// given twice, a name in another case than the contract's, a string that is not UTF-8.
func Event(env events.Envelope) (events.Event, error) {
	return events.DecodeWith(env, readJSON)
}

func readJSON(data []byte, v any) error { return jsonv2.Unmarshal(data, v) }
