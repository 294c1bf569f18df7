// Package stack runs the whole of orderflow on one machine without Docker: a broker — the
// embedded Kafka-protocol broker kfake persisted on disk, or Apache Kafka itself as a
// process — a PostgreSQL cluster from the machine's binaries, and the three services as
// separate OS processes.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/pgcluster"
)

// Stack is a running local orderflow.
type Stack struct {
	opts      Options
	Broker    *kfake.Cluster      // the embedded broker, when it runs one
	Kafka     *kafkabroker.Broker // Apache Kafka, when it runs that
	Postgres  *pgcluster.Cluster
	Issuer    *issuer.Issuer // whose tokens the services accept
	ownIssuer bool
	services  map[string]*Service
	extra     []*Service // more instances, from AddInstance
	stopRet   context.CancelFunc
	retDone   chan struct{}
}

// Start checks every port, builds the services, starts the broker, PostgreSQL and the
// services, and returns once every service answers /readyz.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	ports := map[string]int{"PG_PORT (PostgreSQL)": o.PGPort}
	if o.Brokers == nil {
		ports["KAFKA_PORT (the broker)"] = o.KafkaPort
	}
	if o.Issuer == nil {
		ports["ISSUER_PORT (the token issuer)"] = o.IssuerPort
	}
	for name, p := range o.HTTPPorts {
		ports[name+" ("+identity(name).PortVar+")"] = p
	}
	for what, p := range ports {
		host := o.Host
		if what == "KAFKA_PORT (the broker)" {
			host = "127.0.0.1"
		}
		if err := portFree(host, p); err != nil {
			return nil, fmt.Errorf("port %d for %s is already in use: stop what holds it or choose another port", p, what)
		}
	}
	bin := o.BinDir
	if bin == "" {
		bin = filepath.Join(o.DataDir, "bin")
	}
	if !o.Prebuilt {
		if err := Build(ctx, o.Root, bin); err != nil {
			return nil, err
		}
	}

	s := &Stack{opts: o, services: map[string]*Service{}}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if s.Issuer = o.Issuer; s.Issuer == nil {
		s.Issuer, err = issuer.Open(filepath.Join(o.DataDir, "issuer"), net.JoinHostPort(o.Host, strconv.Itoa(o.IssuerPort)), Audience)
		if err != nil {
			return nil, err
		}
		s.ownIssuer = true
	}
	if err := s.startBroker(ctx); err != nil {
		return nil, err
	}
	if err := s.setupKafka(ctx, bin); err != nil {
		return nil, err
	}
	s.Postgres, err = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(o.DataDir, "postgres"), Host: o.Host, Port: o.PGPort, Fast: o.FastPostgres, Stats: o.PostgresStats})
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := s.Postgres.CreateDatabases(ctx, services.Databases()...); err != nil {
		return nil, err
	}
	for _, name := range Services { // one role per service, owning its database alone
		if err := s.Postgres.OwnDatabase(ctx, name, identity(name).Database); err != nil {
			return nil, err
		}
	}
	// reconciliation-service reads the simulator's ledger as it would a provider's list API:
	// through provider_reader, which may connect to payments and, by the simulator's
	// schema, read its ledger table alone.
	if err := s.Postgres.ProviderReader(ctx, services.Payment.Database, services.Reconciliation.Name); err != nil {
		return nil, err
	}

	for _, name := range Services {
		env := []string{
			"HTTP_ADDR=" + net.JoinHostPort(o.Host, strconv.Itoa(o.HTTPPorts[name])),
			"DATABASE_URL=" + s.Postgres.URLAs(name, identity(name).Database),
			"KAFKA_BROKERS=" + s.KafkaAddr(),
			"KAFKA_TOPIC_PARTITIONS=" + strconv.Itoa(o.Partitions),
			"AUTH_ISSUER=" + s.Issuer.URL,
			"AUTH_JWKS_URL=" + s.Issuer.JWKSURL(),
			"AUTH_AUDIENCE=" + s.Issuer.Audience,
		}
		if name == services.Reconciliation.Name {
			env = append(env, "PROVIDER_LEDGER_URL="+s.Postgres.URLAs(name, services.Payment.Database))
		}
		for k, v := range s.kafkaEnv(name) {
			env = append(env, k+"="+v)
		}
		for k, v := range o.Env {
			env = append(env, k+"="+v)
		}
		for k, v := range o.ServiceEnv[name] {
			env = append(env, k+"="+v)
		}
		s.services[name] = &Service{Name: name, URL: "http://" + net.JoinHostPort(o.Host, strconv.Itoa(o.HTTPPorts[name])),
			bin: filepath.Join(bin, name), env: env, log: o.Log}
	}
	for _, name := range Services {
		if err := s.services[name].Start(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Stack) startBroker(ctx context.Context) error {
	o := s.opts
	switch {
	case o.Brokers != nil:
		return nil
	case o.Broker == BrokerKafka:
		libs, err := kafkabroker.Libs(ctx, o.Root)
		if err != nil {
			return err
		}
		if !o.KafkaPlaintext {
			dir := filepath.Join(o.DataDir, "apache-kafka")
			if s.opts.KafkaSecure, err = kafkabroker.NewSecure(dir, append(slices.Clone(Services), kafka.OperatorPrincipal)...); err != nil {
				return fmt.Errorf("kafka: %w", err)
			}
			if _, err := s.opts.KafkaSecure.ClientProperties(kafkabroker.Admin, filepath.Join(dir, "admin.properties")); err != nil {
				return fmt.Errorf("kafka: %w", err)
			}
			if err := s.opts.KafkaSecure.WriteEnv(kafka.OperatorPrincipal, s.KafkaAddr(), filepath.Join(dir, "dlq.env")); err != nil {
				return fmt.Errorf("kafka: %w", err)
			}
		}
		s.Kafka, err = kafkabroker.Start(ctx, kafkabroker.Options{
			Dir: filepath.Join(o.DataDir, "apache-kafka", "broker"), Libs: libs, Port: o.KafkaPort, Partitions: o.Partitions,
			Listeners: o.KafkaListeners, Secure: s.opts.KafkaSecure,
			Config: o.retention(),
		})
		return err
	case o.Broker != BrokerKfake:
		return fmt.Errorf("unknown broker %q: want %s or %s", o.Broker, BrokerKfake, BrokerKafka)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(o.KafkaPort),
		kfake.DataDir(filepath.Join(o.DataDir, "kafka")),
		kfake.BrokerConfigs(o.retention()),
	)
	if err != nil {
		return fmt.Errorf("kafka broker: %w", err)
	}
	s.Broker = c
	ctx, cancel := context.WithCancel(context.Background())
	s.stopRet, s.retDone = cancel, make(chan struct{})
	go func() { // the broker applies retention only when asked
		defer close(s.retDone)
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.ApplyRetention()
			}
		}
	}()
	return nil
}

