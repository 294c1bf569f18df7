package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/deadletter"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/devstack/compose"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/pki"
	"github.com/orderflow/devstack/testenv"
)

// docker-compose.yml's Apache Kafka, run as Docker would run it — its entrypoint
// (deploy/kafka/start.sh), environment and mounted settings as the compose loader reads
// them, with a .env as make up makes it — on this machine's Kafka jars, its ports and
// paths moved to free ones; then each service's kafka-setup one-shot with its compose
// environment. The stack's broker then lets in only its principals, each to do what the
// code declares: no login, no entry; the host's listener is TLS with make up's CA and
// refuses another; order-service cannot forge a payment; Kafka UI sees and changes
// nothing; the operators' dead-letter tool works from the host with the file make up
// wrote for it. The compose health check passes on it.
func TestComposeKafkaLetsInOnlyItsPrincipals(t *testing.T) {
	if testenv.BrokerKind() != testenv.ApacheKafka {
		t.Skip("runs Apache Kafka from compose's settings: make test runs it on TEST_BROKER=kafka")
	}
	root := testenv.Root(t)
	dir := t.TempDir()
	env, _, err := compose.Ensure(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadComposeWith(t, env, root, "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	k := p.Services["kafka"]
	mounted := func(target string) string {
		for _, v := range k.Volumes {
			if v.Target == target {
				return v.Source
			}
		}
		t.Fatalf("the kafka service mounts nothing at %s: update this test", target)
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	libs, err := kafkabroker.Libs(ctx, root)
	if err != nil {
		t.Fatal(err)
	}

	// /opt/kafka/bin of the image: the scripts the entrypoint and the health check run.
	home := filepath.Join(dir, "opt-kafka")
	if err := os.MkdirAll(filepath.Join(home, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for script, main := range map[string]string{
		"kafka-storage.sh": "kafka.tools.StorageTool", "kafka-server-start.sh": "kafka.Kafka",
		"kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
	} {
		wrapper := "#!/bin/sh\nexec java -Xmx512m -Dlog4j2.level=WARN -cp '" + filepath.Join(libs, "*") + "' " + main + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(home, "bin", script), []byte(wrapper), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	// The settings as the container reads them, its ports and paths moved to this
	// machine's: free ports on the loopback, the log and the keystore in dir.
	internal, external, controller := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	props, err := os.ReadFile(mounted(kafkaProperties))
	if err != nil {
		t.Fatal(err)
	}
	keystore := regexp.MustCompile(`(?m)^ssl\.keystore\.location=(.*)$`).FindSubmatch(props)
	logDirs := regexp.MustCompile(`(?m)^log\.dirs=(.*)$`).FindSubmatch(props)
	if keystore == nil || logDirs == nil || mounted(string(keystore[1])) != filepath.Join(root, compose.PKIDir, compose.KeyStoreFile) {
		t.Fatal("deploy/kafka/server.properties has no keystore mounted from make up's or no log.dirs: update this test")
	}
	moved := strings.NewReplacer(
		"://:29092", "://127.0.0.1:"+strconv.Itoa(internal), "://:9092", "://127.0.0.1:"+strconv.Itoa(external),
		"://:9093", "://127.0.0.1:"+strconv.Itoa(controller),
		"kafka:29092", "127.0.0.1:"+strconv.Itoa(internal), "localhost:9092", "localhost:"+strconv.Itoa(external),
		"kafka:9093", "127.0.0.1:"+strconv.Itoa(controller),
		string(keystore[1]), filepath.Join(dir, compose.PKIDir, compose.KeyStoreFile),
		string(logDirs[1]), filepath.Join(dir, "data"),
	)
	settings := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(settings, []byte(moved.Replace(string(props))), 0o600); err != nil {
		t.Fatal(err)
	}
	adminProperties := filepath.Join(dir, "orderflow-admin.properties")
	if !slices.Equal(k.Entrypoint, []string{kafkaStart}) {
		t.Fatalf("the kafka service's entrypoint is %q, not %s: update this test", k.Entrypoint, kafkaStart)
	}
	cmd := osexec.CommandContext(ctx, "bash", mounted(kafkaStart))
	cmd.Env = append(os.Environ(), "KAFKA_HOME="+home, "KAFKA_SERVER_PROPERTIES="+settings,
		"KAFKA_CONF="+filepath.Join(dir, "kafka.properties"), "KAFKA_ADMIN_PROPERTIES="+adminProperties)
	for name, v := range k.Environment {
		cmd.Env = append(cmd.Env, name+"="+ptrOr(v, ""))
	}
	logPath := filepath.Join(dir, "kafka.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("the broker's output (%s):\n%s", logPath, tail(logPath, 40))
		}
	}()

	// The compose health check, as Docker runs it in the container, until it passes.
	check := k.HealthCheck.Test
	if len(check) != 2 || check[0] != "CMD-SHELL" || !strings.Contains(check[1], "/opt/kafka/bin/") || !strings.Contains(check[1], "/tmp/orderflow-admin.properties") {
		t.Fatalf("the kafka service's health check is %q, no longer a shell command with Kafka's tools and admin's login: update this test", check)
	}
	healthy := strings.NewReplacer("/opt/kafka", home, "localhost:29092", "127.0.0.1:"+strconv.Itoa(internal),
		"/tmp/orderflow-admin.properties", adminProperties).Replace(check[1])
	for {
		if err := osexec.CommandContext(ctx, "sh", "-c", healthy).Run(); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the broker exited: %v", err)
		case <-ctx.Done():
			t.Fatal("the compose health check did not pass in time")
		case <-time.After(time.Second):
		}
	}

	// Each service's kafka-setup, with its one-shot's compose environment.
	brokers := []string{"127.0.0.1:" + strconv.Itoa(internal)}
	moveBrokers := func(svc string) func(string) string {
		get := getenv(p.Services[svc])
		return func(name string) string { return moved.Replace(get(name)) }
	}
	for name := range settingsRead {
		setup := name + "-kafka-setup"
		if _, ok := p.Services[setup]; !ok {
			t.Fatalf("no service %s", setup)
		}
		if err := platform.SetupKafka(identity(name), moveBrokers(setup), io.Discard); err != nil {
			t.Fatalf("%s: %v", setup, err)
		}
	}

	// How each of compose's clients logs in: the services and their settings as they read
	// them; Kafka UI from its login line; a stranger with none.
	as := func(svc string) kafka.Security {
		e := config.NewEnv(getenv(p.Services[svc]))
		s := config.ReadKafka(e)
		if err := e.Err(); err != nil {
			t.Fatalf("%s's Kafka settings: %v", svc, err)
		}
		return s
	}
	ui := getenv(p.Services["kafka-ui"])
	login := regexp.MustCompile(`username="([^"]+)" password="([^"]+)"`).FindStringSubmatch(ui("KAFKA_CLUSTERS_0_PROPERTIES_SASL_JAAS_CONFIG"))
	if login == nil || ui("KAFKA_CLUSTERS_0_PROPERTIES_SECURITY_PROTOCOL") != kafka.SASLPlaintext || ui("KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS") != "kafka:29092" {
		t.Fatal("Kafka UI no longer logs in with SCRAM on kafka:29092: update this test")
	}
	viewer := kafka.Security{Protocol: kafka.SASLPlaintext, Mechanism: ui("KAFKA_CLUSTERS_0_PROPERTIES_SASL_MECHANISM"), Username: login[1], Password: login[2]}
	// The operators' tool on the host: make up's dlq.env, its broker moved.
	dlqEnv, err := os.ReadFile(filepath.Join(dir, compose.DLQEnv))
	if err != nil {
		t.Fatal(err)
	}
	operatorEnv := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(dlqEnv)), "\n") {
		name, value, _ := strings.Cut(line, "=")
		operatorEnv[name] = moved.Replace(value)
	}
	e := config.NewEnv(func(name string) string { return operatorEnv[name] })
	operator, hostBrokers := config.ReadKafka(e), e.HostPorts("KAFKA_BROKERS", nil)
	if err := e.Err(); err != nil {
		t.Fatalf("%s: %v", compose.DLQEnv, err)
	}
	otherCA, err := pki.New(filepath.Join(dir, "other-ca"), "another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrongCA := operator
	if wrongCA.TLS, err = kafka.TLSConfig(otherCA.File, "", ""); err != nil {
		t.Fatal(err)
	}

	produce := func(s kafka.Security, brokers []string, topic string) error {
		c := s.Config("compose-kafka-test")
		c.Net.DialTimeout, c.Metadata.Retry.Max = 5*time.Second, 1
		pr, err := sarama.NewSyncProducer(brokers, c)
		if err != nil {
			return err
		}
		defer pr.Close()
		_, _, err = pr.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("compose-test"), Value: sarama.StringEncoder("{}")})
		return err
	}
	topics := func(s kafka.Security, brokers []string) ([]string, error) {
		c := s.Config("compose-kafka-test")
		c.Net.DialTimeout, c.Metadata.Retry.Max = 5*time.Second, 1
		admin, err := sarama.NewClusterAdmin(brokers, c)
		if err != nil {
			return nil, err
		}
		defer admin.Close()
		ts, err := admin.ListTopics()
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range ts {
				if !yield(n) {
					return
				}
			}
		})
		return names, err
	}
	sees := func(s kafka.Security, brokers []string, topic string) func() error {
		return func() error {
			ts, err := topics(s, brokers)
			if err == nil && !slices.Contains(ts, topic) {
				err = errors.New("does not see " + topic + " in " + strings.Join(ts, ", "))
			}
			return err
		}
	}
	dlqList := func() error {
		c := operator.Config("compose-kafka-test")
		client, err := sarama.NewClient(hostBrokers, c)
		if err != nil {
			return err
		}
		defer client.Close()
		pr, err := sarama.NewSyncProducerFromClient(client)
		if err != nil {
			return err
		}
		defer pr.Close()
		tool := &deadletter.Tool{Client: client, Producer: pr, By: "compose-test", Now: time.Now}
		depths, err := tool.List()
		if err == nil && len(depths) == 0 {
			err = errors.New("lists no dead-letter topic")
		}
		return err
	}
	read := func(s kafka.Security, brokers []string, topic string) error {
		return readAs(s.Config("compose-kafka-test"), brokers, topic)
	}
	// group asks for the committed offsets of group: Describe on it. The offsets topic
	// is new: its coordinator may still be loading.
	group := func(s kafka.Security, group string) error {
		c := s.Config("compose-kafka-test")
		admin, err := sarama.NewClusterAdmin(brokers, c)
		if err != nil {
			return err
		}
		defer admin.Close()
		for deadline := time.Now().Add(20 * time.Second); ; {
			res, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{events.TopicPaymentCompleted: {0}})
			if err == nil && !errors.Is(res.Err, sarama.ErrNoError) {
				err = res.Err
			}
			loading := errors.Is(err, sarama.ErrOffsetsLoadInProgress) || errors.Is(err, sarama.ErrConsumerCoordinatorNotAvailable) || errors.Is(err, sarama.ErrNotCoordinatorForConsumer)
			if !loading || time.Now().After(deadline) {
				return err
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	stranger := kafka.Security{}
	for _, tc := range []struct {
		name    string
		do      func() error
		allowed bool
	}{
		{"a client without a login, on the network's listener", func() error { return produce(stranger, brokers, events.TopicPaymentCompleted) }, false},
		{"a client without a login, on the host's listener", func() error { return produce(stranger, hostBrokers, events.TopicPaymentCompleted) }, false},
		{"payment-service writes payment.completed", func() error { return produce(as("payment-service"), brokers, events.TopicPaymentCompleted) }, true},
		{"order-service writes payment.completed", func() error { return produce(as("order-service"), brokers, events.TopicPaymentCompleted) }, false},
		{"notification-service writes order.created", func() error { return produce(as("notification-service"), brokers, events.TopicOrderCreated) }, false},
		{"order-service reads its own group's offsets", func() error { return group(as("order-service"), "order-service") }, true},
		// A group no ACL names: refused unless the broker allows what no ACL mentions.
		{"order-service reads another group's offsets", func() error { return group(as("order-service"), "scratch") }, false},
		{"Kafka UI sees the topics", sees(viewer, brokers, events.TopicOrderCreated), true},
		{"Kafka UI writes order.created", func() error { return produce(viewer, brokers, events.TopicOrderCreated) }, false},
		{"the dead-letter tool from the host, over TLS with make up's CA", dlqList, true},
		{"the dead-letter tool reads order.created, a live topic", func() error { return read(operator, hostBrokers, events.TopicOrderCreated) }, false},
		{"the dead-letter tool reads a dead-letter topic", func() error {
			return read(operator, hostBrokers, events.DeadLetterTopic(events.TopicOrderCreated, "payment-service"))
		}, true},
		{"a client trusting another CA on the host's listener", sees(wrongCA, hostBrokers, events.TopicOrderCreated), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if tc.allowed != (err == nil) {
				t.Errorf("%v, want allowed %v", err, tc.allowed)
			} else if err != nil {
				t.Logf("refused: %v", err)
			}
		})
	}
}
