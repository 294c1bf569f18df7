// Command dlq is the operators' tool for dead-lettered records:
//
//	dlq list                                   the dead-letter topics and their depth
//	dlq show TOPIC [-offsets all|N|A-B|A-] [-partition P]
//	                                           their records: headers, error, payload
//	dlq replay TOPIC [-offsets …] [-partition P] [-dry-run]
//	                                           send them back to their original topic
//
// KAFKA_BROKERS (default 127.0.0.1:9092) names the cluster. Each replay prints, and writes
// to the ledger topic orderflow.dlq.replayed, an audit line (what, where to, the error it
// had, who, when); a record in the ledger is not replayed again.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/deadletter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "dlq: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	env := config.NewEnv(getenv)
	brokers := env.HostPorts("KAFKA_BROKERS", []string{"127.0.0.1:9092"})
	security := config.ReadKafka(env)
	if err := env.Err(); err != nil {
		return err
	}
	if len(args) == 0 {
		return fmt.Errorf("usage: dlq list | show TOPIC [-offsets all|N|A-B|A-] [-partition P] | replay TOPIC [-offsets …] [-partition P] [-dry-run]")
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("dlq "+cmd, flag.ContinueOnError)
	offsets := fs.String("offsets", "all", `records to take: "all", an offset N, a range A-B, or A- (from A on)`)
	partition := fs.Int("partition", -1, "only this partition (-1: every one)")
	dryRun := fs.Bool("dry-run", false, "say what would be replayed; send nothing")
	var topic string
	if cmd != "list" {
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			return fmt.Errorf("%s needs a dead-letter topic: dlq %s TOPIC (dlq list names them)", cmd, cmd)
		}
		topic, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	sel, err := deadletter.ParseSelection(*offsets, int32(*partition))
	if err != nil {
		return fmt.Errorf("-offsets: %w", err)
	}
	client, err := sarama.NewClient(brokers, security.Config("orderflow-dlq"))
	if err != nil {
		return fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", brokers, err)
	}
	defer client.Close()
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		return err
	}
	defer producer.Close()
	tool := &deadletter.Tool{Client: client, Producer: producer, By: who(), Now: time.Now}

	switch cmd {
	case "list":
		depths, err := tool.List()
		if err != nil {
			return err
		}
		for _, d := range depths {
			fmt.Fprintf(out, "%-60s %d\n", d.Topic, d.Records)
		}
		return nil
	case "show":
		recs, err := tool.Records(ctx, topic, sel)
		if err != nil {
			return err
		}
		for _, r := range recs {
			fmt.Fprintf(out, "== %s  key %q\n   error: %s\n", r.ID(), r.Key, r.Headers[consumer.HeaderDLQError])
			names := make([]string, 0, len(r.Headers))
			for k := range r.Headers {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				fmt.Fprintf(out, "   %s: %s\n", k, r.Headers[k])
			}
			fmt.Fprintf(out, "   payload: %q\n", r.Value)
		}
		fmt.Fprintf(out, "%d records\n", len(recs))
		return nil
	case "replay":
		replays, err := tool.Replay(ctx, topic, sel, *dryRun)
		for _, rp := range replays {
			line := fmt.Sprintf("%s → %s: %s", rp.Record.ID(), rp.To, rp.Outcome)
			if rp.Audit != "" {
				line += "  audit " + rp.Audit
			}
			fmt.Fprintln(out, line)
		}
		return err
	}
	return fmt.Errorf("unknown command %q: want list, show or replay", cmd)
}

// who is the operator, for the audit: user@host.
func who() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
