// Package kafka is orderflow's sarama configuration and the glue between sarama records
// and event envelopes. Every service builds its clients here, so they all share the safe
// settings.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"

	"github.com/orderflow/common-events/events"
)

// sarama times and sizes every request, record and batch in go-metrics histograms that
// nothing here reads (a service's metrics are Prometheus's, package metrics), and the
// services' CPU profiles had that bookkeeping among their costliest work. Turned off for
// every client of the process before any is made.
func init() { metrics.UseNilMetrics = true }

// Config returns sarama settings that keep delivery guarantees, not sarama's defaults:
// an idempotent producer waiting for every in-sync replica, one request in flight per
// broker so retries cannot reorder, manual-after-processing offsets starting from the
// oldest record for a new group.
func Config(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = clientID
	c.Version = sarama.V2_8_0_0

	c.Net.MaxOpenRequests = 1
	// A broker that goes silent (packets dropped, nothing refused) is noticed, and the
	// connection given up: a dial that gets no answer for 5 s; an answer that does not
	// come within 15 s, 5 s more than the longest a request waits at the broker (a
	// produce, Producer.Timeout, for the in-sync replicas; a fetch, a second at most);
	// a write not taken within 10 s; an idle connection whose keepalive probes, every
	// 10 s, go unanswered. A request caught on a silent connection is retried on a fresh
	// one when its answer is due, and the retries may meet another such connection (the
	// metadata's, the group coordinator's), one after the other, each costing a whole
	// read timeout (docs/liveness.md has what sarama's 30 s cost in a chaos run). A
	// JoinGroup is the one request the
	// broker may hold longer, until the group's other members have rejoined
	// (Rebalance.Timeout): one held past 15 s is given up and sent again, which the broker
	// answers as the first.
	c.Net.DialTimeout = 5 * time.Second
	c.Net.ReadTimeout = 15 * time.Second
	c.Net.WriteTimeout = 10 * time.Second
	c.Net.KeepAlive = 10 * time.Second
	c.Metadata.Retry.Max = 2
	c.Metadata.Retry.Backoff = 200 * time.Millisecond

	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Timeout = 10 * time.Second // the longest a produce waits at the broker for the in-sync replicas, under Net.ReadTimeout
	c.Producer.Retry.Max = 5
	c.Producer.Retry.Backoff = 200 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Partitioner = sarama.NewHashPartitioner // key = order id → one partition per order
	c.Producer.Compression = sarama.CompressionNone

	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = true // commits what was marked, and only that
	c.Consumer.Offsets.AutoCommit.Interval = time.Second
	c.Consumer.Return.Errors = true
	c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRoundRobin()}
	c.Consumer.Group.Session.Timeout = 10 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 3 * time.Second
	return c
}

// EnsureTopics creates each topic with the given partition count unless it exists, and
// returns once every partition of every topic has a leader. Safe to run from every
// instance at every start.
//
// The wait matters on Apache Kafka: a partition of a topic created a moment ago may not
// have its leader yet, and a consumer group session that starts then cannot open that
// partition — sarama reports the error and leaves the partition unconsumed until the next
// rebalance, which a lone member may never see. (kfake elects leaders at once.) conf is
// the client's (Config, or Security.Config).
func EnsureTopics(brokers []string, conf *sarama.Config, spec TopicSpec, topics ...string) error {
	admin, err := sarama.NewClusterAdmin(brokers, conf)
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	defer admin.Close()
	existing, err := admin.ListTopics()
	if err != nil {
		return fmt.Errorf("ensure topics: list: %w", err)
	}
	for _, t := range topics {
		if _, ok := existing[t]; ok {
			continue
		}
		err := admin.CreateTopic(t, &sarama.TopicDetail{NumPartitions: spec.Partitions, ReplicationFactor: -1, ConfigEntries: spec.Config(t)}, false)
		if errors.Is(err, sarama.ErrTopicAuthorizationFailed) || errors.Is(err, sarama.ErrClusterAuthorizationFailed) {
			return fmt.Errorf("ensure topics: topic %s does not exist and this principal may not create it: "+
				"run the service's kafka-setup as the cluster's administrator first (docs/kafka-security.md): %w", t, err)
		}
		if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("ensure topics: create %s: %w", t, err)
		}
	}
	return waitForLeaders(admin, topics, 30*time.Second)
}

// TopicSpec is how the topics orderflow makes are made: Partitions each; an event topic
// keeps its records Retention (0: as long as the broker's default says), the horizon of a
// read model rebuilt by replay; an entity topic (events.IsEntityTopic) is compacted and
// keeps each key's latest record for ever, whatever Retention says. A topic made before
// keeps the settings it was made with (kafka-configs --alter changes them).
type TopicSpec struct {
	Partitions int32
	Retention  time.Duration
}

// Config is the settings topic is made with.
func (s TopicSpec) Config(topic string) map[string]*string {
	str := func(v string) *string { return &v }
	switch {
	case events.IsEntityTopic(topic):
		return map[string]*string{"cleanup.policy": str("compact"), "retention.ms": str("-1")}
	case s.Retention > 0:
		return map[string]*string{"cleanup.policy": str("delete"), "retention.ms": str(strconv.FormatInt(s.Retention.Milliseconds(), 10))}
	}
	return nil
}

