package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// vegeta's POSTs reach the order API with a customer's token and an order, each at its
// tick, and each answer counts as the bench's own would: accepted with its id, refused
// by the admission limits, or failed.
func TestVegetaPostsOrdersAndReadsTheAnswers(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/orders" || r.Header.Get("Authorization") != "Bearer customer" ||
			r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "not an order", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch i := n.Add(1); i % 4 {
		case 0:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"code":"overloaded"}`)
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"id":"order-%d"}`, i)
		}
	}))
	defer srv.Close()
	tg := &target{orderURL: srv.URL, tokens: []string{"customer"}}

	posts, sent, err := tg.vegetaPosts(context.Background(), 100, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(posts) < 90 || len(posts) > 110 || sent < 900*time.Millisecond {
		t.Fatalf("%d POSTs in %s, want about 100 in a second", len(posts), sent)
	}
	accepted, refused, failed := 0, 0, 0
	for _, p := range posts {
		switch {
		case p.refused:
			refused++
		case p.errKind == "http 500":
			failed++
		case p.id != "" && p.errKind == "":
			accepted++
		default:
			t.Errorf("a POST read as %+v", p)
		}
	}
	near := func(got, want int) bool { return got >= want-1 && got <= want+1 }
	if int64(len(posts)) != n.Load() || !near(accepted, len(posts)/2) || !near(refused, len(posts)/4) || !near(failed, len(posts)/4) {
		t.Errorf("%d POSTs (%d served): %d accepted, %d refused, %d failed; want half, a quarter, a quarter", len(posts), n.Load(), accepted, refused, failed)
	}
}

// The vegeta run checks the best sustained rate; it does not make it, and the report says
// whether every order it got accepted was confirmed.
func TestVegetaChecksTheBestSustainedRateAndDoesNotSetIt(t *testing.T) {
	own := runResult{Name: "closed 64 clients", Broker: "kfake", Mode: "closed", ConfirmedPerSec: 1500}
	kept := runResult{Name: independentRun, Broker: "kfake", Mode: "open", Independent: true, OfferedRate: 1500, Seconds: 10,
		Posted: 15000, Accepted: 14900, Refused: 100, Confirmed: 14900, AchievedRate: 1490, ConfirmedPerSec: 1600}
	reportHas(t, report{Yardstick: yardstickResult{TPS: 10000}, Runs: []runResult{own, kept}},
		"Best sustained confirmed orders/s on kfake: 1500 =",
		"vegeta on kfake (a load generator no one here wrote, open loop) at the best rate sustained before it, 1500 orders/s for 10 s: 15000 POSTs, 14900 accepted (1490/s, 99% of those offered), 100 refused, 0 failed",
		"every accepted order confirmed, none pending.")
	if got := bestSustained([]runResult{own, kept}, "kfake"); got != 1500 {
		t.Errorf("best sustained with the vegeta run: %v, want the bench's own 1500", got)
	}

	behind := kept
	behind.Confirmed, behind.Pending = 14850, 50
	reportHas(t, report{Yardstick: yardstickResult{TPS: 10000}, Runs: []runResult{own, behind}},
		"50 accepted orders not confirmed, 50 of them still pending.")
	if got := bestSustained([]runResult{kept}, "kfake"); got != 0 {
		t.Errorf("best sustained of the vegeta run alone: %v, want none", got)
	}
	var p plan
	if err := p.onlyRates("vegeta", false); err == nil {
		t.Error("BENCH_RATES=vegeta alone: no error, want one (no load before it to take its rate from)")
	}
	if err := p.onlyRates("c64,vegeta", false); err != nil || !p.independent || len(p.workers) != 1 {
		t.Errorf("BENCH_RATES=c64,vegeta: %v, independent %t, closed loops %v", err, p.independent, p.workers)
	}
}
