package main

import (
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
