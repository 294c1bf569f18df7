package stack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/kafkabroker"
)

// The brokers a stack can run.
const (
	BrokerKfake = "kfake" // embedded, in this process: starts at once
	BrokerKafka = "kafka" // Apache Kafka, the broker users run, as a JVM process
)

// Services are the services' names, in start order (services.Names).
var Services = services.Names()

// Options says where everything lives and listens. Zero values take the defaults.
type Options struct {
	Root      string // the repository (holds go.work); default: found from the working folder
	DataDir   string // default Root/.data
	Host      string // default 127.0.0.1
	KafkaPort int    // default 9092
	// Broker is the broker to start: BrokerKfake (the default) or BrokerKafka.
	Broker string
	// Brokers, when set, is a running broker to use instead of starting one.
	Brokers []string
	// KafkaListeners are more client listeners of Apache Kafka (BrokerKafka only).
	KafkaListeners []kafkabroker.Listener
	// KafkaSecure is how to log in to Brokers when that broker wants it: the stack sets it
	// up for each service (kafka-setup as kafkabroker.Admin) and runs each as its own
	// principal. The Apache Kafka the stack starts is secure unless KafkaPlaintext.
	KafkaSecure    *kafkabroker.Secure
	KafkaPlaintext bool
	PGPort         int // default 55432
	// IssuerPort is where the development token issuer listens; default 8090.
	IssuerPort int
	// Issuer, when set, is a running issuer to trust instead of starting one.
	Issuer     *issuer.Issuer
	HTTPPorts  map[string]int
	Partitions int               // default 6
	Env        map[string]string // extra settings for every service (e.g. SMTP_ADDR)
	ServiceEnv map[string]map[string]string
	Log        io.Writer // the services' logs, each line prefixed; default os.Stdout
	// Retention bounds what the broker keeps per partition; default 24h and 256 MiB.
	Retention      time.Duration
	RetentionBytes int64
	// BinDir holds the service binaries; default DataDir/bin. Prebuilt skips the build.
	BinDir   string
	Prebuilt bool
	// FastPostgres turns fsync off: for throwaway test stacks only.
	FastPostgres bool
	// PostgresStats loads pg_stat_statements (pgcluster.Options.Stats): for the bench.
	PostgresStats bool
}

// identity is the service called name, one of Services.
func identity(name string) services.Service {
	s, _ := services.Named(name)
	return s
}

// FromEnv returns options read from BROKER, ORDERFLOW_DATA_DIR, KAFKA_PORT, PG_PORT,
// ISSUER_PORT and each service's port (ORDER_PORT, PAYMENT_PORT, NOTIFICATION_PORT,
// RECONCILIATION_PORT: its PortVar), with the defaults for what
// is unset.
func FromEnv(getenv func(string) string) (Options, error) {
	o := Options{DataDir: getenv("ORDERFLOW_DATA_DIR"), HTTPPorts: map[string]int{}, Broker: getenv("BROKER")}
	var errs []error
	switch o.Broker {
	case "", BrokerKfake, BrokerKafka:
	default:
		errs = append(errs, fmt.Errorf("BROKER: want %s (embedded, the default) or %s (Apache Kafka), got %q", BrokerKfake, BrokerKafka, o.Broker))
	}
	port := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("%s: want a port from 1 to 65535, got %q", name, v))
		}
		return n
	}
	o.KafkaPort = port("KAFKA_PORT", 9092)
	o.PGPort = port("PG_PORT", 55432)
	o.IssuerPort = port("ISSUER_PORT", 8090)
	for _, name := range Services {
		o.HTTPPorts[name] = port(identity(name).PortVar, identity(name).Port)
	}
	return o, errors.Join(errs...)
}

func (o *Options) defaults() error {
	if o.Root == "" {
		root, err := FindRoot()
		if err != nil {
			return err
		}
		o.Root = root
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(o.Root, ".data")
	}
	abs, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	o.DataDir = abs
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.KafkaPort == 0 {
		o.KafkaPort = 9092
	}
	if o.Broker == "" {
		o.Broker = BrokerKfake
	}
	if o.PGPort == 0 {
		o.PGPort = 55432
	}
	if o.IssuerPort == 0 {
		o.IssuerPort = 8090
	}
	if o.HTTPPorts == nil {
		o.HTTPPorts = map[string]int{}
	}
	for _, svc := range services.All() {
		if o.HTTPPorts[svc.Name] == 0 {
			o.HTTPPorts[svc.Name] = svc.Port
		}
	}
	if o.Partitions == 0 {
		o.Partitions = 6
	}
	if o.Log == nil {
		o.Log = os.Stdout
	}
	if o.Retention == 0 {
		o.Retention = 24 * time.Hour
	}
	if o.RetentionBytes == 0 {
		o.RetentionBytes = 256 << 20
	}
	return nil
}

// FindRoot walks up from the working folder to the one holding go.work.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the orderflow repository (no go.work found above the working folder)")
		}
		dir = parent
	}
}

// retention is the broker's settings for Retention and RetentionBytes.
func (o Options) retention() map[string]string {
	return map[string]string{
		"log.retention.ms":    strconv.FormatInt(o.Retention.Milliseconds(), 10),
		"log.retention.bytes": strconv.FormatInt(o.RetentionBytes, 10),
	}
}