// setupKafka runs each service's kafka-setup as the broker's Admin when the broker is
// secure: the topics made, each service granted what it may do, and nothing more.
func (s *Stack) setupKafka(ctx context.Context, bin string) error {
	sec := s.opts.KafkaSecure
	if sec == nil {
		return nil
	}
	for _, name := range Services {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), "kafka-setup")
		cmd.Env = append(os.Environ(), "KAFKA_BROKERS="+s.KafkaAddr(), "KAFKA_TOPIC_PARTITIONS="+strconv.Itoa(s.opts.Partitions))
		for k, v := range sec.Env(kafkabroker.Admin) {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s kafka-setup: %w\n%s", name, err, out)
		}
	}
	return nil
}

// kafkaEnv is how service logs in to the broker: its own principal when the broker is
// secure, nothing to say when it is open.
func (s *Stack) kafkaEnv(service string) map[string]string {
	if s.opts.KafkaSecure == nil {
		return nil
	}
	return s.opts.KafkaSecure.Env(service)
}

// KafkaSecurity is how the stack's own clients (a test's, an operator's tool) reach the
// broker: as kafkabroker.Admin on a secure broker, PLAINTEXT on an open one.
func (s *Stack) KafkaSecurity() kafka.Security {
	if s.opts.KafkaSecure == nil {
		return kafka.Security{Protocol: kafka.Plaintext}
	}
	return s.opts.KafkaSecure.Client(kafkabroker.Admin)
}

