package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/stack"
)

// The brokers tests can run on (TEST_BROKER).
const (
	Kfake       = "kfake" // the default: an in-process kfake per test
	ApacheKafka = "kafka" // Apache Kafka, one JVM per test binary, emptied for each test
)

// BrokerKind is the broker the tests run on, from TEST_BROKER; a value it does not know
// fails the tests that ask for a broker (checkBrokerKind), rather than run on kfake.
func BrokerKind() string {
	if os.Getenv("TEST_BROKER") == ApacheKafka {
		return ApacheKafka
	}
	return Kfake
}

func checkBrokerKind(t testing.TB) {
	t.Helper()
	switch v := os.Getenv("TEST_BROKER"); v {
	case "", Kfake, ApacheKafka:
	default:
		t.Fatalf("testenv: TEST_BROKER=%q: want %s (the default) or %s", v, Kfake, ApacheKafka)
	}
}

// Broker is a Kafka-protocol broker for one test.
type Broker struct {
	Addrs []string
	// Cluster is the in-process kfake broker; nil on Apache Kafka or KAFKA_BROKERS.
	Cluster *kfake.Cluster
	// Kafka is the Apache Kafka process; nil on kfake or KAFKA_BROKERS.
	Kafka *kafkabroker.Broker
	// Secure is how to log in to Kafka, which lets in only its principals (Principals) and
	// allows them only what ACLs grant; nil on kfake or KAFKA_BROKERS, open to anyone.
	Secure *kafkabroker.Secure

	t        testing.TB
	kfakeDir string // where a restartable kfake keeps its data
	port     int
}

// Kafka returns a broker for this test: a new in-process kfake, closed when the test ends;
// with TEST_BROKER=kafka the test binary's Apache Kafka, emptied of every topic and
// consumer group so that no test sees another's records or offsets; KAFKA_BROKERS when set.
func Kafka(t testing.TB, opts ...kfake.Opt) Broker {
	t.Helper()
	checkBrokerKind(t)
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return Broker{Addrs: strings.Split(b, ","), t: t}
	}
	if BrokerKind() == ApacheKafka {
		k := sharedKafka(t)
		empty(t, k.Addr())
		return Broker{Addrs: []string{k.Addr()}, Kafka: k, Secure: shared.secure, t: t}
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return Broker{Addrs: c.ListenAddrs(), Cluster: c, t: t}
}

// RestartableKafka is Kafka for a test that takes the broker away and brings it back
// (Stop, Start) on the same address with its data: a kfake that keeps its data on disk, or
// the Apache Kafka process itself. Skipped on KAFKA_BROKERS, which it cannot stop.
func RestartableKafka(t testing.TB) *Broker {
	t.Helper()
	checkBrokerKind(t)
	if os.Getenv("KAFKA_BROKERS") != "" {
		t.Skip("testenv: stops and restarts the broker, which KAFKA_BROKERS does not allow")
	}
	if BrokerKind() == ApacheKafka {
		b := Kafka(t)
		t.Cleanup(func() { // leave it running for the next test
			if b.Kafka.PID() == 0 {
				b.Start()
			}
		})
		return &b
	}
	b := &Broker{t: t, kfakeDir: t.TempDir(), port: FreePort(t)}
	b.Addrs = []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))}
	b.Start()
	t.Cleanup(func() {
		if b.Cluster != nil {
			b.Cluster.Close()
		}
	})
	return b
}

// Stop takes a RestartableKafka broker away: its clients see connections refused.
func (b *Broker) Stop() {
	b.t.Helper()
	switch {
	case b.Kafka != nil:
		if err := b.Kafka.Stop(); err != nil {
			b.t.Fatalf("testenv: stop Apache Kafka: %v", err)
		}
	case b.Cluster != nil:
		b.Cluster.Close()
		b.Cluster = nil
	}
}

// Start brings a RestartableKafka broker back, with the records it had.
func (b *Broker) Start() {
	b.t.Helper()
	if b.Kafka != nil {
		if err := b.Kafka.Start(context.Background()); err != nil {
			b.t.Fatalf("testenv: start Apache Kafka: %v", err)
		}
		return
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(b.port), kfake.DataDir(b.kfakeDir),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		b.t.Fatalf("testenv: kfake: %v", err)
	}
	b.Cluster = c
}

var shared struct {
	once   sync.Once
	dir    string
	b      *kafkabroker.Broker
	secure *kafkabroker.Secure
	err    error
}

