package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The HTTP edge against one hostile client, on a running stack with the default limits:
// nobody can lock the others out or blow up order-service's memory, and a burst is served.

// edgeTarget is a stack whose order-service has the default per-client limits (the
// scenarios raise them) and the given settings.
func edgeTarget(t *testing.T, order, payment map[string]string) *target {
	env := map[string]string{"ORDER_RATE_LIMIT": "10", "HTTP_RATE_LIMIT": "100", "HTTP_RATE_BURST": "200"}
	for k, v := range order {
		env[k] = v
	}
	return newTarget(t, map[string]map[string]string{"order-service": env, "payment-service": payment})
}

// edgeClient sends as one customer, never retrying: what a client gets is what is checked.
var edgeClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1000}}

type edgeAnswer struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
}

func (a edgeAnswer) code() string {
	var p struct{ Code string }
	_ = json.Unmarshal(a.body, &p)
	return p.Code
}

func edgeSend(t *testing.T, token, method, url, body string, headers ...string) edgeAnswer {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	start := time.Now()
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Error(err)
		return edgeAnswer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return edgeAnswer{status: resp.StatusCode, header: resp.Header, body: b, took: time.Since(start)}
}

func edgeOrder(payment string) string {
	return fmt.Sprintf(`{"customer_email":"edge-%x@example.com","currency":"EUR","items":[{"sku":"BOOK-42","quantity":1,"unit_price_cents":1999}],"payment_method":%q}`,
		time.Now().UnixNano(), payment)
}

// One customer's trickling bodies and its thousand event streams leave another customer
// served; a wait and a stream longer than HTTP_READ_TIMEOUT still end with the outcome.
func TestEdgeOneCustomerCannotLockAnotherOut(t *testing.T) {
	tg := edgeTarget(t, map[string]string{"HTTP_READ_TIMEOUT": "3s"}, map[string]string{"PROVIDER_LATENCY": "4s"})
	hog, other := customerToken(t, uuid.NewString()), customerToken(t, uuid.NewString())

	// 64 sockets send a POST /orders header and then a body byte every 200 ms.
	addr := strings.TrimPrefix(tg.order, "http://")
	stop := make(chan struct{})
	var trickling sync.WaitGroup
	for range 64 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /orders HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{", addr, hog)
		trickling.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
					_, _ = conn.Write([]byte(" "))
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	for i := range 10 {
		if a := edgeSend(t, other, http.MethodPost, tg.order+"/orders", edgeOrder("tok_visa")); a.status != http.StatusAccepted {
			t.Errorf("order %d of another customer while 64 bodies trickle in = %d %s, want 202", i, a.status, a.body)
		}
	}
	close(stop)
	trickling.Wait()

	// A thousand event streams of the hog's own pending order (the charge takes 4 s).
	hogOrder := edgeSend(t, hog, http.MethodPost, tg.order+"/orders", edgeOrder("tok_visa"))
	if hogOrder.status != http.StatusAccepted {
		t.Fatalf("the hog's order = %d %s", hogOrder.status, hogOrder.body)
	}
	var o orderResp
	_ = json.Unmarshal(hogOrder.body, &o)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var streams sync.WaitGroup
	var open, limited, confirmed atomic.Int32
	for range 1000 {
		streams.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tg.order+"/orders/"+o.ID+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+hog)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := edgeClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
					limited.Add(1)
				}
				return
			}
			open.Add(1)
			b, _ := io.ReadAll(resp.Body)
			if strings.Contains(string(b), `"to":"CONFIRMED"`) {
				confirmed.Add(1)
			}
		})
	}
	time.Sleep(time.Second) // the streams are opened, or turned away
	// Another customer asks to wait for its order's outcome, longer than HTTP_READ_TIMEOUT.
	a := edgeSend(t, other, http.MethodPost, tg.order+"/orders", edgeOrder("tok_visa"), "Prefer", "wait=20")
	_ = json.Unmarshal(a.body, &o)
	if a.status != http.StatusCreated || o.Status != "CONFIRMED" || a.header.Get("Preference-Applied") != "wait=20" {
		t.Errorf("another customer's POST with Prefer: wait=20 beside the hog's streams = %d %s (Preference-Applied %q), want 201 CONFIRMED after the 4 s charge",
			a.status, a.body, a.header.Get("Preference-Applied"))
	}
	t.Logf("the answer came after %s, longer than HTTP_READ_TIMEOUT (3s)", a.took.Round(time.Millisecond))
	streams.Wait()
	t.Logf("the hog's 1000 streams: %d open, %d turned away, %d saw CONFIRMED", open.Load(), limited.Load(), confirmed.Load())
	if open.Load() == 0 || open.Load() > 100 || confirmed.Load() != open.Load() || open.Load()+limited.Load() != 1000 {
		t.Errorf("the hog's streams: %d open (want 1 to its share of 100, every one ending CONFIRMED: %d did), %d turned away with 429 or 503",
			open.Load(), confirmed.Load(), limited.Load())
	}
}

