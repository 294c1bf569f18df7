package e2e

import (
	"context"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/testenv"
)

// docker-compose.yml's kafka-init, run as Docker would run it — its entrypoint and command
// as the compose loader reads them — against Apache Kafka with kafka-topics.sh from the
// broker's own jars: it makes exactly the topics and dead-letter topics the code needs,
// each with the partitions the services expect, and running it again changes nothing.
func TestComposeKafkaInitMakesTheTopicsTheCodeNeeds(t *testing.T) {
	if testenv.BrokerKind() != testenv.ApacheKafka {
		t.Skip("runs Apache Kafka's kafka-topics.sh: make test runs it on TEST_BROKER=kafka")
	}
	root := repoRoot(t)
	p, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	init := p.Services["kafka-init"]
	if len(init.Entrypoint) == 0 || len(init.Command) != 1 {
		t.Fatalf("kafka-init: entrypoint %q, command %q: want a shell entrypoint and one script", init.Entrypoint, init.Command)
	}
	libs, err := kafkabroker.Libs(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	// kafka-topics.sh is `kafka-run-class.sh org.apache.kafka.tools.TopicCommand "$@"`.
	b := testenv.Kafka(t)
	tool := filepath.Join(t.TempDir(), "kafka-topics.sh")
	login := "" // the tests' broker lets in only its principals
	if b.Secure != nil {
		props, err := b.Secure.ClientProperties(kafkabroker.Admin, filepath.Join(t.TempDir(), "admin.properties"))
		if err != nil {
			t.Fatal(err)
		}
		login = " --command-config '" + props + "'"
	}
	wrapper := "#!/bin/sh\nexec java -Dlog4j2.level=WARN -cp '" + filepath.Join(libs, "*") + "' org.apache.kafka.tools.TopicCommand \"$@\"" + login + "\n"
	if err := os.WriteFile(tool, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	script := init.Command[0]
	for _, in := range []string{"/opt/kafka/bin/kafka-topics.sh", "kafka:29092"} {
		if !strings.Contains(script, in) {
			t.Fatalf("kafka-init no longer runs %s: update this test", in)
		}
	}
	script = strings.NewReplacer("/opt/kafka/bin/kafka-topics.sh", tool, "kafka:29092", b.Addrs[0]).Replace(script)

	want := events.Topics()
	for _, groups := range consumes {
		for group, topics := range groups {
			want = append(want, consumer.DeadLetterTopics(group, topics...)...)
		}
	}
	sort.Strings(want)
	for run := 1; run <= 2; run++ {
		cmd := osexec.Command(init.Entrypoint[0], append(init.Entrypoint[1:], script)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kafka-init, run %d: %v\n%s", run, err, out)
		}
		admin, err := sarama.NewClusterAdmin(b.Addrs, testenv.LogIn(sarama.NewConfig()))
		if err != nil {
			t.Fatal(err)
		}
		topics, err := admin.ListTopics()
		admin.Close()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for name, d := range topics {
			if strings.HasPrefix(name, "__") {
				continue
			}
			got = append(got, name)
			if d.NumPartitions != 6 {
				t.Errorf("run %d: %s has %d partitions, want 6", run, name, d.NumPartitions)
			}
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("run %d: kafka-init made %v, the code needs %v", run, got, want)
		}
	}
}
