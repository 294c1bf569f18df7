package kafka_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/testenv"
)

func cluster(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append(opts, kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// roundTrip produces a record with s and reads it back, as a service's clients do.
func roundTrip(brokers []string, s kafka.Security) error {
	conf := s.Config("security-test")
	conf.Metadata.Retry.Max = 0
	p, err := sarama.NewSyncProducer(brokers, conf)
	if err != nil {
		return err
	}
	defer p.Close()
	_, offset, err := p.SendMessage(&sarama.ProducerMessage{Topic: "t", Value: sarama.StringEncoder("hello")})
	if err != nil {
		return err
	}
	c, err := sarama.NewConsumer(brokers, conf)
	if err != nil {
		return err
	}
	defer c.Close()
	pc, err := c.ConsumePartition("t", 0, offset)
	if err != nil {
		return err
	}
	defer pc.Close()
	select {
	case m := <-pc.Messages():
		if string(m.Value) != "hello" {
			return os.ErrInvalid
		}
		return nil
	case <-time.After(10 * time.Second):
		return os.ErrDeadlineExceeded
	}
}

// Each protocol and mechanism reaches a cluster that wants it, and what the cluster
// does not accept — no credentials, the wrong password, a CA that did not sign its
// certificate, no client certificate where one is required — is refused.
func TestSecurityReachesClustersThatWantIt(t *testing.T) {
	ca := testenv.NewAuthority(t)
	server, _, _ := ca.Issue("broker", x509.ExtKeyUsageServerAuth)
	_, clientCert, clientKey := ca.Issue("payment-service", x509.ExtKeyUsageClientAuth)
	mutual := cluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}))
	saslSSL := cluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{server}}), kfake.EnableSASL(),
		kfake.Superuser(kafka.MechanismSCRAMSHA512, "orders", "s3cret"), kfake.Superuser(kafka.MechanismPlain, "cloud-key", "cloud-secret"))
	saslPlain := cluster(t, kfake.EnableSASL(), kfake.Superuser(kafka.MechanismSCRAMSHA256, "orders", "s3cret"))

	trusted, err := kafka.TLSConfig(ca.File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := kafka.TLSConfig(ca.File, clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := kafka.TLSConfig(testenv.NewAuthority(t).File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		brokers []string
		s       kafka.Security
		ok      bool
	}{
		{"SSL with a client certificate", mutual, kafka.Security{Protocol: kafka.SSL, TLS: withCert}, true},
		{"SSL without the client certificate it requires", mutual, kafka.Security{Protocol: kafka.SSL, TLS: trusted}, false},
		{"SASL_SSL with SCRAM-SHA-512", saslSSL, kafka.Security{Protocol: kafka.SASLSSL, Mechanism: kafka.MechanismSCRAMSHA512, Username: "orders", Password: "s3cret", TLS: trusted}, true},
		{"SASL_SSL with PLAIN (Confluent Cloud's)", saslSSL, kafka.Security{Protocol: kafka.SASLSSL, Mechanism: kafka.MechanismPlain, Username: "cloud-key", Password: "cloud-secret", TLS: trusted}, true},
		{"SASL_SSL with the wrong password", saslSSL, kafka.Security{Protocol: kafka.SASLSSL, Mechanism: kafka.MechanismSCRAMSHA512, Username: "orders", Password: "guess", TLS: trusted}, false},
		{"SASL_SSL trusting another CA", saslSSL, kafka.Security{Protocol: kafka.SASLSSL, Mechanism: kafka.MechanismSCRAMSHA512, Username: "orders", Password: "s3cret", TLS: untrusted}, false},
		{"PLAINTEXT to a TLS listener", saslSSL, kafka.Security{}, false},
		{"SASL_PLAINTEXT with SCRAM-SHA-256", saslPlain, kafka.Security{Protocol: kafka.SASLPlaintext, Mechanism: kafka.MechanismSCRAMSHA256, Username: "orders", Password: "s3cret"}, true},
		{"PLAINTEXT where SASL is wanted", saslPlain, kafka.Security{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := roundTrip(tc.brokers, tc.s)
			if tc.ok != (err == nil) {
				t.Errorf("round trip: %v, want success %v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Logf("refused: %v", err)
			}
		})
	}
}
