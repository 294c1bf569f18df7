// Package kafkabroker runs Apache Kafka itself as a process: one node in KRaft mode,
// broker and controller, from the jars scripts/ensure-kafka.sh fetches at the version
// docker-compose.yml runs. It formats the storage on first use, keeps the broker's log in a
// file, waits until the broker answers, and stops it cleanly. The JVM dies with its parent.
package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/orderflow/devstack/internal/proc"
	"github.com/orderflow/devstack/ports"
)

// clusterID is the KRaft cluster id every broker of ours is formatted with: a base64
// UUID ("orderflow-devsta"), fixed so a data folder is always this cluster's.
const clusterID = "b3JkZXJmbG93LWRldnN0YQ"

// Options says where and how the broker runs.
type Options struct {
	Dir            string // the broker's folder: data/, server.properties, log4j2.yaml, server.log
	Libs           string // the folder of jars scripts/ensure-kafka.sh prints
	Port           int    // the client listener on 127.0.0.1; 0 picks a free port
	ControllerPort int    // the KRaft controller listener; 0 picks a free port
	Partitions     int    // default partitions of a new topic; default 6
	HeapMB         int    // the JVM's heap; default 512
	// Listeners are more client listeners on 127.0.0.1, each advertised at an address of
	// its own: a client that bootstraps from one is told that address for the broker, so
	// a proxy in front of it carries all the client's connections (the chaos run's
	// network faults).
	Listeners []Listener
	// Secure, when set, closes the broker to anyone without a login: every client
	// listener is SASL_SSL (SCRAM), the authorizer is on and allows nothing an ACL does
	// not (Secure.Admin excepted). Nil: PLAINTEXT, open to anyone on the loopback.
	Secure *Secure
	// Config adds or overrides server.properties settings (retention, session timeouts…).
	Config map[string]string
	// Log receives what the JVM prints outside its log file; default discarded.
	Log io.Writer
}

// Listener is a client listener of the broker's own: Name (upper case, not PLAINTEXT or
// CONTROLLER) on Port, advertised as Advertised (host:port).
type Listener struct {
	Name       string
	Port       int
	Advertised string
}

// Broker is a running Apache Kafka.
type Broker struct {
	opts Options
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

// ErrNoJava says the JVM is missing.
var ErrNoJava = errors.New("java not found: Apache Kafka needs Java 17 or later (Debian: apt-get install openjdk-17-jre-headless)")

// Start writes the configuration, formats the storage if Dir holds none yet, starts the
// broker and waits until it answers.
func Start(ctx context.Context, o Options) (*Broker, error) {
	if _, err := exec.LookPath("java"); err != nil {
		return nil, ErrNoJava
	}
	if jars, _ := filepath.Glob(filepath.Join(o.Libs, "kafka_*.jar")); len(jars) == 0 {
		return nil, fmt.Errorf("no Apache Kafka jars in %q: run scripts/ensure-kafka.sh", o.Libs)
	}
	var err error
	for _, p := range []*int{&o.Port, &o.ControllerPort} {
		if *p == 0 {
			if *p, err = ports.Free(); err != nil {
				return nil, err
			}
		}
	}
	if o.Partitions == 0 {
		o.Partitions = 6
	}
	if o.HeapMB == 0 {
		o.HeapMB = 512
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "data"), 0o755); err != nil {
		return nil, err
	}
	if err := o.writeConfig(); err != nil {
		return nil, err
	}
	b := &Broker{opts: o}
	if err := o.Secure.reformatIfOtherUsers(filepath.Join(o.Dir, "data")); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "data", "meta.properties")); errors.Is(err, os.ErrNotExist) {
		args := []string{"format", "--cluster-id", clusterID, "--config", filepath.Join(o.Dir, "server.properties")}
		if o.Secure != nil {
			args = append(args, o.Secure.scramArgs()...)
		}
		format := b.java(ctx, "kafka.tools.StorageTool", args...)
		if out, err := format.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("kafka: format storage: %w\n%s", err, out)
		}
	}
	if err := b.Start(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

func (o Options) writeConfig() error {
	props := map[string]string{
		"process.roles":                                    "broker,controller",
		"node.id":                                          "1",
		"controller.quorum.voters":                         "1@127.0.0.1:" + strconv.Itoa(o.ControllerPort),
		"listeners":                                        fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", o.Port, o.ControllerPort),
		"advertised.listeners":                             "PLAINTEXT://127.0.0.1:" + strconv.Itoa(o.Port),
		"controller.listener.names":                        "CONTROLLER",
		"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"inter.broker.listener.name":                       "PLAINTEXT",
		"log.dirs":                                         filepath.Join(o.Dir, "data"),
		"num.partitions":                                   strconv.Itoa(o.Partitions),
		"auto.create.topics.enable":                        "false", // as in compose: topics are made on purpose
		"default.replication.factor":                       "1",
		"min.insync.replicas":                              "1",
		"offsets.topic.replication.factor":                 "1",
		"offsets.topic.num.partitions":                     "6",
		"transaction.state.log.replication.factor":         "1",
		"transaction.state.log.min.isr":                    "1",
		"share.coordinator.state.topic.replication.factor": "1",
		"share.coordinator.state.topic.min.isr":            "1",
		"group.initial.rebalance.delay.ms":                 "0",
	}
	protocol := "PLAINTEXT"
	if o.Secure != nil {
		protocol = "SASL_SSL"
		o.Secure.configure(props)
	}
	for _, l := range o.Listeners {
		props["listeners"] += fmt.Sprintf(",%s://127.0.0.1:%d", l.Name, l.Port)
		props["advertised.listeners"] += "," + l.Name + "://" + l.Advertised
		props["listener.security.protocol.map"] += "," + l.Name + ":" + protocol
		if o.Secure != nil {
			o.Secure.configureListener(props, l.Name)
		}
	}
	for k, v := range o.Config {
		props[k] = v
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.WriteString("# Written by devstack/kafkabroker on every start.\n")
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%s\n", k, props[k])
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "server.properties"), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	log4j := fmt.Sprintf(`# Written by devstack/kafkabroker: the broker logs to server.log, nothing to the terminal.
Configuration:
  Appenders:
    RollingFile:
      name: file
      fileName: %q
      filePattern: %q
      PatternLayout:
        pattern: "[%%d] %%p %%m (%%c)%%n"
      SizeBasedTriggeringPolicy:
        size: 20MB
      DefaultRolloverStrategy:
        max: 2
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
`, filepath.Join(o.Dir, "server.log"), filepath.Join(o.Dir, "server.log.%i"))
	return os.WriteFile(filepath.Join(o.Dir, "log4j2.yaml"), []byte(log4j), 0o644)
}

// java is the JVM running class main of the broker's jars with args.
func (b *Broker) java(ctx context.Context, main string, args ...string) *exec.Cmd {
	o := b.opts
	jvm := []string{
		fmt.Sprintf("-Xms%dm", min(256, o.HeapMB)), fmt.Sprintf("-Xmx%dm", o.HeapMB),
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
		// The client compiler only: the optimizing one's work in a broker's first minutes,
		// all a test's or a bench's broker lives, took CPU from everything else on the
		// machine and never paid back (docs/performance.md, "Apache Kafka's JVM").
		"-XX:TieredStopAtLevel=1",
		"-Dlog4j2.configurationFile=" + filepath.Join(o.Dir, "log4j2.yaml"),
		"-cp", filepath.Join(o.Libs, "*"), main,
	}
	cmd := exec.CommandContext(ctx, "java", append(jvm, args...)...)
	cmd.Dir = o.Dir
	return cmd
}

// Tool runs one of Kafka's command-line tools (for example org.apache.kafka.tools.TopicCommand,
// what kafka-topics.sh runs) against this broker's jars, and returns what it printed.
func (b *Broker) Tool(ctx context.Context, main string, args ...string) ([]byte, error) {
	return b.java(ctx, main, args...).CombinedOutput()
}

// Addr is the broker's client listener, host:port.
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.opts.Port)) }