// KafkaAddr is the broker's host:port (ours listen on 127.0.0.1), or the Brokers given, comma-separated.
func (s *Stack) KafkaAddr() string {
	if s.opts.Brokers != nil {
		return strings.Join(s.opts.Brokers, ",")
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.opts.KafkaPort))
}

// BrokerName says which broker the stack runs on: kfake, Apache Kafka (and where its log
// is), or the one it was given.
func (s *Stack) BrokerName() string {
	switch {
	case s.opts.Brokers != nil:
		return "the broker at " + s.KafkaAddr()
	case s.Kafka != nil && s.opts.KafkaSecure != nil:
		dir := filepath.Join(s.opts.DataDir, "apache-kafka")
		return "Apache Kafka, SASL_SSL with SCRAM-SHA-512 and ACLs: Kafka's tools log in with --command-config " +
			filepath.Join(dir, "admin.properties") + ", make dlq with KAFKA_ENV=" + filepath.Join(dir, "dlq.env") +
			"; its log " + filepath.Join(s.Kafka.Dir(), "server.log")
	case s.Kafka != nil:
		return "Apache Kafka, PLAINTEXT, open (log in " + filepath.Join(s.Kafka.Dir(), "server.log") + ")"
	}
	return "kfake, embedded, PLAINTEXT and open to anyone on the loopback"
}

// RebuildReconciliation is make reconcile-rebuild: it stops reconciliation-service, runs
// its rebuild (its read model dropped and rebuilt by replaying the topics), and starts it
// again, whatever the rebuild's outcome; out gets the rebuild's account.
func (s *Stack) RebuildReconciliation(ctx context.Context, out io.Writer) error {
	sv := s.Service(services.Reconciliation.Name)
	if err := sv.Stop(); err != nil {
		return err
	}
	err := sv.Run(ctx, out, "rebuild")
	if serr := sv.Start(ctx); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// Service returns a service by name.
func (s *Stack) Service(name string) *Service { return s.services[name] }

// Partitions is how many partitions each of the stack's topics has.
func (s *Stack) Partitions() int { return s.opts.Partitions }

// DataDir is where the broker and PostgreSQL keep their data.
func (s *Stack) DataDir() string { return s.opts.DataDir }

// AddInstance starts one more process of service name, with the same settings but its
// own HTTP port: another member of the same consumer groups, on the same database, as a
// scaled-out deployment runs. Its log lines are prefixed name#2, name#3…
func (s *Stack) AddInstance(ctx context.Context, name string, httpPort int) (*Service, error) {
	first := s.services[name]
	if first == nil {
		return nil, fmt.Errorf("no service %q", name)
	}
	first.mu.Lock()
	env := append([]string(nil), first.env...)
	first.mu.Unlock()
	addr := net.JoinHostPort(s.opts.Host, strconv.Itoa(httpPort))
	sv := &Service{Name: fmt.Sprintf("%s#%d", name, len(s.extra)+2), URL: "http://" + addr,
		bin: first.bin, env: append(env, "HTTP_ADDR="+addr), log: s.opts.Log}
	s.extra = append(s.extra, sv)
	return sv, sv.Start(ctx)
}

// Stop stops the services gracefully, then the broker and PostgreSQL.
func (s *Stack) Stop() {
	var wg sync.WaitGroup
	for _, sv := range s.services {
		wg.Go(func() { _ = sv.Stop() })
	}
	for _, sv := range s.extra {
		wg.Go(func() { _ = sv.Stop() })
	}
	wg.Wait()
	if s.Broker != nil {
		s.stopRet()
		<-s.retDone
		s.Broker.Close()
	}
	if s.Kafka != nil {
		_ = s.Kafka.Stop()
	}
	if s.Postgres != nil {
		s.Postgres.Stop()
	}
	if s.ownIssuer {
		_ = s.Issuer.Close()
	}
}
