package e2e

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/testenv"
	orderapp "github.com/orderflow/order-service/app"
)

// secureKafka is the tests' Apache Kafka, which lets in only its principals; the tests of
// who may do what skip on kfake, which make test's Apache Kafka pass runs them on.
func secureKafka(t *testing.T) testenv.Broker {
	t.Helper()
	if testenv.BrokerKind() != testenv.ApacheKafka {
		t.Skip("on Apache Kafka with SASL, TLS and ACLs: make test runs it on TEST_BROKER=kafka")
	}
	b := testenv.Kafka(t)
	if b.Secure == nil {
		t.Skip("KAFKA_BROKERS names a broker whose logins the tests do not know")
	}
	return b
}

// as is a client configuration that logs in to b as user.
func as(b testenv.Broker, user string) *sarama.Config {
	c := b.Secure.Client(user).Config("security-test")
	c.Metadata.Retry.Max = 1
	return c
}

// The forged-payment attack: anyone who reaches the broker writes payment.completed for a
// pending order, and order-service confirms it though no charge exists. On a broker with
// ACLs only payment-service may write it: order-service's principal (or a stranger's, or
// no login at all) is refused and the order stays pending. The same record written by a
// principal allowed to write it confirms the order: the ACL is what stops it.
func TestAForgedPaymentIsRefusedByTheBroker(t *testing.T) {
	b := secureKafka(t)
	s := newStack(t, b, map[string]map[string]string{"payment": {"PROVIDER_LATENCY": "20s"}}) // the charge is slow: the order waits
	o := s.placeOrder("tok_visa", "forged@example.com")
	env, err := events.New(events.PaymentCompleted{
		OrderID: o.ID, PaymentID: "019a8f3e-7d01-7e20-b1c2-d3e4f5a6b7c8", ChargeID: "ch_forged",
		CustomerID: issuer.Customer, CustomerEmail: o.CustomerEmail,
		AmountCents: o.TotalCents, Currency: "EUR", CompletedAt: time.Now(),
	}, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged := func(c *sarama.Config) error {
		p, err := sarama.NewSyncProducer(b.Addrs, c)
		if err != nil {
			return err
		}
		defer p.Close()
		_, _, err = p.SendMessage(kafka.Message(events.TopicPaymentCompleted, env))
		return err
	}
	for _, who := range []string{"order-service", "notification-service", testenv.Stranger} {
		// A principal that writes no topic may not even start an idempotent producer.
		if err := forged(as(b, who)); !errors.Is(err, sarama.ErrTopicAuthorizationFailed) && !errors.Is(err, sarama.ErrClusterAuthorizationFailed) {
			t.Errorf("%s wrote payment.completed: %v, want TOPIC_ or CLUSTER_AUTHORIZATION_FAILED", who, err)
		}
	}
	if err := forged(kafka.Config("stranger")); err == nil {
		t.Error("a client without a login wrote payment.completed")
	}
	time.Sleep(2 * time.Second) // what order-service would have done with it
	if got := s.getOrder(o.ID); got.Status != "PENDING_PAYMENT" {
		t.Fatalf("after the refused forgeries the order is %s, want PENDING_PAYMENT", got.Status)
	}
	if err := forged(as(b, kafkabroker.Admin)); err != nil {
		t.Fatalf("admin writes payment.completed: %v", err)
	}
	if got := s.waitStatus(o.ID, 15*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("the forgery an allowed principal wrote left the order %s; the check above proves nothing", got.Status)
	}
}

// Each principal may do exactly what its service's code declares (kafka.Permissions): a
// stranger with a login reads nothing, and no service reads a topic it does not consume
// or joins another's group.
func TestEachPrincipalMayDoOnlyWhatItsServiceDeclares(t *testing.T) {
	b := secureKafka(t)
	for name := range runs {
		setupKafka(t, b, name)
	}
	read := func(user, topic string) error { return readAs(as(b, user), b.Addrs, topic) }
	for _, c := range []struct {
		user, topic string
		allowed     bool
	}{
		{"payment-service", events.TopicOrderCreated, true},
		{"notification-service", events.TopicPaymentCompleted, true},
		{"payment-service", events.TopicPaymentCompleted, false}, // it writes it, and does not read it
		{"order-service", events.TopicPaymentRefunded, false},
		{testenv.Stranger, events.TopicOrderCreated, false},
	} {
		err := read(c.user, c.topic)
		if c.allowed && err != nil {
			t.Errorf("%s cannot read %s: %v", c.user, c.topic, err)
		}
		if !c.allowed && !errors.Is(err, sarama.ErrTopicAuthorizationFailed) && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			t.Errorf("%s reading %s: %v, want refused", c.user, c.topic, err)
		}
	}
	// Another service's consumer group is not one's own: not even its coordinator is
	// found for it.
	client, err := sarama.NewClient(b.Addrs, as(b, "payment-service"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for g := range services.Order.Groups() {
		if _, err := client.Coordinator(g); !errors.Is(err, sarama.ErrGroupAuthorizationFailed) {
			t.Errorf("payment-service finding order-service's group %s: %v, want GROUP_AUTHORIZATION_FAILED", g, err)
		}
	}
	for g := range services.Payment.Groups() {
		if _, err := client.Coordinator(g); err != nil {
			t.Errorf("payment-service finding its own group %s: %v", g, err)
		}
	}
}

// A service that cannot reach the cluster as configured says why in one line: a CA that
// did not sign the broker's certificate, a principal that may not make its topics.
func TestAServiceThatCannotLogInSaysWhyInOneLine(t *testing.T) {
	b := secureKafka(t)
	db := testenv.Database(t)
	for _, c := range []struct {
		name  string
		env   map[string]string
		wants []string
	}{
		{"wrong CA", map[string]string{"KAFKA_SSL_CA_LOCATION": testenv.NewAuthority(t).File},
			[]string{"KAFKA_BROKERS", "certificate signed by unknown authority"}},
		{"no ACLs", b.ServiceEnv(testenv.Stranger), []string{"KAFKA_BROKERS", "may not create it", "kafka-setup"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"HTTP_ADDR": "127.0.0.1:0", "DATABASE_URL": db, "KAFKA_BROKERS": strings.Join(b.Addrs, ",")}
			for k, v := range authEnv() {
				env[k] = v
			}
			for k, v := range b.ServiceEnv("order-service") {
				env[k] = v
			}
			for k, v := range c.env {
				env[k] = v
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := orderapp.Run(ctx, func(k string) string { return env[k] }, io.Discard, io.Discard)
			if err == nil {
				t.Fatal("order-service started")
			}
			line := err.Error()
			if strings.Contains(line, "\n") {
				t.Errorf("the error is more than one line:\n%s", line)
			}
			for _, want := range c.wants {
				if !strings.Contains(line, want) {
					t.Errorf("the error does not say %q:\n%s", want, line)
				}
			}
		})
	}
}

// readAs reads partition 0 of topic from its start with conf: the broker's refusal, or
// nil once a record comes or none has in 3 s.
func readAs(conf *sarama.Config, brokers []string, topic string) error {
	conf.Consumer.Return.Errors = true
	c, err := sarama.NewConsumer(brokers, conf)
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
	case <-pc.Messages():
		return nil
	case e := <-pc.Errors():
		return e.Err
	case <-time.After(3 * time.Second):
		return nil
	}
}
