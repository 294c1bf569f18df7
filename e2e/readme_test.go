package e2e

import (
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/testenv"
)

// The README's quick start on this machine, run as written against a devstack: its
// commands with make run's addresses moved to the stack's, in a folder holding the tokens
// make run writes. Neither script nor by-hand curl sequence can rot unnoticed.
func TestTheREADMEQuickStartWorks(t *testing.T) {
	if os.Getenv("E2E_ORDER_URL") != "" {
		t.Skip("runs the README's commands against a devstack of its own")
	}
	root := testenv.Root(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "## Quick start on this machine")
	if start < 0 {
		t.Fatal("README.md has no section Quick start on this machine: update this test")
	}
	section = section[start:]
	if end := strings.Index(section[3:], "\n## "); end > 0 {
		section = section[:end+3]
	}
	var blocks []string
	for rest := section; ; {
		i := strings.Index(rest, "```sh\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("```sh\n"):]
		j := strings.Index(rest, "```")
		blocks = append(blocks, rest[:j])
		rest = rest[j+3:]
	}
	if len(blocks) != 2 || !strings.Contains(blocks[0], "make run") || !strings.Contains(blocks[1], "curl") {
		t.Fatalf("the quick start has %d blocks, not make run and the scripts, then the curl sequence: update this test", len(blocks))
	}

	tg := newTarget(t, nil)
	dir := t.TempDir()
	if err := tg.ctl.WriteTokens(filepath.Join(dir, ".data", "tokens"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// make run's addresses, as the README writes them, moved to this stack's.
	moved := strings.NewReplacer("http://127.0.0.1:8080", tg.order, "http://127.0.0.1:8081", tg.payment,
		"http://127.0.0.1:8082", tg.notification)
	token := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, ".data", "tokens", name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	shell := func(script string, env ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := osexec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s\n%s", err, script, out)
		}
		return string(out)
	}

	// The scripts: each line but make run, from the repository's root, as a reader in
	// another terminal would; place-order.sh given the stack's addresses and tokens.
	for _, line := range strings.Split(strings.TrimSpace(blocks[0]), "\n") {
		command, comment, _ := strings.Cut(line, "#")
		command = strings.TrimSpace(command)
		if command == "make run" {
			continue
		}
		want := "is CONFIRMED"
		if strings.Contains(command, "tok_chargeDeclined") {
			want = "is PAYMENT_FAILED"
		}
		out := shell("cd '"+root+"' && "+command, "ORDER_URL="+tg.order, "PAYMENT_URL="+tg.payment,
			"NOTIFICATION_URL="+tg.notification, "CUSTOMER_TOKEN="+token("customer.jwt"), "OPERATOR_TOKEN="+token("operator.jwt"))
		if !strings.Contains(out, want) {
			t.Errorf("%s (%s): no %q in\n%s", command, strings.TrimSpace(comment), want, out)
		}
	}

	// The curl sequence, as one script: the order it places, waited on, then its history.
	out := shell(moved.Replace(blocks[1]))
	if !strings.Contains(out, `"status":"CONFIRMED"`) || !strings.Contains(out, `"to":"CONFIRMED"`) {
		t.Errorf("the curl sequence did not see its order confirmed and its history:\n%s", out)
	}

	// make reconcile-rebuild's work on this stack, the orders above in its topics:
	// reconciliation-service stopped, rebuilt by replay, and ready again.
	var rebuilt strings.Builder
	if err := tg.ctl.RebuildReconciliation(context.Background(), &rebuilt); err != nil {
		t.Fatalf("reconcile-rebuild: %v\n%s", err, rebuilt.String())
	}
	if !strings.Contains(rebuilt.String(), "rebuilt in") || strings.Contains(rebuilt.String(), " from 0 records") {
		t.Errorf("reconcile-rebuild's account: %s, want the records it replayed", rebuilt.String())
	}
}

// The README's table of ports gives each service the ports of its identity
// (common-events/services): make run's and compose's.
func TestTheREADMEPortsAreTheServicesOwn(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(testenv.Root(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range checkPortsTable(string(readme)) {
		t.Error(err)
	}
	broken := strings.Replace(string(readme), "http://localhost:8084", "http://localhost:8085", 1)
	if errs := checkPortsTable(broken); len(errs) != 1 {
		t.Errorf("a README with notification-service on compose's port 8085: %v, want one error", errs)
	}
}

func checkPortsTable(readme string) []error {
	var errs []error
	for _, s := range services.All() {
		var row string
		for line := range strings.Lines(readme) {
			if strings.HasPrefix(line, "| "+s.Name+" ") {
				row = line
			}
		}
		local, compose := fmt.Sprintf("http://127.0.0.1:%d ", s.Port), fmt.Sprintf("http://localhost:%d ", s.ComposePort)
		if !strings.Contains(row, local) || !strings.Contains(row, compose) {
			errs = append(errs, fmt.Errorf("README's ports row for %s is %q, want %s(make run) and %s(compose)", s.Name, strings.TrimSpace(row), local, compose))
		}
	}
	return errs
}
