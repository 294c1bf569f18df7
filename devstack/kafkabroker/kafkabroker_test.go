package kafkabroker_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/testenv"
)

// rssMB is the resident memory of process pid, from /proc.
func rssMB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}

// The broker starts, keeps its log in a file, takes an idempotent producer's records with
// acks=all, stops cleanly, and comes back on the same data: what devstack relies on.
func TestBrokerStartsServesStopsAndKeepsItsData(t *testing.T) {
	ctx := context.Background()
	libs, err := kafkabroker.Libs(ctx, testenv.Root(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := time.Now()
	b, err := kafkabroker.Start(ctx, kafkabroker.Options{Dir: dir, Libs: libs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	t.Logf("Apache Kafka answered %s after start (formatting included), resident memory %d MB",
		time.Since(start).Round(time.Millisecond), rssMB(b.PID()))

	out, err := b.Tool(ctx, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", b.Addr(),
		"--create", "--if-not-exists", "--topic", "orders", "--partitions", "3", "--replication-factor", "1")
	if err != nil {
		t.Fatalf("kafka-topics --create: %v\n%s", err, out)
	}

	cfg := sarama.NewConfig()
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Net.MaxOpenRequests = 1
	p, err := sarama.NewSyncProducer([]string{b.Addr()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "orders", Key: sarama.StringEncoder("o-1"), Value: sarama.StringEncoder("kept")}); err != nil {
		t.Fatal(err)
	}
	p.Close()

	if err := b.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if b.PID() != 0 {
		t.Fatal("still running after Stop")
	}
	if log, err := os.ReadFile(filepath.Join(dir, "server.log")); err != nil || !strings.Contains(string(log), "Kafka Server started") {
		t.Errorf("server.log (%v) does not say the server started", err)
	}
	restart := time.Now()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted on its data in %s", time.Since(restart).Round(time.Millisecond))

	c, err := sarama.NewConsumer([]string{b.Addr()}, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	parts, err := c.Partitions("orders")
	if err != nil || len(parts) != 3 {
		t.Fatalf("partitions of orders after the restart: %v, %v", parts, err)
	}
	found := false
	for _, part := range parts {
		pc, err := c.ConsumePartition("orders", part, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-pc.Messages():
			found = found || string(m.Value) == "kept"
		case <-time.After(500 * time.Millisecond):
		}
		pc.Close()
	}
	if !found {
		t.Error("the record written before the restart is gone")
	}
}

func TestStartSaysWhatIsMissing(t *testing.T) {
	_, err := kafkabroker.Start(context.Background(), kafkabroker.Options{Dir: t.TempDir(), Libs: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "run scripts/ensure-kafka.sh") {
		t.Errorf("no jars: got %v, want a line saying to run scripts/ensure-kafka.sh", err)
	}
	t.Setenv("PATH", t.TempDir())
	_, err = kafkabroker.Start(context.Background(), kafkabroker.Options{Dir: t.TempDir(), Libs: t.TempDir()})
	if err != kafkabroker.ErrNoJava {
		t.Errorf("no java: got %v, want ErrNoJava", err)
	}
}