// Principals are the logins of the tests' Apache Kafka besides kafkabroker.Admin: one per
// service, the operators' dead-letter tool, and Stranger, who may log in and do nothing else.
var Principals = append(services.Names(), kafka.OperatorPrincipal, Stranger)

// Stranger is a principal of the tests' Apache Kafka that no ACL names.
const Stranger = "stranger"

// KafkaConfig is the client configuration of a test's own clients (its raw producers and
// consumers, its admin): kafka.Config(clientID), logged in as kafkabroker.Admin to the
// tests' Apache Kafka when it runs.
func KafkaConfig(clientID string) *sarama.Config { return LogIn(kafka.Config(clientID)) }

// LogIn makes c log in as kafkabroker.Admin to the tests' Apache Kafka when it runs
// (Secure), and returns it; on kfake it changes nothing.
func LogIn(c *sarama.Config) *sarama.Config {
	if shared.secure != nil {
		shared.secure.Client(kafkabroker.Admin).Apply(c)
	}
	return c
}

// ServiceEnv is how service logs in to the broker (KAFKA_SECURITY_PROTOCOL and the
// rest), after SetUp granted it its ACLs; nothing on an open broker.
func (b Broker) ServiceEnv(service string) map[string]string {
	if b.Secure == nil {
		return nil
	}
	return b.Secure.Env(service)
}

// ConfigAs is kafka.Config(clientID) logged in as user (a principal of Principals) to
// the tests' Apache Kafka; on an open broker, kafka.Config(clientID).
func (b Broker) ConfigAs(user, clientID string) *sarama.Config {
	if b.Secure == nil {
		return kafka.Config(clientID)
	}
	return b.Secure.Client(user).Config(clientID)
}

// AdminEnv is the KAFKA_* settings that log in as kafkabroker.Admin: what a service's
// kafka-setup runs with. Nothing on an open broker.
func (b Broker) AdminEnv() map[string]string { return b.ServiceEnv(kafkabroker.Admin) }

// sharedKafka starts the test binary's Apache Kafka on first use.
func sharedKafka(t testing.TB) *kafkabroker.Broker {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		root, err := stack.FindRoot()
		if err != nil {
			shared.err = err
			return
		}
		libs, err := kafkabroker.Libs(ctx, root)
		if err != nil {
			shared.err = err
			return
		}
		if shared.dir, err = os.MkdirTemp("", "orderflow-kafka-"); err != nil {
			shared.err = err
			return
		}
		if shared.secure, shared.err = kafkabroker.NewSecure(shared.dir, Principals...); shared.err != nil {
			return
		}
		shared.b, shared.err = kafkabroker.Start(ctx, kafkabroker.Options{Dir: filepath.Join(shared.dir, "broker"), Libs: libs, Partitions: 3, Secure: shared.secure})
	})
	if shared.err != nil {
		t.Fatalf("testenv: Apache Kafka: %v", shared.err)
	}
	return shared.b
}

func stopSharedKafka() {
	if shared.b != nil {
		_ = shared.b.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// empty deletes every topic and consumer group of the broker at addr (Kafka's internal
// topics excepted) and waits until they are gone, so a test starts on an empty broker.
func empty(t testing.TB, addr string) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin([]string{addr}, saramaConfig())
	if err != nil {
		t.Fatalf("testenv: admin: %v", err)
	}
	defer admin.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []string
		groups, err := admin.ListConsumerGroups()
		if err == nil {
			for g := range groups {
				if err := admin.DeleteConsumerGroup(g); err != nil {
					left = append(left, "group "+g+": "+err.Error())
				}
			}
		}
		topics, err2 := admin.ListTopics()
		if err2 == nil {
			for name := range topics {
				if strings.HasPrefix(name, "__") {
					continue
				}
				left = append(left, "topic "+name)
				if err := admin.DeleteTopic(name); err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
					left = append(left, fmt.Sprintf("delete %s: %v", name, err))
				}
			}
		}
		if err == nil && err2 == nil && len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: Apache Kafka not emptied after 30s: %v %v %v", left, err, err2)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Parallel lets t run beside the package's other parallel tests when each test has a broker
// of its own (kfake). On Apache Kafka or KAFKA_BROKERS the tests share one broker, which
// Kafka (the function) empties for each test, so they run one at a time.
func Parallel(t *testing.T) {
	t.Helper()
	if BrokerKind() == Kfake && os.Getenv("KAFKA_BROKERS") == "" {
		t.Parallel()
	}
}
