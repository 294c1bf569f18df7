package platform

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A service boots against a cluster that wants SASL_SSL, with its settings: its topics are
// made, its clients connect, its producer writes and its readiness ping answers. (What a
// cluster refuses is common-events/kafka's TestSecurityReachesClustersThatWantIt.)
func TestBootReachesAClusterThatWantsSASLAndTLS(t *testing.T) {
	ca := testenv.NewAuthority(t)
	server, _, _ := ca.Issue("broker", x509.ExtKeyUsageServerAuth)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{server}}),
		kfake.EnableSASL(), kfake.Superuser(kafka.MechanismSCRAMSHA256, "payment-service", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	db := testenv.Database(t)
	env := config.NewEnv(func(k string) string {
		return map[string]string{
			"HTTP_ADDR": "127.0.0.1:0", "DATABASE_URL": db, "KAFKA_BROKERS": c.ListenAddrs()[0],
			"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "payment-service",
			"KAFKA_SASL_PASSWORD": "s3cret", "KAFKA_SSL_CA_LOCATION": ca.File,
			"AUTH_ISSUER": "http://issuer.test", "AUTH_JWKS_URL": "http://issuer.test/jwks.json",
		}[k]
	})
	cfg := config.ReadBase(env, services.Payment)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	s, err := Boot(context.Background(), services.Payment, cfg, io.Discard, migrations.Payments)
	if err != nil {
		t.Fatalf("boot over SASL_SSL: %v", err)
	}
	defer s.Close()
	if _, _, err := s.Producer.SendMessage(&sarama.ProducerMessage{Topic: events.TopicOrderCreated, Value: sarama.StringEncoder("x")}); err != nil {
		t.Errorf("produce over SASL_SSL: %v", err)
	}
	if err := kafka.Ping(context.Background(), s.Kafka); err != nil {
		t.Errorf("readiness ping over SASL_SSL: %v", err)
	}
	if _, err := s.Consumer(map[string]consumer.Handler{events.TopicOrderCreated: nil, events.TopicOrderCancelled: nil}); err != nil {
		t.Errorf("a consumer's client over SASL_SSL: %v", err)
	}
}

// A group that lingers has its fetches wait too, up to its linger (1 ms at least, which
// sarama asks), for fetchMin bytes; a group that does not keeps sarama's and Kafka's
// defaults: answered with the first byte.
func TestALingeringGroupsFetchesWaitForBytes(t *testing.T) {
	brokers := testenv.Kafka(t).Addrs
	for _, linger := range []time.Duration{0, 80 * time.Millisecond, 500 * time.Microsecond} {
		env := config.NewEnv(func(k string) string {
			return map[string]string{
				"HTTP_ADDR": "127.0.0.1:0", "DATABASE_URL": testenv.Database(t), "KAFKA_BROKERS": brokers[0],
				"CONSUMER_LINGER": linger.String(), "AUTH_ISSUER": "http://issuer.test", "AUTH_JWKS_URL": "http://issuer.test/jwks.json",
			}[k]
		})
		cfg := config.ReadBase(env, services.Notification)
		if err := env.Err(); err != nil {
			t.Fatal(err)
		}
		s, err := Boot(context.Background(), services.Notification, cfg, io.Discard, migrations.Notifications)
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Consumer(map[string]consumer.Handler{events.TopicPaymentCompleted: nil, events.TopicPaymentFailed: nil,
			events.TopicOrderCancelled: nil, events.TopicPaymentRefunded: nil})
		if err != nil {
			t.Fatal(err)
		}
		got := r.Client.Config().Consumer
		wantMin, wantWait := int32(1), sarama.NewConfig().Consumer.MaxWaitTime
		if linger > 0 {
			wantMin, wantWait = fetchMin, max(linger, time.Millisecond) // sarama refuses less
		}
		if r.Linger != linger || got.Fetch.Min != wantMin || got.MaxWaitTime != wantWait {
			t.Errorf("CONSUMER_LINGER=%s: the runner lingers %s, its fetches wait for %d bytes up to %s; want %s, %d bytes, %s",
				linger, r.Linger, got.Fetch.Min, got.MaxWaitTime, linger, wantMin, wantWait)
		}
		s.Close()
	}
}
