package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/orderflow/devstack/testenv"
)

// fromTheStart are the series TestEveryServiceServesItsMetrics wants of each service, by
// name, less orderflow_order_decision_seconds: order-service's consume package creates
// its series at the first decision.
var fromTheStart = func() map[string][]string {
	common := []string{
		"orderflow_http_requests_total", "orderflow_http_request_duration_seconds", "orderflow_db_pool_connections",
		"orderflow_db_pool_acquires_total", "orderflow_outbox_rows_waiting", "orderflow_outbox_oldest_row_age_seconds",
		"orderflow_consumer_records_total", "orderflow_consumer_handler_duration_seconds", "orderflow_consumer_records_in_flight",
		"orderflow_consumer_lag_records{", "orderflow_metrics_reading_last_success_timestamp_seconds{", "go_goroutines",
		"process_cpu_seconds_total",
	}
	published := []string{"orderflow_outbox_events_published_total", "orderflow_outbox_publish_latency_seconds"}
	return map[string][]string{
		"order-service":        slices.Concat(common, published, []string{"orderflow_orders{", "orderflow_orders_oldest_pending_age_seconds{"}),
		"payment-service":      slices.Concat(common, published, []string{"orderflow_payments{"}),
		"notification-service": slices.Concat(common, []string{"orderflow_notifications{"}),
	}
}()

func (tg *target) services() map[string]string {
	return map[string]string{"order-service": tg.order, "payment-service": tg.payment, "notification-service": tg.notification}
}

// scrape GETs url's /metrics as Prometheus does, without a token, and times it.
func scrape(url string) ([]byte, time.Duration, error) {
	start := time.Now()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /metrics = %d", resp.StatusCode)
	}
	return body, took, err
}

// Right after start, a scrape answers at once from what the service read in the
// background, and has every series, the consumer lag included: it used to wait up to 3 s
// for the lag, and to leave the lag out for the first seconds.
func TestScrapeAnswersAtOnceWithEverySeries(t *testing.T) {
	tg := newTarget(t, nil)
	for name, url := range tg.services() {
		var took []time.Duration
		for i := range 30 {
			body, d, err := scrape(url)
			if err != nil {
				t.Fatalf("%s: scrape %d: %v", name, i+1, err)
			}
			took = append(took, d)
			for _, series := range fromTheStart[name] {
				if !bytes.Contains(body, []byte("\n"+series)) {
					t.Errorf("%s: scrape %d has no %s", name, i+1, series)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		sorted := slices.Sorted(slices.Values(took))
		t.Logf("%s: 30 scrapes, median %s, slowest %s", name, sorted[len(sorted)/2], sorted[len(sorted)-1])
		for i, d := range took {
			if d >= 50*time.Millisecond {
				t.Errorf("%s: scrape %d took %s, want under 50 ms", name, i+1, d)
			}
		}
	}
}

// acquired is how many connections the service at url has taken from its pool.
func acquired(t *testing.T, url string) float64 {
	t.Helper()
	body, _, err := scrape(url)
	if err != nil {
		t.Fatal(err)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	f := fams["orderflow_db_pool_acquires_total"]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("%s serves no orderflow_db_pool_acquires_total", url)
	}
	return f.GetMetric()[0].GetCounter().GetValue()
}

// A flood of scrapes and probes — 200 at a time for 2 s, on every service — takes no
// connection from the database pools beyond what the stack takes without it (the
// background readings, the orders placed), is held to the probes' rate (HTTP_PROBE_RATE),
// and orders placed meanwhile are answered 202. Every scrape used to run its queries, and
// every probe a ping; and answered as fast as it asked, the flood took the CPU the orders
// needed.
func TestScrapeFloodTakesNoConnection(t *testing.T) {
	tg := newTarget(t, nil)
	services := tg.services()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range services {
			if !yield(n) {
				return
			}
		}
	})
	const window = 2 * time.Second
	flooder := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}, Timeout: 10 * time.Second}
	defer flooder.CloseIdleConnections()

	// measure places an order every 100 ms for window, each at its time whatever the
	// others take, under a flood or not, and waits a second for their payments and
	// emails; it returns the connections each service took meanwhile, how long each
	// POST took from its time, and how many scrapes and probes the flood had answered.
	measure := func(flood bool) (map[string]float64, []time.Duration, int64) {
		before := map[string]float64{}
		for _, n := range names {
			before[n] = acquired(t, services[n])
		}
		ctx, cancel := context.WithTimeout(context.Background(), window)
		defer cancel()
		var floodWG sync.WaitGroup
		var answered atomic.Int64
		if flood {
			paths := []string{"/metrics", "/readyz"}
			for i := range 200 {
				url := services[names[i%len(names)]] + paths[i/len(names)%2]
				floodWG.Go(func() {
					for ctx.Err() == nil {
						req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
						resp, err := flooder.Do(req)
						if err != nil {
							continue // the window closed under it
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						answered.Add(1)
					}
				})
			}
		}
		const orders = int(window / (100 * time.Millisecond))
		posts := make([]time.Duration, orders)
		var postWG sync.WaitGroup
		start := time.Now()
		for i := range orders {
			at := start.Add(time.Duration(i) * 100 * time.Millisecond)
			time.Sleep(time.Until(at))
			postWG.Go(func() {
				if err := placeOnce(tg.order); err != nil {
					t.Errorf("an order placed (flood %v): %v", flood, err)
				}
				posts[i] = time.Since(at)
			})
		}
		postWG.Wait()
		floodWG.Wait()
		time.Sleep(time.Second)
		took := map[string]float64{}
		for _, n := range names {
			took[n] = acquired(t, services[n]) - before[n]
		}
		return took, posts, answered.Load()
	}
	quiet, quietPosts, _ := measure(false)
	loud, loudPosts, flooded := measure(true)

	t.Logf("flood: %d scrapes and probes answered in %s", flooded, window)
	t.Logf("POST /orders p99 of %d: %s without the flood, %s with it", len(loudPosts), p99(quietPosts), p99(loudPosts))
	// Per service, the burst (twice the rate) and the rate for the window, with a
	// second's owed; and each of the 200 loops refused at most once a second.
	const rate = 20
	if limit := int64(len(names)*(2*rate+rate*(int(window/time.Second)+1)) + 200*(int(window/time.Second)+1)); flooded > limit {
		t.Errorf("the flood had %d answers in %s, want at most %d: held to %d a second per service and client", flooded, window, limit, rate)
	}
	for _, n := range names {
		// The background readings run on their own clock (the readiness check every
		// second, the metrics every 5 s), and the consumers take one a batch: a window
		// may hold a few more than another.
		allowed := quiet[n] + 10
		t.Logf("%s: %v connections taken without the flood, %v with it", n, quiet[n], loud[n])
		if loud[n] > allowed {
			t.Errorf("%s took %v connections from its pool under the flood, want at most %v (%v without it)", n, loud[n], allowed, quiet[n])
		}
	}
}