// waitForLeaders returns once every partition of topics has a leader, or an error naming
// what still has none after timeout.
func waitForLeaders(admin sarama.ClusterAdmin, topics []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var missing []string
		metas, err := admin.DescribeTopics(topics)
		if err != nil {
			missing = append(missing, err.Error())
		}
		for _, m := range metas {
			if !errors.Is(m.Err, sarama.ErrNoError) || len(m.Partitions) == 0 {
				missing = append(missing, fmt.Sprintf("%s: %v", m.Name, m.Err))
				continue
			}
			for _, p := range m.Partitions {
				if p.Leader < 0 || !errors.Is(p.Err, sarama.ErrNoError) {
					missing = append(missing, fmt.Sprintf("%s/%d", m.Name, p.ID))
				}
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ensure topics: no leader after %s for %v", timeout, missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ping reports whether a broker of client's cluster answers a metadata request within
// the context's deadline (pingTimeout without one). It asks on a connection of its own,
// whose every wait ends by that deadline, and closes it before returning: nothing of
// the call outlives it, and it never queues behind the client's requests. (The client's
// RefreshMetadata takes no context and waits out its own timeouts, retries included.)
func Ping(ctx context.Context, client sarama.Client) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(pingTimeout)
	}
	brokers := client.Brokers()
	if len(brokers) == 0 {
		return errors.New("kafka: no broker known")
	}
	var errs []error
	for i, b := range brokers {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("kafka: %w", err)
		}
		// Each broker left gets an equal share of the time left.
		by := time.Now().Add(time.Until(deadline) / time.Duration(len(brokers)-i))
		err := askMetadata(b.Addr(), client.Config(), by)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("kafka: %w", errors.Join(errs...))
}

// pingTimeout bounds a Ping whose context has no deadline.
const pingTimeout = 5 * time.Second

// askMetadata opens a connection to addr with base's settings, asks it for the cluster's
// metadata, and closes it, all by the deadline by.
func askMetadata(addr string, base *sarama.Config, by time.Time) error {
	conf := *base
	left := time.Until(by)
	if left <= 0 {
		return fmt.Errorf("%s: %w", addr, context.DeadlineExceeded)
	}
	conf.Net.DialTimeout, conf.Net.ReadTimeout, conf.Net.WriteTimeout = left, left, left
	conf.Net.Proxy.Enable, conf.Net.Proxy.Dialer = true, deadlineDialer{by: by, next: dialer(base, left)}
	b := sarama.NewBroker(addr)
	if err := b.Open(&conf); err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	defer b.Close() // waits for the connection's reader to end
	if _, err := b.GetMetadata(sarama.NewMetadataRequest(conf.Version, nil)); err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	return nil
}

// netDialer is what sarama dials with.
type netDialer interface {
	Dial(network, addr string) (net.Conn, error)
}

func dialer(c *sarama.Config, timeout time.Duration) netDialer {
	if c.Net.Proxy.Enable && c.Net.Proxy.Dialer != nil {
		return c.Net.Proxy.Dialer
	}
	return &net.Dialer{Timeout: timeout, KeepAlive: c.Net.KeepAlive, LocalAddr: c.Net.LocalAddr}
}

// deadlineDialer dials through next and hands out connections whose deadlines never pass
// by, whatever deadline sarama sets on them for each request.
type deadlineDialer struct {
	by   time.Time
	next netDialer
}

func (d deadlineDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.next.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(d.by); err != nil {
		c.Close()
		return nil, err
	}
	return deadlineConn{c, d.by}, nil
}

type deadlineConn struct {
	net.Conn
	by time.Time
}

func (c deadlineConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(earliest(t, c.by)) }
func (c deadlineConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(earliest(t, c.by))
}
func (c deadlineConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(earliest(t, c.by))
}

func earliest(t, by time.Time) time.Time {
	if t.IsZero() || t.After(by) {
		return by
	}
	return t
}

// Message turns an envelope into a record for topic, keyed by the order id.
func Message(topic string, env events.Envelope) *sarama.ProducerMessage {
	return &sarama.ProducerMessage{
		Topic:   topic,
		Key:     sarama.StringEncoder(env.Subject),
		Value:   sarama.ByteEncoder(env.Data),
		Headers: RecordHeaders(env.Headers()),
	}
}

// RecordHeaders converts envelope headers to sarama's.
func RecordHeaders(hs []events.Header) []sarama.RecordHeader {
	out := make([]sarama.RecordHeader, len(hs))
	for i, h := range hs {
		out[i] = sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value}
	}
	return out
}

// Envelope reads a consumed record back into an envelope.
func Envelope(msg *sarama.ConsumerMessage) (events.Envelope, error) {
	var buf [12]events.Header // an event's headers fit: no allocation for them
	hs := buf[:0]
	for _, h := range msg.Headers {
		if h != nil {
			hs = append(hs, events.Header{Key: headerName(h.Key), Value: h.Value})
		}
	}
	return events.ParseEnvelope(hs, msg.Value)
}

// headerName is name as a string: the header names events carry are the constants
// themselves, so a consumed record's names cost no allocation; any other is copied.
func headerName(name []byte) string {
	for _, known := range headerNames {
		if string(name) == known { // compared in place, not copied
			return known
		}
	}
	return string(name)
}

// headerNames are the header names an event's record carries, as Envelope.Headers
// writes them.
var headerNames = func() []string {
	var names []string
	for _, h := range (events.Envelope{}).Headers() {
		names = append(names, h.Key)
	}
	return names
}()
