// Package stack runs the whole of orderflow on one machine without Docker: a broker — the
// embedded Kafka-protocol broker kfake persisted on disk, or Apache Kafka itself as a
// process — a PostgreSQL cluster from the machine's binaries, and the three services as
// separate OS processes.
package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/pgcluster"
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

// FromEnv returns options read from BROKER, ORDERFLOW_DATA_DIR, KAFKA_PORT, PG_PORT,
// ISSUER_PORT, ORDER_PORT, PAYMENT_PORT and NOTIFICATION_PORT, with the defaults for what
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
			Config: map[string]string{
				"log.retention.ms":    strconv.FormatInt(o.Retention.Milliseconds(), 10),
				"log.retention.bytes": strconv.FormatInt(o.RetentionBytes, 10),
			},
		})
		return err
	case o.Broker != BrokerKfake:
		return fmt.Errorf("unknown broker %q: want %s or %s", o.Broker, BrokerKfake, BrokerKafka)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(o.KafkaPort),
		kfake.DataDir(filepath.Join(o.DataDir, "kafka")),
		kfake.BrokerConfigs(map[string]string{
			"log.retention.ms":    strconv.FormatInt(o.Retention.Milliseconds(), 10),
			"log.retention.bytes": strconv.FormatInt(o.RetentionBytes, 10),
		}),
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

// Service returns a service by name.
func (s *Stack) Service(name string) *Service { return s.services[name] }

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

// Audience is the audience of the local stack's tokens.
const Audience = "orderflow"

// Token mints a token the services accept: for sub, with scopes, valid for ttl.
func (s *Stack) Token(sub string, scopes []string, ttl time.Duration) (string, error) {
	return s.Issuer.Mint(sub, scopes, ttl)
}

// DemoTokens are the tokens WriteTokens writes, by file name: the demo customer, a
// second customer and an operator.
var DemoTokens = []struct {
	File, Subject string
	Scopes        []string
}{
	{"customer.jwt", issuer.Customer, []string{auth.ScopeCustomer}},
	{"customer2.jwt", issuer.Customer2, []string{auth.ScopeCustomer}},
	{"operator.jwt", issuer.Operator, []string{auth.ScopeOperator}},
}

// WriteTokens writes a fresh token of each of DemoTokens, valid for ttl, into dir.
func (s *Stack) WriteTokens(dir string, ttl time.Duration) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range DemoTokens {
		tok, err := s.Token(d.Subject, d.Scopes, ttl)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, d.File), []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Build compiles the three services into bin, with the build tags tags, if any.
func Build(ctx context.Context, root, bin string, tags ...string) error {
	for _, name := range Services {
		cmd := exec.CommandContext(ctx, "go", "build", "-tags="+strings.Join(tags, ","), "-o", filepath.Join(bin, name), "./"+name)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", name, err, out)
		}
	}
	return nil
}

// Service is one service process.
type Service struct {
	Name string
	URL  string
	bin  string
	env  []string
	log  io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

// Start runs the service and waits until it answers /readyz.
func (sv *Service) Start(ctx context.Context) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd != nil {
		return fmt.Errorf("%s is already running", sv.Name)
	}
	cmd := exec.Command(sv.bin)
	cmd.Env = append(os.Environ(), sv.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", sv.Name, err)
	}
	go prefix(sv.log, sv.Name, pr)
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		done <- err
	}()
	sv.cmd, sv.done = cmd, done

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-done:
			sv.cmd = nil
			return fmt.Errorf("%s exited at start (%v): see its log above", sv.Name, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := http.Get(sv.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 60s", sv.Name)
		}
	}
}

// PID is the service's process id, or 0 when it is not running.
func (sv *Service) PID() int {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd == nil {
		return 0
	}
	return sv.cmd.Process.Pid
}

// Setenv changes a setting for the service's next start.
func (sv *Service) Setenv(key, value string) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.env = append(sv.env, key+"="+value) // the last one wins
}

// Stop asks the service to shut down gracefully (SIGTERM) and waits for it.
func (sv *Service) Stop() error { return sv.signal(syscall.SIGTERM) }

// Kill ends the service at once (SIGKILL), as a crash would.
func (sv *Service) Kill() error { return sv.signal(syscall.SIGKILL) }

// Signal sends sig to the running service and returns at once (payment-service's
// simulated provider hangs on SIGUSR1 until SIGUSR2).
func (sv *Service) Signal(sig syscall.Signal) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd == nil {
		return errors.New(sv.Name + " is not running")
	}
	return sv.cmd.Process.Signal(sig)
}

func (sv *Service) signal(sig syscall.Signal) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd == nil {
		return nil
	}
	_ = sv.cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-sv.done:
	case <-time.After(30 * time.Second):
		_ = sv.cmd.Process.Kill()
		err = <-sv.done
	}
	sv.cmd = nil
	if sig == syscall.SIGKILL {
		return nil
	}
	return err
}

// prefix copies r to w line by line, each line prefixed with the service name.
func prefix(w io.Writer, name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(w, "%-20s | %s\n", name, sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}

func portFree(host string, port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return ln.Close()
}