// Dir is the broker's folder; its log is Dir/server.log.
func (b *Broker) Dir() string { return b.opts.Dir }

// Start starts the broker (again, after Stop) on the same ports and data, and waits up to a
// minute until it answers a metadata request and lists itself.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return errors.New("kafka: already running")
	}
	cmd := b.java(context.Background(), "kafka.Kafka", filepath.Join(b.opts.Dir, "server.properties"))
	cmd.Stdout, cmd.Stderr = b.opts.Log, b.opts.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	b.cmd, b.done = cmd, done

	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-done:
			b.cmd = nil
			return fmt.Errorf("kafka exited at start (%v): see %s", err, filepath.Join(b.opts.Dir, "server.log"))
		case <-ctx.Done():
			b.kill()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if answers(b.Addr(), b.opts.Secure) {
			return nil
		}
		if time.Now().After(deadline) {
			b.kill()
			return fmt.Errorf("kafka not answering on %s after a minute: see %s", b.Addr(), filepath.Join(b.opts.Dir, "server.log"))
		}
	}
}

// answers reports whether the broker at addr answers a metadata request naming itself
// (logged in as sec's Admin when sec is set).
func answers(addr string, sec *Secure) bool {
	cfg := sarama.NewConfig()
	if sec != nil {
		cfg = sec.Client(Admin).Config("devstack")
	}
	cfg.Net.DialTimeout = time.Second
	cfg.Metadata.Retry.Max = 0
	c, err := sarama.NewClient([]string{addr}, cfg)
	if err != nil {
		return false
	}
	defer c.Close()
	return len(c.Brokers()) > 0
}

// Stop shuts the broker down cleanly (SIGTERM: it flushes, closes its logs and leaves the
// controller quorum) and waits for it; after 30 s it is killed.
func (b *Broker) Stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return nil
	}
	err := proc.Signal(b.cmd.Process, b.done, syscall.SIGTERM)
	b.cmd = nil
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 143 { // 128 + SIGTERM: the JVM's clean exit
		err = nil
	}
	return err
}

// Kill kills the broker with SIGKILL, as a crash would: no flush, no clean leave; what it
// had acknowledged is in its log files (the page cache outlives the process). Start brings
// it back.
func (b *Broker) Kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		b.kill()
	}
}

func (b *Broker) kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
	b.cmd = nil
}

// PID is the JVM's process id, or 0 when the broker is not running.
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Libs runs root's scripts/ensure-kafka.sh, which fetches the broker's jars the first time
// (Maven) and whenever tools/kafka/pom.xml changes, and returns the folder holding them.
func Libs(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "ensure-kafka.sh"))
	var stderr strings.Builder
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr) // "fetching…" shows while Maven works
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kafka: %s: %w", strings.TrimSpace(stderr.String()), err)
	}
	return strings.TrimSpace(string(out)), nil
}
