package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := percentiles(ds)
	if got.P50 != 50 || got.P95 != 95 || got.P99 != 99 || got.Max != 100 {
		t.Errorf("percentiles(1..100 ms) = %+v, want 50/95/99/100", got)
	}
	if one := percentiles([]time.Duration{7 * time.Millisecond}); one.P50 != 7 || one.P99 != 7 || one.Max != 7 {
		t.Errorf("percentiles(7 ms) = %+v", one)
	}
	if none := percentiles(nil); none != (latency{}) {
		t.Errorf("percentiles(nil) = %+v, want zero", none)
	}
}

// A report of runs on two brokers puts each run's figures side by side.
func TestReportPutsTheBrokersSideBySide(t *testing.T) {
	r := report{Yardstick: yardstickResult{TPS: 1000}, Runs: []runResult{
		{Name: "open 250/s", Broker: "kfake", ConfirmedPerSec: 250, ConfirmMs: latency{P99: 40}},
		{Name: "open 250/s", Broker: "kafka", ConfirmedPerSec: 249, ConfirmMs: latency{P99: 55}},
	}}
	reportHas(t, r,
		"| open 250/s | 250 / 249 |",
		"| 40 / 55 |",
		"Best sustained confirmed orders/s on Apache Kafka: 249",
		"| Apache Kafka | open 250/s |",
	)
}

