package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// independentRun is the name of the run that checks the bench's own figure with a load
// generator no one here wrote (vegeta): open loop at the best rate the bench's runs on
// the broker sustained before it.
const independentRun = "vegeta at the best sustained rate"

// vegetaLoop offers rate orders/s for d through vegeta's attacker, an open loop of its
// own (a hit at each tick of its pacer, more workers when those it has are all waiting),
// and times each POST as vegeta does, from when it sent it. The orders it placed are
// followed to CONFIRMED as the bench's own are.
func (tg *target) vegetaLoop(ctx context.Context, rate float64, d time.Duration) (runResult, error) {
	db0, cpu0 := tg.dbWorkStart(ctx), tg.usage()
	stopProfiles := tg.profile(ctx, independentRun, d)
	defer stopProfiles()
	posts, sent, err := tg.vegetaPosts(ctx, rate, d)
	if err != nil {
		return runResult{}, err
	}
	return tg.finish(ctx, runResult{Name: independentRun, Mode: "open", OfferedRate: rate, Independent: true}, posts, sent, cpu0, db0)
}

// vegetaPosts has vegeta POST orders to tg at rate a second for d, and returns what came
// of each and how long the sending took.
func (tg *target) vegetaPosts(ctx context.Context, rate float64, d time.Duration) ([]post, time.Duration, error) {
	targeter := func(t *vegeta.Target) error {
		t.Method, t.URL, t.Body = http.MethodPost, tg.orderURL+"/orders", []byte(orderBody)
		t.Header = http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + tg.token()}}
		return nil
	}
	// As the bench's own client: no proxy, HTTP/1.1, connections kept.
	attacker := vegeta.NewAttacker(vegeta.Timeout(client.Timeout), vegeta.KeepAlive(true), vegeta.HTTP2(false), vegeta.Proxy(nil))
	start := time.Now()
	// A whole number of hits a second, and at least one: vegeta takes 0 for no limit.
	results := attacker.Attack(targeter, vegeta.Rate{Freq: max(1, int(rate+0.5)), Per: time.Second}, d, independentRun)
	var posts []post
	for {
		select {
		case res, ok := <-results:
			if !ok {
				return posts, time.Since(start), nil
			}
			posts = append(posts, vegetaPost(res))
		case <-ctx.Done():
			attacker.Stop()
			go func() { // its workers finish the hits under way, then the channel closes
				for range results {
				}
			}()
			return nil, 0, ctx.Err()
		}
	}
}

// vegetaPost is what one of vegeta's results says of its POST.
func vegetaPost(res *vegeta.Result) post {
	if res.Code == 0 { // no answer: vegeta's error says why, in words
		kind := "connection"
		for _, timeout := range []string{"Timeout exceeded", "deadline exceeded", "i/o timeout"} {
			if strings.Contains(res.Error, timeout) {
				kind = "timeout"
			}
		}
		return post{latency: res.Latency, errKind: kind}
	}
	return answered(int(res.Code), res.Body, res.Latency)
}

// bestSustained is the most confirmed orders a second of rep's runs so far on broker:
// of the bench's own, none left pending.
func bestSustained(runs []runResult, broker string) float64 {
	best := 0.0
	for _, x := range runs {
		if x.Broker == broker && sustained(x) {
			best = max(best, x.ConfirmedPerSec)
		}
	}
	return best
}

// sustained says run x is one of the bench's own load on orderflow that left no order
// pending: the runs "best sustained" is taken from.
func sustained(x runResult) bool { return !x.Peer && !x.Independent && x.Pending == 0 }

// errVegetaAlone is BENCH_RATES with vegeta and no load before it to take its rate from.
var errVegetaAlone = errors.New("BENCH_RATES: vegeta runs at the best rate of the loads before it; give it at least one (say c64,vegeta)")

// independent prints, for each vegeta run, what it offered and what came of it: whether
// an independent client sees the rate the bench reports as sustained, each order it got
// accepted confirmed and none left behind.
func (r report) independent(w io.Writer) {
	for _, x := range r.Runs {
		if !x.Independent {
			continue
		}
		outcome := "every accepted order confirmed, none pending"
		if x.Pending > 0 || x.Confirmed < x.Accepted {
			outcome = fmt.Sprintf("%d accepted orders not confirmed, %d of them still pending", x.Accepted-x.Confirmed, x.Pending)
		}
		fmt.Fprintf(w, "vegeta on %s (a load generator no one here wrote, open loop) at the best rate sustained before it, %.0f orders/s for %.0f s: %d POSTs, %d accepted (%.0f/s, %.0f%% of those offered), %d refused, %d failed; %.0f confirmed/s from the first accepted to the last confirmed (%.0f%% of the accepted rate: a backlog would stretch the time and lower it), POST→CONFIRMED p99 %s ms; %s.\n",
			brokerNames[x.Broker], x.OfferedRate, x.Seconds, x.Posted, x.Accepted, x.AchievedRate, 100*float64(x.Accepted)/max(1, float64(x.Posted)),
			x.Refused, x.Posted-x.Accepted-x.Refused, x.ConfirmedPerSec, 100*x.ConfirmedPerSec/max(1, x.AchievedRate), ms(x.ConfirmMs.P99), outcome)
	}
}
