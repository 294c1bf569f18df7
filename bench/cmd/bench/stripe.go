package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/orderflow/devstack/ports"
	"github.com/orderflow/devstack/stack"
)

// localstripe is localstripe, a stateful Stripe stand-in (tools/localstripe), running for
// the bench's Stripe run, its objects in memory.
type localstripe struct {
	url string
	cmd *exec.Cmd
}

// startLocalstripe installs localstripe on the first run (scripts/ensure-localstripe.sh)
// and starts it on a free port, logging to log.
func startLocalstripe(ctx context.Context, log io.Writer) (*localstripe, error) {
	root, err := stack.FindRoot()
	if err != nil {
		return nil, err
	}
	ensure := exec.CommandContext(ctx, filepath.Join(root, "scripts", "ensure-localstripe.sh"))
	ensure.Env = append(os.Environ(), "ORDERFLOW_DATA_DIR="+filepath.Join(root, ".data"))
	ensure.Stderr = log
	python, err := ensure.Output()
	if err != nil {
		return nil, fmt.Errorf("installing localstripe: %w", err)
	}
	port, err := ports.Free()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(strings.TrimSpace(string(python)), filepath.Join(root, "tools", "localstripe", "serve.py"), "--port", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = io.Discard, log // its access log: a line a request
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start localstripe: %w", err)
	}
	ls := &localstripe{url: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(ls.url + "/v1/payment_intents/pi_none"); err == nil {
			resp.Body.Close()
			return ls, nil
		}
	}
	ls.stop()
	return nil, fmt.Errorf("localstripe did not answer at %s within 30s", ls.url)
}

func (ls *localstripe) stop() {
	_ = ls.cmd.Process.Kill()
	_ = ls.cmd.Wait()
}

// providerRuns measures the same open load with the simulator and with the Stripe adapter
// on localstripe, side by side: what a charge through Stripe's API (two calls, the
// intent recorded between them) costs the pipeline, on a stand-in that is itself a
// single Python process.
func (tg *target) providerRuns(ctx context.Context, stdout io.Writer, broker string, rate float64, d time.Duration, add func(runResult, error) error) error {
	fmt.Fprintf(stdout, "bench [%s]: simulator, open loop at %.0f orders/s for %s…\n", broker, rate, d)
	if err := add(tg.openLoop(ctx, fmt.Sprintf("simulator, %g/s", rate), rate, d)); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(tg.dir, "localstripe.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	ls, err := startLocalstripe(ctx, logf)
	if err != nil {
		return err
	}
	defer ls.stop()
	sv := tg.stack.Service("payment-service")
	switchTo := func(env ...string) error {
		if err := sv.Stop(); err != nil {
			return err
		}
		for i := 0; i+1 < len(env); i += 2 {
			sv.Setenv(env[i], env[i+1])
		}
		return sv.Start(ctx)
	}
	if err := switchTo("PAYMENT_PROVIDER", "stripe", "STRIPE_API_KEY", "sk_test_bench", "STRIPE_API_BASE", ls.url); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bench [%s]: Stripe adapter on localstripe, open loop at %.0f orders/s for %s…\n", broker, rate, d)
	runErr := add(tg.openLoop(ctx, fmt.Sprintf("Stripe on localstripe, %g/s", rate), rate, d))
	if err := switchTo("PAYMENT_PROVIDER", "simulator"); err != nil {
		return err
	}
	return runErr
}
