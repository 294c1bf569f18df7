package platform

import (
	"fmt"
	"io"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/kafka"
)

// SetupKafka is a service's `kafka-setup` command, run once per service by the cluster's
// administrator before the service starts on a cluster with ACLs: it creates the topics
// the service uses (kafka.Permissions: those it writes, reads, and its dead-letter
// topics), then grants the service's principal exactly its permissions, and prints them.
// It reads KAFKA_BROKERS, KAFKA_TOPIC_PARTITIONS and the KAFKA_* security settings, which
// must log in as a principal allowed to create topics and alter ACLs; the principal
// granted is KAFKA_SETUP_PRINCIPAL (default User:<service>, the SASL username
// KAFKA_SASL_USERNAME the service itself logs in with).
func SetupKafka(service string, groups map[string][]string, getenv func(string) string, stdout io.Writer) error {
	env := config.NewEnv(getenv)
	brokers := env.HostPorts("KAFKA_BROKERS", []string{"127.0.0.1:9092"})
	partitions := env.Int("KAFKA_TOPIC_PARTITIONS", 6, 1, 1000)
	sec := config.ReadKafka(env)
	principal := env.String("KAFKA_SETUP_PRINCIPAL", "User:"+service)
	if err := env.Err(); err != nil {
		return err
	}
	ps := kafka.Permissions(service, groups)
	conf := sec.Config(service + "-setup")
	if err := kafka.EnsureTopics(brokers, conf, int32(partitions), kafka.Topics(ps)...); err != nil {
		return fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", brokers, err)
	}
	admin, err := sarama.NewClusterAdmin(brokers, conf)
	if err != nil {
		return fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", brokers, err)
	}
	defer admin.Close()
	if err := kafka.Grant(admin, principal, ps); err != nil {
		return err
	}
	for _, p := range ps {
		fmt.Fprintf(stdout, "%s: granted %s %s\n", service, principal, p)
	}
	return nil
}
