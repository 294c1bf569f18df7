package platform

import (
	"fmt"
	"io"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/deadletter"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
)

// Setup is what a service's kafka-setup does: on Brokers, logged in as Security says,
// create Topics (with Partitions each, event topics kept Retention) and the dead-letter
// tool's ledger, and grant each of Grants.
type Setup struct {
	Brokers    []string
	Partitions int
	Retention  time.Duration
	Security   kafka.Security
	Topics     []string
	Grants     []Grant
}

// Grant is what one principal ("User:payment-service") is allowed.
type Grant struct {
	Principal   string
	Permissions []kafka.Permission
}

// ReadSetup reads a service's kafka-setup from its environment: KAFKA_BROKERS,
// KAFKA_TOPIC_PARTITIONS, KAFKA_TOPIC_RETENTION and the KAFKA_* security settings, which must log in as a
// principal allowed to create topics and alter ACLs. It grants KAFKA_SETUP_PRINCIPAL
// (default User:<service>, the SASL username the service itself logs in with) exactly its
// kafka.Permissions; the operators' dead-letter tool, KAFKA_SETUP_OPERATOR (default
// User:dlq), its kafka.OperatorPermissions over the service's dead letters; and a
// read-only viewer, KAFKA_SETUP_VIEWER (default User:kafka-ui, compose's Kafka UI),
// kafka.ViewerPermissions of the service's topics and groups; and the auditor of its dead
// letters, KAFKA_SETUP_AUDITOR (default User:reconciliation-service),
// kafka.AuditorPermissions. "none" grants nobody. It returns the settings it read.
func ReadSetup(svc services.Service, getenv func(string) string) (Setup, []config.Setting, error) {
	service, groups := svc.Name, svc.Groups()
	env := config.NewEnv(getenv)
	s := Setup{
		Brokers:    env.HostPorts("KAFKA_BROKERS", []string{"127.0.0.1:9092"}),
		Partitions: env.Int("KAFKA_TOPIC_PARTITIONS", 6, 1, 1000),
		Retention:  config.TopicRetention(env),
		Security:   config.ReadKafka(env),
	}
	own := kafka.Permissions(service, groups)
	s.Topics = kafka.Topics(own)
	for _, g := range []Grant{
		{env.String("KAFKA_SETUP_PRINCIPAL", "User:"+service), own},
		{env.String("KAFKA_SETUP_OPERATOR", "User:"+kafka.OperatorPrincipal), kafka.OperatorPermissions(groups, deadletter.Ledger)},
		{env.String("KAFKA_SETUP_VIEWER", "User:"+kafka.ViewerPrincipal), kafka.ViewerPermissions(service, groups)},
		{env.String("KAFKA_SETUP_AUDITOR", "User:"+kafka.AuditorPrincipal), kafka.AuditorPermissions(groups, deadletter.Ledger)},
	} {
		if g.Principal != "none" {
			s.Grants = append(s.Grants, g)
		}
	}
	return s, env.Settings(), env.Err()
}

// SetupKafka is a service's `kafka-setup` command (ReadSetup), run once per service by
// the cluster's administrator before the service starts on a cluster with ACLs; it prints
// what it granted.
func SetupKafka(svc services.Service, getenv func(string) string, stdout io.Writer) error {
	service := svc.Name
	s, _, err := ReadSetup(svc, getenv)
	if err != nil {
		return err
	}
	conf := s.Security.Config(service + "-setup")
	if err := kafka.EnsureTopics(s.Brokers, conf, kafka.TopicSpec{Partitions: int32(s.Partitions), Retention: s.Retention}, s.Topics...); err != nil {
		return fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", s.Brokers, err)
	}
	// One partition, as the tool makes it: it reads its ledger whole, in order.
	if err := kafka.EnsureTopics(s.Brokers, conf, kafka.TopicSpec{Partitions: 1}, deadletter.Ledger); err != nil {
		return fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", s.Brokers, err)
	}
	admin, err := sarama.NewClusterAdmin(s.Brokers, conf)
	if err != nil {
		return fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", s.Brokers, err)
	}
	defer admin.Close()
	for _, g := range s.Grants {
		if err := kafka.Grant(admin, g.Principal, g.Permissions); err != nil {
			return err
		}
		for _, p := range g.Permissions {
			fmt.Fprintf(stdout, "%s: granted %s %s\n", service, g.Principal, p)
		}
	}
	return nil
}
