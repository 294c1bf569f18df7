package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orderflow/bench/pipecmp"
	"github.com/orderflow/devstack/ports"
)

// The peer: orderflow's flow end to end built from Watermill's parts (bench/pipecmp),
// loaded as orderflow is, on the same PostgreSQL, broker and machine, with orderflow's
// services idle beside it. It runs in a process of its own, this binary again, so its CPU
// is counted as a service's is.
const (
	peerCommand = "watermill-flow" // bench watermill-flow: the peer's process
	peerName    = "Watermill flow" // its runs' name prefix and its CPU's column
)

// runPeer is the peer's process: the flow pipecmp.Config in the environment describes.
func runPeer(ctx context.Context, getenv func(string) string) error {
	c, err := pipecmp.FromEnv(getenv)
	if err != nil {
		return err
	}
	return pipecmp.Run(ctx, c)
}

// startPeer prepares the peer's databases and topics beside tg's and starts its process;
// the target it returns loads it as tg loads orderflow.
func (tg *target) startPeer(ctx context.Context) (*target, error) {
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	c, err := pipecmp.Prepare(ctx, tg.adminDB, tg.brokers, tg.stack.Partitions(), stamp)
	if err != nil {
		return nil, fmt.Errorf("the Watermill flow: %w", err)
	}
	port, err := ports.Free()
	if err != nil {
		return nil, err
	}
	c.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", port)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(tg.dir, "watermill-flow-"+stamp+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, peerCommand)
	cmd.Env, cmd.Stdout, cmd.Stderr = append(os.Environ(), c.Env()...), logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	peer := &target{orderURL: "http://" + c.HTTPAddr, tokens: tg.tokens, ordersDB: c.OrdersDB, notificationsDB: c.NotificationsDB,
		adminDB: tg.adminDB, brokers: tg.brokers, stack: tg.stack, dir: tg.dir, log: tg.log, dbs: c.Databases(),
		peer: cmd, peerExited: exited}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get(peer.orderURL + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return peer, nil
			}
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("the Watermill flow ended at its start (its log: %s)", logf.Name())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			peer.stopPeer()
			return nil, fmt.Errorf("the Watermill flow was not ready within 60 s (its log: %s)", logf.Name())
		}
	}
}

// stopPeer ends the peer's process: SIGTERM, and after 5 s SIGKILL.
func (tg *target) stopPeer() {
	_ = tg.peer.Process.Signal(syscall.SIGTERM)
	select {
	case <-tg.peerExited:
	case <-time.After(5 * time.Second):
		_ = tg.peer.Process.Kill()
		<-tg.peerExited
	}
}

// peerRuns loads the peer as the plan loaded orderflow: its closed loops and the open
// loops of p.peerRates.
func (p plan) peerRuns(ctx context.Context, stdout io.Writer, tg *target, broker string, add func(runResult, error) error) error {
	fmt.Fprintf(stdout, "bench [%s]: the same flow built from Watermill's parts, beside orderflow…\n", broker)
	peer, err := tg.startPeer(ctx)
	if err != nil {
		return err
	}
	defer peer.stopPeer()
	if _, err := peer.openLoop(ctx, "warm-up", 50, 3*time.Second); err != nil {
		return err
	}
	mark := func(r runResult, err error) error {
		r.Name, r.Peer = peerName+": "+r.Name, true
		return add(r, err)
	}
	for _, w := range p.workers {
		fmt.Fprintf(stdout, "bench [%s]: %s, closed loop with %d clients for %s…\n", broker, peerName, w, p.duration)
		if err := mark(peer.closedLoop(ctx, fmt.Sprintf("closed %d clients", w), w, p.duration)); err != nil {
			return err
		}
	}
	for _, rate := range p.peerRates {
		fmt.Fprintf(stdout, "bench [%s]: %s, open loop at %.0f orders/s for %s…\n", broker, peerName, rate, p.duration)
		if err := mark(peer.openLoop(ctx, fmt.Sprintf("open %g/s", rate), rate, p.duration)); err != nil {
			return err
		}
	}
	return nil
}

// peerTable puts each run of the peer's flow beside orderflow's same run on the same
// broker: confirmed/s, their ratio, latencies and what an order cost.
func (r report) peerTable(w io.Writer) {
	ours := map[[2]string]runResult{}
	var peers []runResult
	for _, x := range r.Runs {
		if x.Peer {
			peers = append(peers, x)
		} else {
			ours[[2]string{x.Broker, x.Name}] = x
		}
	}
	if len(peers) == 0 {
		return
	}
	fmt.Fprintf(w, "\norderflow beside the same flow built from Watermill's parts (bench/pipecmp: its SQL Forwarder, Kafka subscribers and Router at their documented defaults; no tokens, idempotency keys, admission control, history, inbox, dead letters or reconciliation), each figure orderflow / Watermill:\n")
	fmt.Fprintln(w, "\n| broker | run | accepted/s | confirmed/s | ratio | POST p99 ms | POST→CONFIRMED p50 ms | POST→CONFIRMED p99 ms | CPU ms per order (services + PG) | rows per order | WAL kB per order | statements per order |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, y := range peers {
		name := strings.TrimPrefix(y.Name, peerName+": ")
		x, ok := ours[[2]string{y.Broker, name}]
		if !ok {
			continue
		}
		ratio := "–" // of confirmed/s
		if y.ConfirmedPerSec > 0 {
			ratio = fmt.Sprintf("%.2f×", x.ConfirmedPerSec/y.ConfirmedPerSec)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f / %.0f | %.0f / %.0f | %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s |\n",
			brokerNames[y.Broker], name, x.AchievedRate, y.AchievedRate, x.ConfirmedPerSec, y.ConfirmedPerSec, ratio,
			ms(x.PostMs.P99), ms(y.PostMs.P99), ms(x.ConfirmMs.P50), ms(y.ConfirmMs.P50), ms(x.ConfirmMs.P99), ms(y.ConfirmMs.P99),
			ms(x.CPUMsPerOrder), ms(y.CPUMsPerOrder), ms(x.RowsPerOrder), ms(y.RowsPerOrder),
			ms(x.WALBytesPerOrder/1024), ms(y.WALBytesPerOrder/1024), ms(x.StatementsPerOrder), ms(y.StatementsPerOrder))
	}
}
