package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/orderflow/common-events/services"
)

var client = &http.Client{
	Timeout: 10 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 30 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	},
}

// orderBody is an order of the customer the bench's token names (any of them).
const orderBody = `{"customer_email":"bench@example.com",
"currency":"EUR","items":[{"sku":"BOOK-42","quantity":2,"unit_price_cents":1999}],"payment_method":"tok_visa"}`

// post is one POST /orders: its latency and the accepted order's id, or the kind of error.
type post struct {
	latency time.Duration
	id      string
	errKind string
	refused bool // 503 overloaded: turned away at once by the admission limits
}

func (tg *target) placeOrder(ctx context.Context) post {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.orderURL+"/orders", bytes.NewBufferString(orderBody))
	if err != nil {
		return post{errKind: "request"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tg.token())
	resp, err := client.Do(req)
	if err != nil {
		return post{latency: time.Since(start), errKind: failure(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return post{latency: time.Since(start), errKind: failure(err)}
	}
	return answered(resp.StatusCode, body, time.Since(start))
}

// failure is the kind of error of a POST that got no whole answer.
func failure(err error) string {
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "connection"
}

// answered is what the answer to a POST /orders says: the order accepted, the POST
// refused by the admission limits (503 overloaded), or an error of its kind.
func answered(status int, body []byte, lat time.Duration) post {
	var o struct {
		ID   string `json:"id"`
		Code string `json:"code"` // of a problem
	}
	decErr := json.Unmarshal(body, &o)
	if status == http.StatusServiceUnavailable && o.Code == "overloaded" {
		return post{latency: lat, refused: true}
	}
	if status != http.StatusAccepted || decErr != nil {
		return post{latency: lat, errKind: fmt.Sprintf("http %d", status)}
	}
	return post{latency: lat, id: o.ID}
}

// openLoop offers rate orders/s for d, each POST sent at its scheduled time whether or
// not earlier ones have been answered, and its latency counted from that time, so a
// slow server cannot hide its queueing (no coordinated omission).
func (tg *target) openLoop(ctx context.Context, name string, rate float64, d time.Duration) (runResult, error) {
	n := int(rate * d.Seconds())
	posts := make([]post, n)
	db0, cpu0 := tg.dbWorkStart(ctx), tg.usage()
	stopProfiles := tg.profile(ctx, name, d)
	defer stopProfiles()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(at); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return runResult{}, ctx.Err()
			}
		}
		wg.Go(func() {
			p := tg.placeOrder(ctx)
			p.latency = time.Since(at) // from the intended send time
			posts[i] = p
		})
	}
	wg.Wait()
	sent := time.Since(start)
	return tg.finish(ctx, runResult{Name: name, Mode: "open", OfferedRate: rate}, posts, sent, cpu0, db0)
}

// closedLoop runs workers clients that each send the next POST as soon as the last one
// is answered, for d: the rate the stack sustains when pushed.
func (tg *target) closedLoop(ctx context.Context, name string, workers int, d time.Duration) (runResult, error) {
	db0, cpu0 := tg.dbWorkStart(ctx), tg.usage()
	stopProfiles := tg.profile(ctx, name, d)
	defer stopProfiles()
	start := time.Now()
	deadline := start.Add(d)
	results := make([][]post, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				p := tg.placeOrder(ctx)
				results[w] = append(results[w], p)
				if p.refused { // as a client should: wait as long as Retry-After says (1 s)
					select {
					case <-time.After(time.Second):
					case <-ctx.Done():
					}
				}
			}
		})
	}
	wg.Wait()
	sent := time.Since(start)
	var posts []post
	for _, r := range results {
		posts = append(posts, r...)
	}
	return tg.finish(ctx, runResult{Name: name, Mode: "closed", Clients: workers}, posts, sent, cpu0, db0)
}