// reportHas fails t unless r's markdown has each of wants; it returns the markdown.
func reportHas(t *testing.T, r report, wants ...string) string {
	t.Helper()
	var b strings.Builder
	r.markdown(&b)
	for _, want := range wants {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	return b.String()
}

// bench docs writes a report between the markers of a page, labelled with its commit and
// machine, replacing the last figures and keeping the rest; a page without the markers
// is refused.
func TestDocsTakeTheFiguresBetweenTheMarkers(t *testing.T) {
	dir := t.TempDir()
	rep := filepath.Join(dir, "latest.json")
	b, _ := json.Marshal(report{Commit: "abc1234567", Machine: "2 cores (test)", Quick: true,
		Runs: []runResult{{Name: "open 250/s", Broker: "kfake", Mode: "open", OfferedRate: 250, ConfirmedPerSec: 250, Confirmed: 1000}}})
	if err := os.WriteFile(rep, b, 0o644); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(dir, "performance.md")
	page := "# Performance\n\nbefore\n\n" + docsBegin + "\nold figures\n" + docsEnd + "\n\nafter\n"
	if err := os.WriteFile(doc, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		if err := writeDocs(rep, doc); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(doc)
	for _, want := range []string{"before\n\n" + docsBegin + "\n", "Commit abc1234567 (QUICK=1). Machine: 2 cores (test).",
		"| kfake | open 250/s |", "\n" + docsEnd + "\n\nafter\n"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("page lacks %q:\n%s", want, got)
		}
	}
	if svg, err := os.ReadFile(filepath.Join(dir, "performance.svg")); err != nil || !strings.Contains(string(svg), "abc1234567") ||
		!strings.Contains(string(got), "](performance.svg)") || strings.Count(string(got), "](performance.svg)") != 1 {
		t.Errorf("the curve beside the page: %v; the page links it once: %v", err, strings.Count(string(got), "](performance.svg)"))
	}
	if strings.Contains(string(got), "old figures") || strings.Count(string(got), "### orderflow bench") != 1 {
		t.Errorf("the old figures stay, or the new ones are written twice:\n%s", got)
	}
	if err := os.WriteFile(doc, []byte("# no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeDocs(rep, doc); err == nil || !strings.Contains(err.Error(), "has no "+docsBegin) {
		t.Errorf("a page without markers: %v", err)
	}
}

// The curve takes the instant provider's runs on each broker, open and closed loops, by
// load offered, and leaves out the slow providers', the other providers' and the peer's; the SVG names
// its commit, its machine and its brokers, and draws three lines per broker.
func TestTheCurveDrawsTheInstantProvidersRuns(t *testing.T) {
	run := func(name, broker, mode string, offered, confirmed, p50, p99 float64) runResult {
		return runResult{Name: name, Broker: broker, Mode: mode, OfferedRate: offered, ConfirmedPerSec: confirmed, Confirmed: 100,
			ConfirmMs: latency{P50: p50, P99: p99}}
	}
	r := report{Commit: "abc1234567", Machine: "2 cores (test)", Runs: []runResult{
		run("open 500/s", "kfake", "open", 500, 490, 20, 80),
		run("open 250/s", "kfake", "open", 250, 249, 10, 40),
		run("closed 32 clients", "kfake", "closed", 820, 800, 300, 600),
		run("provider 100ms, 250/s", "kfake", "open", 250, 240, 150, 200),
		run("Stripe on localstripe, 100/s", "kfake", "open", 100, 98, 40, 120),
		run("open 250/s", "kafka", "open", 250, 245, 30, 90),
		run(peerName+": closed 32 clients", "kfake", "closed", 1500, 1000, 3000, 4000),
		run(peerName+": open 250/s", "kfake", "open", 250, 210, 1100, 1600),
	}}
	r.Runs[6].Peer, r.Runs[7].Peer = true, true
	brokers, points := r.curves()
	want := map[string][]curvePoint{
		"kfake": {{250, 249, 10, 40, false}, {500, 490, 20, 80, false}, {820, 800, 300, 600, true}},
		"kafka": {{250, 245, 30, 90, false}},
	}
	if !slices.Equal(brokers, []string{"kfake", "kafka"}) || !slices.Equal(points["kfake"], want["kfake"]) || !slices.Equal(points["kafka"], want["kafka"]) {
		t.Fatalf("curves = %v %v; want %v", brokers, points, want)
	}
	var b strings.Builder
	if !r.svg(&b) {
		t.Fatal("no curve drawn")
	}
	svg := b.String()
	for _, s := range []string{"<svg", "commit abc1234567", "2 cores (test)", ">kfake</text>", ">Apache Kafka</text>", "</svg>"} {
		if !strings.Contains(svg, s) {
			t.Errorf("the SVG lacks %q", s)
		}
	}
	if n := strings.Count(svg, "<polyline"); n != 6 {
		t.Errorf("%d lines drawn, want 6: throughput, p99 and p50 for each of two brokers", n)
	}
	if (report{}).svg(&b) {
		t.Error("a curve drawn without runs")
	}
}

// Each run of the peer's flow stands beside orderflow's run of the same name on the same
// broker, with the ratio of their confirmed/s; the peer's runs are not orderflow's best.
func TestThePeersRunsStandBesideOurs(t *testing.T) {
	r := report{Yardstick: yardstickResult{TPS: 10000}, Runs: []runResult{
		{Name: "closed 32 clients", Broker: "kfake", Mode: "closed", AchievedRate: 750, ConfirmedPerSec: 720, CPUMsPerOrder: 2.5, RowsPerOrder: 31},
		{Name: "closed 32 clients", Broker: "kafka", Mode: "closed", AchievedRate: 600, ConfirmedPerSec: 580},
		{Name: peerName + ": closed 32 clients", Broker: "kfake", Mode: "closed", AchievedRate: 1500, ConfirmedPerSec: 960, CPUMsPerOrder: 1.5, RowsPerOrder: 5.5, Peer: true},
		{Name: peerName + ": open 250/s", Broker: "kfake", Mode: "open", AchievedRate: 250, ConfirmedPerSec: 207, Peer: true},
	}}
	md := reportHas(t, r,
		"| kfake | closed 32 clients | 750 / 1500 | 720 / 960 | 0.75× |",
		"| 2.5 / 1.5 | 31 / 5.5 |",
		"Best sustained confirmed orders/s on kfake: 720 ",
	)
	if strings.Contains(md, "| kfake | open 250/s | 0 / 250") {
		t.Errorf("a peer's run without orderflow's beside it is listed:\n%s", md)
	}
}

// Where an order's rows go, table by table, for orderflow's 250/s and closed-loop runs:
// inserted / updated (HOT) / deleted per order, and the rows sequential scans read where
// there were any; other runs and the peer's are left out.
func TestTheRowsOfEachTableArePerOrder(t *testing.T) {
	tables := []tableRows{{Table: "orders.outbox", Inserted: 3, Deleted: 3}, {Table: "payments.payments", Inserted: 0.92, Updated: 1, HOT: 0.98, Scanned: 830}}
	r := report{Runs: []runResult{
		{Name: "open 250/s", Broker: "kfake", Mode: "open", Tables: tables},
		{Name: "open 500/s", Broker: "kfake", Mode: "open", Tables: tables},
		{Name: "closed 32 clients", Broker: "kfake", Mode: "closed", Tables: tables[:1]},
		{Name: peerName + ": closed 32 clients", Broker: "kfake", Mode: "closed", Peer: true, Tables: []tableRows{{Table: "pipecmp.orders", Inserted: 1}}},
	}}
	md := reportHas(t, r,
		"| table | kfake, open 250/s | kfake, closed 32 clients |\n",
		"| orders.outbox | 3 / – / 3 | 3 / – / 3 |\n",
		"| payments.payments | 0.92 / 1 (0.98) / – · 830 | – |\n",
	)
	if strings.Contains(md, "pipecmp.orders") {
		t.Errorf("the peer's tables are listed:\n%s", md)
	}
}
