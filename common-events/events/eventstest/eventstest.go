// Package eventstest reads the AsyncAPI document of package events for tests: which
// channels, messages and operations it declares, and whether a Kafka record (topic,
// headers, value) is one its messages describe, checked with a JSON Schema validator.
// It is for tests only; package events itself stays standard-library only.
package eventstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/orderflow/common-events/events"
)

const docURL = "mem:///asyncapi.json"

// Contract is the AsyncAPI document, compiled for checking records against it.
type Contract struct {
	Channels   map[string]Channel // by address: the topic
	Operations []Operation
	Messages   map[string]Message // by message name: the ce_type, or dead-letter
}

// Channel is one topic.
type Channel struct {
	ID, Address string
	Messages    []string // the names of the messages it carries
}

// Operation says that a service sends to a channel, or that a consumer group receives
// from it.
type Operation struct {
	ID, Action, Channel string // Channel is the address
	Services            []string
	Groups              []string // the Kafka binding's groupId enum, for receive
}

// Message is one message of the document, its header and payload schemas compiled.
type Message struct {
	Key, Name        string
	headers, payload *jsonschema.Schema
}

// Load reads the document events.AsyncAPI returns.
func Load() (*Contract, error) { return Parse(events.AsyncAPI()) }

// Parse reads an AsyncAPI 3.0 document.
func Parse(doc []byte) (*Contract, error) {
	var y any
	if err := yaml.Unmarshal(doc, &y); err != nil {
		return nil, fmt.Errorf("asyncapi: %w", err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		return nil, fmt.Errorf("asyncapi: %w", err)
	}
	root, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return nil, fmt.Errorf("asyncapi: %w", err)
	}
	var d struct {
		AsyncAPI string `json:"asyncapi"`
		Channels map[string]struct {
			Address  string                       `json:"address"`
			Messages map[string]map[string]string `json:"messages"`
		} `json:"channels"`
		Operations map[string]struct {
			Action   string            `json:"action"`
			Channel  map[string]string `json:"channel"`
			Tags     []struct{ Name string }
			Bindings struct {
				Kafka struct {
					GroupID struct {
						Enum []string `json:"enum"`
					} `json:"groupId"`
				} `json:"kafka"`
			} `json:"bindings"`
		} `json:"operations"`
		Components struct {
			Messages map[string]struct {
				Name string `json:"name"`
			} `json:"messages"`
		} `json:"components"`
	}
	if err := json.Unmarshal(j, &d); err != nil {
		return nil, fmt.Errorf("asyncapi: %w", err)
	}
	if !strings.HasPrefix(d.AsyncAPI, "3.0.") {
		return nil, fmt.Errorf("asyncapi: version %q, want 3.0.x", d.AsyncAPI)
	}

	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft7) // AsyncAPI's schema format is a superset of draft-07
	comp.AssertFormat()
	if err := comp.AddResource(docURL, root); err != nil {
		return nil, fmt.Errorf("asyncapi: %w", err)
	}
	c := &Contract{Channels: map[string]Channel{}, Messages: map[string]Message{}}
	for key, m := range d.Components.Messages {
		msg := Message{Key: key, Name: m.Name}
		ptr := "#/components/messages/" + key
		if msg.headers, err = comp.Compile(docURL + ptr + "/headers"); err != nil {
			return nil, fmt.Errorf("asyncapi: message %s headers: %w", key, err)
		}
		if msg.payload, err = comp.Compile(docURL + ptr + "/payload"); err != nil {
			return nil, fmt.Errorf("asyncapi: message %s payload: %w", key, err)
		}
		if _, dup := c.Messages[m.Name]; dup || m.Name == "" {
			return nil, fmt.Errorf("asyncapi: message %s: its name %q is empty or not unique", key, m.Name)
		}
		c.Messages[m.Name] = msg
	}
	byKey := func(ref string) (string, error) {
		key, ok := strings.CutPrefix(ref, "#/components/messages/")
		m, found := d.Components.Messages[key]
		if !ok || !found {
			return "", fmt.Errorf("not a message of the document: %q", ref)
		}
		return m.Name, nil
	}
	channelIDs := map[string]string{}
	for id, ch := range d.Channels {
		out := Channel{ID: id, Address: ch.Address}
		for _, ref := range ch.Messages {
			name, err := byKey(ref["$ref"])
			if err != nil {
				return nil, fmt.Errorf("asyncapi: channel %s: %w", id, err)
			}
			out.Messages = append(out.Messages, name)
		}
		sort.Strings(out.Messages)
		if _, dup := c.Channels[ch.Address]; dup {
			return nil, fmt.Errorf("asyncapi: two channels for %s", ch.Address)
		}
		c.Channels[ch.Address] = out
		channelIDs["#/channels/"+id] = ch.Address
	}
	for id, op := range d.Operations {
		addr, ok := channelIDs[op.Channel["$ref"]]
		if !ok {
			return nil, fmt.Errorf("asyncapi: operation %s: unknown channel %q", id, op.Channel["$ref"])
		}
		o := Operation{ID: id, Action: op.Action, Channel: addr, Groups: op.Bindings.Kafka.GroupID.Enum}
		for _, t := range op.Tags {
			o.Services = append(o.Services, t.Name)
		}
		c.Operations = append(c.Operations, o)
	}
	sort.Slice(c.Operations, func(i, j int) bool { return c.Operations[i].ID < c.Operations[j].ID })
	return c, nil
}

// DeadLetter is the name of the message every dead-letter channel carries.
const DeadLetter = "dead-letter"

// Check reports how a record on topic disagrees with the document: no channel for the
// topic, a message the channel does not carry, or headers or payload its schemas refuse.
func (c *Contract) Check(topic string, headers map[string]string, value []byte) error {
	ch, ok := c.Channels[topic]
	if !ok {
		return fmt.Errorf("%s: no channel for this topic", topic)
	}
	name := headers[events.HeaderType]
	if slices.Equal(ch.Messages, []string{DeadLetter}) {
		name = DeadLetter
	}
	if !slices.Contains(ch.Messages, name) {
		return fmt.Errorf("%s: the channel carries %v, not %q", topic, ch.Messages, name)
	}
	m := c.Messages[name]
	hs := make(map[string]any, len(headers))
	for k, v := range headers {
		hs[k] = v
	}
	var errs []error
	if err := m.headers.Validate(hs); err != nil {
		errs = append(errs, fmt.Errorf("%s %s headers: %w", topic, name, err))
	}
	if name != DeadLetter {
		payload, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s payload: %w", topic, name, err))
		} else if err := m.payload.Validate(payload); err != nil {
			errs = append(errs, fmt.Errorf("%s %s payload: %w", topic, name, err))
		}
	}
	return errors.Join(errs...)
}

// CheckEnvelope checks an envelope as a producer publishes it to topic.
func (c *Contract) CheckEnvelope(topic string, env events.Envelope) error {
	hs := map[string]string{}
	for _, h := range env.Headers() {
		hs[h.Key] = string(h.Value)
	}
	return c.Check(topic, hs, env.Data)
}