// finish waits for the accepted orders to settle and computes the run's figures.
func (tg *target) finish(ctx context.Context, r runResult, posts []post, sent time.Duration, cpu0 map[string]usage, db0 dbWork) (runResult, error) {
	r.Seconds = sent.Seconds()
	r.Errors = map[string]int{}
	var lats, refused []time.Duration
	var ids []string
	for _, p := range posts {
		switch {
		case p.refused:
			refused = append(refused, p.latency)
		case p.errKind != "":
			r.Errors[p.errKind]++
		default:
			lats = append(lats, p.latency)
			ids = append(ids, p.id)
		}
	}
	r.Posted, r.Accepted, r.Refused = len(posts), len(ids), len(refused)
	r.AchievedRate = float64(len(ids)) / sent.Seconds()
	if r.Mode == "closed" {
		r.OfferedRate = float64(len(posts)) / sent.Seconds()
	}
	r.PostMs, r.RefusedMs = percentiles(lats), percentiles(refused)
	out, err := tg.outcomes(ctx, ids, 60*time.Second)
	if err != nil {
		return r, err
	}
	r.Pending = out.pending
	r.Confirmed = len(out.confirm)
	r.ConfirmMs = percentiles(out.confirm)
	r.EmailMs = percentiles(out.email)
	if out.window > 0 {
		r.ConfirmedPerSec = float64(r.Confirmed) / out.window.Seconds()
		// Two outbox events per order: order.created and its payment outcome.
		r.RelayEventsPerSec = float64(r.Accepted+r.Confirmed) / out.window.Seconds()
	}
	r.Services = tg.usageSince(cpu0)
	if db := tg.dbWorkSince(ctx, db0); db.ok && r.Confirmed > 0 {
		r.StatementsPerOrder = float64(db.statements) / float64(r.Confirmed)
		r.CommitsPerOrder = float64(db.commits) / float64(r.Confirmed)
		r.RowsPerOrder = float64(db.rows) / float64(r.Confirmed)
		r.WALBytesPerOrder = float64(db.walBytes) / float64(r.Confirmed)
		r.TopStatements = db.top
		for name, c := range db.tables {
			if c == (tableCount{}) {
				continue
			}
			per := func(v int64) float64 { return float64(v) / float64(r.Confirmed) }
			r.Tables = append(r.Tables, tableRows{name, per(c.inserted), per(c.updated), per(c.hot), per(c.deleted), per(c.scanned)})
		}
		slices.SortFunc(r.Tables, func(a, b tableRows) int { return strings.Compare(a.Table, b.Table) })
	}
	if r.Confirmed > 0 {
		var cpu float64 // the services and PostgreSQL: the work an order costs, not the load generator's
		for _, s := range append(services.Names(), peerName, "postgres") {
			cpu += r.Services[s].CPUSeconds
		}
		r.CPUMsPerOrder = cpu * 1000 / float64(r.Confirmed)
		r.PostgresCPUMsPerOrder = r.Services["postgres"].CPUSeconds * 1000 / float64(r.Confirmed)
	}
	return r, nil
}

// unsafeInName is what a file name here does without: all but letters and digits.
var unsafeInName = regexp.MustCompile(`[^A-Za-z0-9]+`)

// percentiles returns p50, p95, p99 and max in milliseconds.
func percentiles(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		i = max(0, min(i, len(s)-1))
		return float64(s[i].Microseconds()) / 1000
	}
	return latency{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: float64(s[len(s)-1].Microseconds()) / 1000}
}

// profile records a CPU profile of each service for d, the run called name, when
// BENCH_PROFILE names a folder: BROKER-RUN-SERVICE.pprof there. The returned func waits
// for them to be written.
func (tg *target) profile(ctx context.Context, name string, d time.Duration) func() {
	if tg.profileDir == "" || tg.pprof == nil {
		return func() {}
	}
	name = strings.Trim(unsafeInName.ReplaceAllString(tg.broker+"-"+name, "-"), "-")
	var wg sync.WaitGroup
	for service, addr := range tg.pprof {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds()))
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := (&http.Client{Timeout: d + 10*time.Second}).Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			_ = os.MkdirAll(tg.profileDir, 0o755)
			_ = os.WriteFile(filepath.Join(tg.profileDir, name+"-"+service+".pprof"), b, 0o644)
		})
	}
	return wg.Wait
}
