package main

import (
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
	var b strings.Builder
	r.markdown(&b)
	for _, want := range []string{
		"| open 250/s | 250 / 249 |",
		"| 40 / 55 |",
		"Best sustained confirmed orders/s on Apache Kafka: 249",
		"| Apache Kafka | open 250/s |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
