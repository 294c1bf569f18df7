package events

import (
	"bytes"
	_ "embed"
)

//go:embed asyncapi.yaml
var asyncAPI []byte

// AsyncAPI returns the AsyncAPI 3.0 document of every topic, event type and dead-letter
// topic, which every service serves at GET /asyncapi.yaml. Its tests keep it true: golden
// payloads and the records the services really publish validate against it, and its
// channels and messages are the topics and kinds declared here.
func AsyncAPI() []byte { return bytes.Clone(asyncAPI) }