// placeOnce posts one order as the demo customer, once: a refusal is an error.
func placeOnce(orderURL string) error {
	_, err := placeOrderWith(http.DefaultClient, orderURL, orderBody("flood@example.com", "tok_visa"), "Authorization", "Bearer "+tokens.customer)
	return err
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)-1, len(s)*99/100)]
}

// A hundred probes while the broker does not answer metadata requests leave no goroutine
// behind, and the probe says which dependency it is; once the broker answers again, the
// service is ready again. A probe used to start a metadata refresh it did not wait for,
// which lived on until the client's own timeouts.
func TestScrapeReadyzLeavesNoGoroutine(t *testing.T) {
	b := testenv.Kafka(t)
	if b.Cluster == nil {
		t.Skip("stalls the broker's answers, which only the in-process kfake allows")
	}
	s := newStack(t, b, nil)
	var stalled atomic.Bool
	// Only the requests for every topic's metadata, as a readiness check asks, go
	// unanswered (the client waits): the consumers' and producers' own go on.
	b.Cluster.ControlKey(kmsg.Metadata.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster.KeepControl()
		req, ok := r.(*kmsg.MetadataRequest)
		return nil, nil, ok && req.Topics == nil && stalled.Load()
	})
	stalled.Store(true)
	defer stalled.Store(false)
	ready := func() (int, string) {
		resp, err := http.Get(s.url("order", "/readyz"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	eventually(t, func() string {
		if code, body := ready(); code != http.StatusServiceUnavailable || body != `{"error":"the broker does not answer","status":"unavailable"}` {
			return fmt.Sprintf("GET /readyz with the broker stalled = %d %s, want 503 naming the broker", code, body)
		}
		return ""
	})

	prober := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	settled := func() int {
		prober.CloseIdleConnections()
		time.Sleep(500 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	before := settled()
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			resp, err := prober.Get(s.url("order", "/readyz"))
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	after := settled()
	t.Logf("goroutines: %d before 100 probes, %d after", before, after)
	if after-before > 20 {
		t.Errorf("100 probes left %d goroutines behind", after-before)
	}

	stalled.Store(false)
	eventually(t, func() string {
		if code, body := ready(); code != http.StatusOK {
			return fmt.Sprintf("GET /readyz with the broker back = %d %s, want 200", code, body)
		}
		return ""
	})
}

var lagLine = regexp.MustCompile(`(?m)^orderflow_consumer_lag_records\{[^}]*\} (\S+)$`)

// While the broker is away the consumer lag cannot be read: every partition's is served
// as NaN (not an old number, not nothing) and its reading's timestamp stops; once the
// broker is back it is read again.
func TestScrapeLagWhileTheBrokerIsAway(t *testing.T) {
	parallel(t)
	b := testenv.RestartableKafka(t)
	s := newStack(t, *b, nil)
	// lag returns the lag values order-service serves, and when it last read them.
	lag := func() ([]string, string) {
		body, _, err := scrape("http://" + s.addrs["order"])
		if err != nil {
			t.Fatal(err)
		}
		var values []string
		for _, m := range lagLine.FindAllStringSubmatch(string(body), -1) {
			values = append(values, m[1])
		}
		at := regexp.MustCompile(`(?m)^orderflow_metrics_reading_last_success_timestamp_seconds\{reading="consumer_lag:order-service",[^}]*\} (\S+)$`).FindStringSubmatch(string(body))
		if len(values) == 0 || at == nil {
			t.Fatalf("order-service serves no consumer lag or no time it was read:\n%s", body)
		}
		return values, at[1]
	}
	if values, at := lag(); slices.Contains(values, "NaN") || at == "0" {
		t.Fatalf("with the broker up, lag %v read at %s", values, at)
	}

	b.Stop()
	var stopped string
	eventually(t, func() string {
		values, at := lag()
		if slices.ContainsFunc(values, func(v string) bool { return v != "NaN" }) {
			return fmt.Sprintf("lag %v with the broker away, want NaN for every partition", values)
		}
		stopped = at
		return ""
	})
	time.Sleep(6 * time.Second) // more than a reading's interval
	if values, at := lag(); at != stopped || slices.ContainsFunc(values, func(v string) bool { return v != "NaN" }) {
		t.Errorf("with the broker away, lag %v read at %s, want NaN read at %s", values, at, stopped)
	}

	b.Start()
	eventually(t, func() string {
		if values, at := lag(); at == stopped || slices.Contains(values, "NaN") {
			return fmt.Sprintf("lag %v read at %s with the broker back, want it read again", values, at)
		}
		return ""
	})
}
