package kafka_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
)

// What a service may do follows from what the code declares: the topics of the events it
// is the source of, the topics and groups it consumes, its dead-letter topics.
func TestPermissionsFollowTheCode(t *testing.T) {
	var got []string
	for _, p := range kafka.Permissions("order-service", services.Order.Groups()) {
		got = append(got, p.String())
	}
	want := []string{
		"Write Topic order.created", "Describe Topic order.created", "Write Topic order.cancelled", "Describe Topic order.cancelled", "Write Topic order.state", "Describe Topic order.state",
		"Read Group order-service", "Describe Group order-service",
		"Read Topic payment.completed", "Describe Topic payment.completed",
		"Write Topic payment.completed.order-service.dlq", "Describe Topic payment.completed.order-service.dlq",
		"Read Topic payment.failed", "Describe Topic payment.failed",
		"Write Topic payment.failed.order-service.dlq", "Describe Topic payment.failed.order-service.dlq",
		"IdempotentWrite Cluster kafka-cluster",
	}
	if !slices.Equal(got, want) {
		t.Errorf("order-service may\n%v\nwant\n%v", got, want)
	}
}

// On a cluster that checks ACLs, each service granted its Permissions does its work — it
// writes its own events and reads its own topics in its own group — and nothing else:
// order-service cannot write payment.completed (the forged payment that would confirm an
// order nobody paid for), and payment-service cannot join order-service's group.
func TestPermissionsHoldOnACluster(t *testing.T) {
	topics := append(events.Topics(), ledger)
	for group, ts := range services.Order.Groups() {
		for _, topic := range ts {
			topics = append(topics, events.DeadLetterTopic(topic, group))
		}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(), kfake.SeedTopics(1, topics...),
		kfake.Superuser(kafka.MechanismPlain, "admin", "admin"),
		kfake.User(kafka.MechanismPlain, "order-service", "o"), kfake.User(kafka.MechanismPlain, "payment-service", "p"),
		kfake.User(kafka.MechanismPlain, "dlq", "d"), kfake.User(kafka.MechanismPlain, "kafka-ui", "v"),
		kfake.User(kafka.MechanismPlain, "auditor", "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	as := func(user, password string) kafka.Security {
		return kafka.Security{Protocol: kafka.SASLPlaintext, Mechanism: kafka.MechanismPlain, Username: user, Password: password}
	}
	admin, err := sarama.NewClusterAdmin(brokers, as("admin", "admin").Config("acl-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, svc := range []services.Service{services.Order, services.Payment} {
		service, groups := svc.Name, svc.Groups()
		if err := kafka.Grant(admin, "User:"+service, kafka.Permissions(service, groups)); err != nil {
			t.Fatal(err)
		}
		if err := kafka.Grant(admin, "User:dlq", kafka.OperatorPermissions(groups, ledger)); err != nil {
			t.Fatal(err)
		}
		if err := kafka.Grant(admin, "User:kafka-ui", kafka.ViewerPermissions(service, groups)); err != nil {
			t.Fatal(err)
		}
		if err := kafka.Grant(admin, "User:auditor", kafka.AuditorPermissions(groups, ledger)); err != nil {
			t.Fatal(err)
		}
	}
	produce := func(s kafka.Security, topic string) error {
		p, err := sarama.NewSyncProducer(brokers, s.Config("acl-test"))
		if err != nil {
			return err
		}
		defer p.Close()
		_, _, err = p.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("x")})
		return err
	}
	join := func(s kafka.Security, group, topic string) error {
		conf := s.Config("acl-test")
		conf.Consumer.Group.Rebalance.Retry.Max = 0
		g, err := sarama.NewConsumerGroup(brokers, group, conf)
		if err != nil {
			return err
		}
		defer g.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		joined := make(chan struct{})
		go func() {
			for err := range g.Errors() {
				_ = err
			}
		}()
		errc := make(chan error, 1)
		go func() { errc <- g.Consume(ctx, []string{topic}, setup(func() { close(joined); cancel() })) }()
		select {
		case <-joined:
			return nil
		case err := <-errc:
			if err == nil {
				err = errors.New("left the group before joining")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	read := func(s kafka.Security, topic string) error {
		c, err := sarama.NewConsumer(brokers, s.Config("acl-test"))
		if err != nil {
			return err
		}
		defer c.Close()
		pc, err := c.ConsumePartition(topic, 0, sarama.OffsetOldest)
		if err != nil {
			return err
		}
		defer pc.Close()
		select {
		case <-pc.Messages(): // the record the admin wrote
			return nil
		case err := <-pc.Errors():
			return err
		case <-time.After(10 * time.Second):
			return errors.New("neither a record nor an error")
		}
	}
	dead := events.DeadLetterTopic(events.TopicPaymentFailed, "order-service")
	for _, topic := range []string{events.TopicPaymentFailed, events.TopicOrderCreated, dead, ledger} {
		if err := produce(as("admin", "admin"), topic); err != nil {
			t.Fatal(err)
		}
	}
	order, payment := as("order-service", "o"), as("payment-service", "p")
	operator, viewer, auditor := as("dlq", "d"), as("kafka-ui", "v"), as("auditor", "a")
	for _, tc := range []struct {
		name    string
		do      func() error
		allowed bool
	}{
		{"order-service writes order.created", func() error { return produce(order, events.TopicOrderCreated) }, true},
		{"order-service writes its dead letters", func() error {
			return produce(order, events.DeadLetterTopic(events.TopicPaymentCompleted, "order-service"))
		}, true},
		{"order-service writes payment.completed", func() error { return produce(order, events.TopicPaymentCompleted) }, false},
		{"payment-service writes payment.completed", func() error { return produce(payment, events.TopicPaymentCompleted) }, true},
		{"payment-service writes order.cancelled", func() error { return produce(payment, events.TopicOrderCancelled) }, false},
		{"order-service reads payment.completed in its group", func() error { return join(order, "order-service", events.TopicPaymentCompleted) }, true},
		{"payment-service joins order-service's group", func() error { return join(payment, "order-service", events.TopicPaymentCompleted) }, false},
		{"order-service reads payment.failed", func() error { return read(order, events.TopicPaymentFailed) }, true},
		{"order-service reads order.created", func() error { return read(order, events.TopicOrderCreated) }, false},
		// The operators' dead-letter tool reads a dead letter, replays it to its topic and
		// records that in the ledger; it reads no live topic and writes no other.
		{"dlq reads a dead letter", func() error { return read(operator, dead) }, true},
		{"dlq replays to payment.failed", func() error { return produce(operator, events.TopicPaymentFailed) }, true},
		{"dlq writes the ledger", func() error { return produce(operator, ledger) }, true},
		{"dlq reads payment.failed", func() error { return read(operator, events.TopicPaymentFailed) }, false},
		{"dlq writes payment.refunded, which no group here reads", func() error { return produce(operator, events.TopicPaymentRefunded) }, false},
		// The viewer reads what the services use and writes nothing.
		{"kafka-ui reads order.created", func() error { return read(viewer, events.TopicOrderCreated) }, true},
		{"kafka-ui reads a dead letter", func() error { return read(viewer, dead) }, true},
		{"kafka-ui writes order.created", func() error { return produce(viewer, events.TopicOrderCreated) }, false},
		{"kafka-ui writes payment.completed", func() error { return produce(viewer, events.TopicPaymentCompleted) }, false},
		{"kafka-ui joins order-service's group", func() error { return join(viewer, "order-service", events.TopicPaymentCompleted) }, false},
		// reconciliation's auditor reads the dead letters and the ledger, nothing live, and
		// writes nothing.
		{"auditor reads a dead letter", func() error { return read(auditor, dead) }, true},
		{"auditor reads the ledger", func() error { return read(auditor, ledger) }, true},
		{"auditor reads payment.failed", func() error { return read(auditor, events.TopicPaymentFailed) }, false},
		{"auditor writes the ledger", func() error { return produce(auditor, ledger) }, false},
		{"auditor writes a dead letter", func() error { return produce(auditor, dead) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if tc.allowed != (err == nil) {
				t.Errorf("%v, want allowed %v", err, tc.allowed)
			} else if err != nil {
				t.Logf("refused: %v", err)
			}
		})
	}
}

// ledger stands for the dead-letter tool's ledger topic (deadletter.Ledger).
const ledger = "orderflow.dlq.replayed"

// setup is a group handler that calls joined once its session starts.
type setup func()

func (s setup) Setup(sarama.ConsumerGroupSession) error { s(); return nil }
func (setup) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (setup) ConsumeClaim(sess sarama.ConsumerGroupSession, _ sarama.ConsumerGroupClaim) error {
	<-sess.Context().Done()
	return nil
}