// A burst of 200 customers ordering at once at an idle service is served without a
// refusal; one customer over its order rate gets 429 with the RateLimit headers.
func TestEdgeBurstsAreServedAndRatesLimited(t *testing.T) {
	tg := edgeTarget(t, nil, nil)
	toks := make([]string, 200)
	for i := range toks {
		toks[i] = customerToken(t, uuid.NewString())
	}
	edgeSend(t, toks[0], http.MethodPost, tg.order+"/orders", edgeOrder("tok_visa")) // connections and the pool warmed
	var wg sync.WaitGroup
	answers := make([]edgeAnswer, len(toks))
	start := make(chan struct{})
	for i, tok := range toks {
		wg.Go(func() {
			<-start
			answers[i] = edgeSend(t, tok, http.MethodPost, tg.order+"/orders", edgeOrder("tok_visa"))
		})
	}
	close(start)
	wg.Wait()
	refusedN := 0
	for _, a := range answers {
		if a.status != http.StatusAccepted {
			refusedN++
			t.Logf("refused: %d %s", a.status, a.body)
		}
	}
	if refusedN > 0 {
		t.Errorf("%d of 200 orders placed at once at an idle service refused, want none", refusedN)
	}

	// ORDER_RATE_LIMIT 10/s, ORDER_RATE_BURST 50: the 51st order at once is over the rate.
	tok := toks[1]
	var last edgeAnswer
	n := 0
	for ; n < 80; n++ {
		if last = edgeSend(t, tok, http.MethodPost, tg.order+"/orders", edgeOrder("tok_visa")); last.status != http.StatusAccepted {
			break
		}
	}
	retry, _ := strconv.Atoi(last.header.Get("Retry-After"))
	if n < 50 || n > 65 || last.status != http.StatusTooManyRequests || last.code() != "rate_limited" || retry < 1 ||
		last.header.Get("RateLimit-Policy") != `"orders";q=50;w=5` || !strings.HasPrefix(last.header.Get("RateLimit"), `"orders";r=0;t=`) {
		t.Errorf("after %d orders: %d %s, Retry-After %q, RateLimit-Policy %q, RateLimit %q; want 429 rate_limited after the burst of 50 and what came back meanwhile, with Retry-After and the RateLimit headers",
			n, last.status, last.body, last.header.Get("Retry-After"), last.header.Get("RateLimit-Policy"), last.header.Get("RateLimit"))
	}
	if a := edgeSend(t, tok, http.MethodGet, tg.order+"/orders?limit=1", ""); a.status != http.StatusOK || !strings.HasPrefix(a.header.Get("RateLimit"), `"default";`) {
		t.Errorf("the same customer's listing = %d (RateLimit %q), want 200 under the default policy", a.status, a.header.Get("RateLimit"))
	}
	time.Sleep(time.Duration(retry) * time.Second)
	if a := edgeSend(t, tok, http.MethodPost, tg.order+"/orders", edgeOrder("tok_visa")); a.status != http.StatusAccepted {
		t.Errorf("after Retry-After = %d %s, want 202", a.status, a.body)
	}
}

// Twenty customers each sending a 1 MiB order of empty items at once get a 422 of a few
// KiB, and order-service stays under 100 MB.
func TestEdgeHugeOrdersKeepAnswersAndMemorySmall(t *testing.T) {
	tg := edgeTarget(t, nil, nil)
	pid := tg.control().Service("order-service").PID()
	before := peakRSS(t, pid)
	var b strings.Builder
	b.WriteString(`{"customer_email":"huge@example.com","currency":"EUR","payment_method":"tok_visa","items":[{}`)
	for b.Len() < 1<<20-8 {
		b.WriteString(",{}")
	}
	b.WriteString("]}")
	body := b.String()
	toks := make([]string, 20)
	for i := range toks {
		toks[i] = customerToken(t, uuid.NewString())
	}
	var wg sync.WaitGroup
	answers := make([]edgeAnswer, len(toks))
	for i, tok := range toks {
		wg.Go(func() {
			// As a client should: a refusal for want of room (503 overloaded) is sent
			// again after Retry-After; on a busy machine the budget of large bodies can
			// keep one waiting longer than it may.
			for attempt := 1; ; attempt++ {
				answers[i] = edgeSend(t, tok, http.MethodPost, tg.order+"/orders", body)
				if answers[i].status != http.StatusServiceUnavailable || answers[i].code() != "overloaded" || attempt == 5 {
					return
				}
				time.Sleep(time.Second)
			}
		})
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != http.StatusUnprocessableEntity || len(a.body) > 8<<10 {
			t.Errorf("huge order %d = %d of %d bytes, want 422 of a few KiB", i, a.status, len(a.body))
		}
	}
	peak := peakRSS(t, pid)
	t.Logf("order-service's peak RSS: %d MB (%d MB before); one answer: %s", peak>>20, before>>20, answers[0].body)
	if peak > 100<<20 {
		t.Errorf("order-service's peak RSS = %d MB, want under 100 MB", peak>>20)
	}
}

// peakRSS is the process's high-water mark of resident memory (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
