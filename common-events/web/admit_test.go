package web_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
)

// edge is a service behind Identify and Admit, as platform.Serve sets them up, whose
// routes hold their requests until told: GET /work until work is closed, GET /wait (a
// handler that waits, as a stream does) until waits is closed, POST /work reads the body
// and answers at once, GET /nap takes nap.
type edge struct {
	t           *testing.T
	url         string
	is          *issuer.Issuer
	work, waits chan struct{}
	started     chan string
	mu          sync.Mutex
	tokens      map[string]string
}

func newEdge(t *testing.T, l web.Limits, readTimeout, nap time.Duration) *edge {
	t.Helper()
	ed := &edge{t: t, is: testenv.Issuer(t), work: make(chan struct{}), waits: make(chan struct{}),
		started: make(chan string, 1000), tokens: map[string]string{}}
	v := auth.NewVerifier(auth.Config{Issuer: ed.is.URL, Audience: ed.is.Audience, JWKSURL: ed.is.JWKSURL()}, nil)
	e := web.NewEcho(slog.New(slog.DiscardHandler), nil)
	e.Use(web.Identify(v), web.Admit(l))
	e.GET("/work", func(c echo.Context) error {
		ed.started <- "work"
		select {
		case <-ed.work:
		case <-c.Request().Context().Done():
		}
		return c.NoContent(http.StatusNoContent)
	})
	e.GET("/wait", func(c echo.Context) error {
		if err := web.Wait(c); err != nil {
			return err
		}
		ed.started <- "wait"
		select {
		case <-ed.waits:
		case <-c.Request().Context().Done():
		}
		return c.NoContent(http.StatusNoContent)
	})
	e.POST("/work", func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		return c.String(http.StatusOK, fmt.Sprint(len(b)))
	})
	e.POST("/hold", func(c echo.Context) error {
		_, _ = io.ReadAll(c.Request().Body)
		ed.started <- "hold"
		select {
		case <-ed.work:
		case <-c.Request().Context().Done():
		}
		return c.NoContent(http.StatusNoContent)
	})
	e.GET("/nap", func(c echo.Context) error {
		time.Sleep(nap)
		return c.NoContent(http.StatusNoContent)
	})
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	srv := httptest.NewUnstartedServer(e)
	srv.Config.ReadTimeout = readTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	ed.url = srv.URL
	return ed
}

// token is a customer's bearer token, minted once per name.
func (ed *edge) token(who string) string {
	ed.mu.Lock()
	defer ed.mu.Unlock()
	if tok, ok := ed.tokens[who]; ok {
		return tok
	}
	tok, err := ed.is.Mint(who, []string{auth.ScopeCustomer}, time.Hour)
	if err != nil {
		ed.t.Fatal(err)
	}
	ed.tokens[who] = tok
	return tok
}

type answer struct {
	status int
	header http.Header
	code   string // of a problem
	took   time.Duration
}

// do sends method path as who (no token when who is empty) with headers as name, value
// pairs.
func (ed *edge) do(who, method, path, body string, headers ...string) answer {
	req, _ := http.NewRequest(method, ed.url+path, strings.NewReader(body))
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+ed.token(who))
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ed.t.Error(err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var p struct{ Code string }
	_ = json.Unmarshal(b, &p)
	return answer{status: resp.StatusCode, header: resp.Header, code: p.Code, took: time.Since(start)}
}

// hold starts a request that the handler holds, and returns once it is being handled.
func (ed *edge) hold(who, path string, done chan<- answer) {
	go func() { done <- ed.do(who, http.MethodGet, path, "") }()
	select {
	case <-ed.started:
	case <-time.After(10 * time.Second):
		ed.t.Fatalf("%s for %s never started", path, who)
	}
}

func refused(a answer, status int, code string) bool {
	return a.status == status && a.code == code && a.header.Get("Retry-After") != ""
}

// Beyond the limits a request is refused at once, 503 overloaded with Retry-After, while
// those admitted go on; a handler that waits moves to places of its own, the exempt paths
// are never refused, and a place is free again when its request ends.
func TestAdmitRefusesBeyondTheLimits(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 2, Waiting: 1, Exempt: []string{"/healthz"}}, time.Minute, 0)
	done := make(chan answer, 10)
	ed.hold("a", "/wait", done) // the waiting place
	ed.hold("b", "/work", done) // the two working places
	ed.hold("c", "/work", done)
	if a := ed.do("d", http.MethodGet, "/work", ""); !refused(a, http.StatusServiceUnavailable, web.CodeOverloaded) {
		t.Errorf("work beyond the working places = %d %s, want 503 overloaded with Retry-After", a.status, a.code)
	}
	if a := ed.do("d", http.MethodGet, "/healthz", ""); a.status != http.StatusOK {
		t.Errorf("exempt path while full = %d, want 200", a.status)
	}
	close(ed.work)
	for range 2 {
		if a := <-done; a.status != http.StatusNoContent {
			t.Errorf("an admitted request = %d, want 204", a.status)
		}
	}
	if a := ed.do("d", http.MethodGet, "/wait", ""); !refused(a, http.StatusServiceUnavailable, web.CodeOverloaded) {
		t.Errorf("a wait beyond the waiting places = %d %s, want 503 overloaded with Retry-After", a.status, a.code)
	}
	close(ed.waits)
	if a := <-done; a.status != http.StatusNoContent {
		t.Errorf("the admitted wait = %d, want 204", a.status)
	}
	if a := ed.do("d", http.MethodGet, "/work", ""); a.status != http.StatusNoContent {
		t.Errorf("once the places are free again = %d, want 204", a.status)
	}
}

// The route decides where a request counts, not a header the client chooses: Prefer:
// wait (or Accept: text/event-stream) on a handler that does not wait is ordinary work.
func TestAHeaderDoesNotMoveARequestOutOfTheWorkingPlaces(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 1, Waiting: 100}, time.Minute, 0)
	done := make(chan answer, 1)
	ed.hold("a", "/work", done)
	for _, h := range [][]string{{"Prefer", "wait=1"}, {"Accept", "text/event-stream"}} {
		if a := ed.do("b", http.MethodGet, "/work", "", h...); !refused(a, http.StatusServiceUnavailable, web.CodeOverloaded) {
			t.Errorf("work with %s while the working places are full = %d %s, want 503 overloaded", h, a.status, a.code)
		}
	}
	close(ed.work)
	<-done
}

// Bodies still arriving hold no place: 16 sockets of one client trickling a body leave
// the one working place to another client.
func TestBodiesStillArrivingHoldNoPlace(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 1, Waiting: 1}, 3*time.Second, 0)
	tok := ed.token("slow")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 16 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(ed.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /work HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", tok)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
					_, _ = conn.Write([]byte(" "))
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // every trickling request is in
	for i := range 5 {
		if a := ed.do("other", http.MethodPost, "/work", `{"n":1}`); a.status != http.StatusOK {
			t.Errorf("request %d of another client while bodies trickle in = %d %s, want 200", i, a.status, a.code)
		}
	}
	close(stop)
	wg.Wait()
	if a := ed.do("other", http.MethodPost, "/work", strings.Repeat("x", web.MaxBodyBytes+1)); a.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over %d bytes = %d %s, want 413", web.MaxBodyBytes, a.status, a.code)
	}
}

// A body that stops arriving is the client's problem, 408, not a dependency's 503.
func TestABodyThatStopsArrivingIs408(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 1, Waiting: 1}, 300*time.Millisecond, 0)
	for _, who := range []string{"a", ""} { // read before a place, or, without a token, by the handler
		conn, err := net.Dial("tcp", strings.TrimPrefix(ed.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		authz := ""
		if who != "" {
			authz = "Authorization: Bearer " + ed.token(who) + "\r\n"
		}
		_, _ = io.WriteString(conn, "POST /work HTTP/1.1\r\nHost: x\r\n"+authz+"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		var p struct{ Code string }
		_ = json.Unmarshal(body, &p)
		if resp.StatusCode != http.StatusRequestTimeout || p.Code != "request_timeout" {
			t.Errorf("a stalled body (token: %t) = %d %s, want 408 request_timeout", who != "", resp.StatusCode, body)
		}
	}
}

// No client holds more than its share of the working or the waiting places: the rest
// stay for everyone else.
func TestOneClientHoldsNoMoreThanItsShare(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 4, ClientWorking: 2, Waiting: 4, ClientWaiting: 2, Queue: 8, QueueWait: 300 * time.Millisecond}, time.Minute, 0)
	done := make(chan answer, 20)
	ed.hold("hog", "/wait", done)
	ed.hold("hog", "/wait", done)
	if a := ed.do("hog", http.MethodGet, "/wait", ""); !refused(a, http.StatusTooManyRequests, web.CodeClientLimit) {
		t.Errorf("the hog's third wait = %d %s, want 429 client_limit with Retry-After", a.status, a.code)
	}
	ed.hold("other", "/wait", done)
	ed.hold("hog", "/work", done)
	ed.hold("hog", "/work", done)
	var extra sync.WaitGroup
	extra.Go(func() { // queued behind its own share, then turned away as the client's limit
		if a := ed.do("hog", http.MethodGet, "/work", ""); !refused(a, http.StatusTooManyRequests, web.CodeClientLimit) {
			t.Errorf("the hog's third request = %d %s, want 429 client_limit with Retry-After", a.status, a.code)
		}
	})
	time.Sleep(50 * time.Millisecond) // the hog's third request is queued
	ed.hold("other", "/work", done)   // served at once, though the hog's request waits before it
	extra.Wait()
	close(ed.work)
	close(ed.waits)
	for range 6 {
		if a := <-done; a.status != http.StatusNoContent {
			t.Errorf("an admitted request = %d %s, want 204", a.status, a.code)
		}
	}
}

// A burst is not an outage: 200 requests at once at an idle service, from 200 clients
// or from one, are all served from the queue.
func TestABurstAtAnIdleServiceIsServed(t *testing.T) {
	for _, clients := range []int{200, 1} {
		t.Run(fmt.Sprintf("%d clients", clients), func(t *testing.T) {
			ed := newEdge(t, web.Limits{Working: 20, ClientWorking: 5, Waiting: 10, Queue: 200, QueueWait: 5 * time.Second}, time.Minute, 5*time.Millisecond)
			for i := range clients {
				ed.token(fmt.Sprint("c", i))
			}
			var wg sync.WaitGroup
			var served, refusedN atomic.Int32
			start := make(chan struct{})
			for i := range 200 {
				wg.Go(func() {
					<-start
					if a := ed.do(fmt.Sprint("c", i%clients), http.MethodGet, "/nap", ""); a.status == http.StatusNoContent {
						served.Add(1)
					} else {
						refusedN.Add(1)
					}
				})
			}
			close(start)
			wg.Wait()
			if served.Load() != 200 {
				t.Errorf("%d of 200 served, %d refused; want every one served", served.Load(), refusedN.Load())
			}
		})
	}
}

// Sustained overload is still refused quickly: once requests are being turned away,
// newcomers wait moments, not QueueWait, and those admitted are not queued for long.
func TestSustainedOverloadIsRefusedQuickly(t *testing.T) {
	const queueWait = 2 * time.Second
	ed := newEdge(t, web.Limits{Working: 2, Waiting: 1, Queue: 20, QueueWait: queueWait}, time.Minute, 20*time.Millisecond)
	for i := range 40 {
		ed.token(fmt.Sprint("c", i))
	}
	// 100 requests a second can be served; 400 a second are offered for 4 s.
	var mu sync.Mutex
	var late []answer // answers in the last 2 s
	var wg sync.WaitGroup
	begin := time.Now()
	tick := time.NewTicker(2500 * time.Microsecond)
	for i := 0; time.Since(begin) < 4*time.Second; i++ {
		<-tick.C
		wg.Go(func() {
			a := ed.do(fmt.Sprint("c", i%40), http.MethodGet, "/nap", "")
			if time.Since(begin) > 2*time.Second+a.took {
				mu.Lock()
				late = append(late, a)
				mu.Unlock()
			}
		})
	}
	tick.Stop()
	wg.Wait()
	var refusals, served []time.Duration
	for _, a := range late {
		switch {
		case a.status == http.StatusNoContent:
			served = append(served, a.took)
		case refused(a, http.StatusServiceUnavailable, web.CodeOverloaded):
			refusals = append(refusals, a.took)
		default:
			t.Fatalf("an answer %d %s, want 204 or 503 overloaded", a.status, a.code)
		}
	}
	if len(refusals) == 0 || len(served) == 0 {
		t.Fatalf("%d served and %d refused in the last 2 s, want both", len(served), len(refusals))
	}
	slices.Sort(refusals)
	slices.Sort(served)
	p90 := func(ds []time.Duration) time.Duration { return ds[len(ds)*9/10] }
	t.Logf("last 2 s: %d served (p90 %s), %d refused (p90 %s)", len(served), p90(served), len(refusals), p90(refusals))
	if p90(refusals) > queueWait/4 || p90(served) > queueWait/4 {
		t.Errorf("under sustained overload refusals take %s and admissions %s at p90, want both well under the queue's %s", p90(refusals), p90(served), queueWait)
	}
}

// While overloaded, the queue is as short as the places, not gone: a service near its
// capacity is refused what it cannot take on, not each request that comes while its
// places are busy for a moment. Overload cuts a long queue to that length, the oldest
// kept; a request that finds it full is refused at once, unless a client holds more
// than one of its places.
func TestWhileOverloadedAFewWaitForAPlace(t *testing.T) {
	const nap = 150 * time.Millisecond // well within the wait while overloaded, a tenth of QueueWait
	ed := newEdge(t, web.Limits{Working: 2, Waiting: 1, Queue: 4, QueueWait: 10 * time.Second}, time.Minute, nap)
	send := func(who string, to chan<- answer) { go func() { to <- ed.do(who, http.MethodGet, "/nap", "") }() }
	want := func(what string, a answer, status int, code string) {
		t.Helper()
		if a.status != status || a.code != code {
			t.Errorf("%s: %d %s, want %d %s", what, a.status, a.code, status, code)
		}
	}
	held := make(chan answer, 2)
	ed.hold("a", "/work", held)
	ed.hold("b", "/work", held)
	queued := make(chan answer, 4)
	for i := range 4 {
		send(fmt.Sprint("q", i), queued)
	}
	time.Sleep(200 * time.Millisecond) // the four in the queue
	want("a request beyond the full queue", ed.do("over", http.MethodGet, "/nap", ""), http.StatusServiceUnavailable, web.CodeOverloaded)
	for range 2 { // overload began: the queue cut to two
		want("one of the two newest queued when overload began", <-queued, http.StatusServiceUnavailable, web.CodeOverloaded)
	}
	a := ed.do("third", http.MethodGet, "/nap", "")
	want("a request while overloaded, the places busy and two waiting", a, http.StatusServiceUnavailable, web.CodeOverloaded)
	if a.took > time.Second {
		t.Errorf("the refusal took %s, want it at once", a.took)
	}
	close(ed.work)
	for range 2 {
		want("one of the two oldest queued when overload began", <-queued, http.StatusNoContent, "")
		<-held
	}

	// Still overloaded: two newcomers that find the places busy wait for them.
	busy, waiting := make(chan answer, 2), make(chan answer, 2)
	send("p0", busy)
	send("p1", busy)
	time.Sleep(20 * time.Millisecond)
	send("w0", waiting)
	send("w1", waiting)
	time.Sleep(20 * time.Millisecond)
	want("a third newcomer, two waiting", ed.do("fourth", http.MethodGet, "/nap", ""), http.StatusServiceUnavailable, web.CodeOverloaded)
	for range 2 {
		want("a newcomer while overloaded", <-waiting, http.StatusNoContent, "")
		<-busy
	}

	// A client holding both places of the queue makes room for another's request.
	send("p0", busy)
	send("p1", busy)
	time.Sleep(20 * time.Millisecond)
	heavy := make(chan answer, 2)
	send("h", heavy)
	send("h", heavy)
	time.Sleep(20 * time.Millisecond)
	want("another client's request, the queue held by one", ed.do("light", http.MethodGet, "/nap", ""), http.StatusNoContent, "")
	h0, h1 := <-heavy, <-heavy
	if h0.status == h1.status || h0.status+h1.status != http.StatusNoContent+http.StatusServiceUnavailable {
		t.Errorf("the queue's client with two waiters: %d and %d, want one served and one turned away for the other client", h0.status, h1.status)
	}
	for range 2 {
		<-busy
	}
}

// While overloaded, one that waits for a place waits a tenth of QueueWait at most: places
// that stop freeing (a database that hangs) hold the few who wait for moments.
func TestWhileOverloadedAWaitIsShort(t *testing.T) {
	const queueWait = 2 * time.Second
	ed := newEdge(t, web.Limits{Working: 2, Waiting: 1, Queue: 4, QueueWait: queueWait}, time.Minute, time.Millisecond)
	held := make(chan answer, 2)
	ed.hold("a", "/work", held)
	ed.hold("b", "/work", held)
	queued := make(chan answer, 4)
	for i := range 4 {
		go func() { queued <- ed.do(fmt.Sprint("q", i), http.MethodGet, "/nap", "") }()
	}
	time.Sleep(200 * time.Millisecond)
	if a := ed.do("over", http.MethodGet, "/nap", ""); !refused(a, http.StatusServiceUnavailable, web.CodeOverloaded) {
		t.Fatalf("a request beyond the full queue: %d %s, want 503 overloaded", a.status, a.code)
	}
	for range 4 { // two at once, two after the QueueWait they came with
		<-queued
	}
	a := ed.do("late", http.MethodGet, "/nap", "")
	if !refused(a, http.StatusServiceUnavailable, web.CodeOverloaded) || a.took < queueWait/20 || a.took > queueWait/2 {
		t.Errorf("a request while overloaded, the places held: %d %s after %s, want 503 overloaded after about %s", a.status, a.code, a.took, queueWait/10)
	}
	close(ed.work)
	for range 2 {
		<-held
	}
}

// A client over its rate gets 429 with Retry-After and the RateLimit headers, for the
// policy of the route; other routes and other clients are not touched.
func TestAClientOverItsRateGets429(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 10, Waiting: 1,
		Rate:   web.RatePolicy{Name: "default", Rate: 100, Burst: 100},
		Routes: map[string]web.RatePolicy{"POST /work": {Name: "orders", Rate: 2, Burst: 3}}}, time.Minute, 0)
	for i, left := range []string{"2", "1", "0"} {
		a := ed.do("a", http.MethodPost, "/work", "{}")
		if a.status != http.StatusOK || a.header.Get("RateLimit-Policy") != `"orders";q=3;w=2` ||
			!strings.HasPrefix(a.header.Get("RateLimit"), `"orders";r=`+left+";t=") {
			t.Errorf("request %d within the rate = %d, RateLimit-Policy %q, RateLimit %q; want 200, \"orders\";q=3;w=2, r=%s",
				i, a.status, a.header.Get("RateLimit-Policy"), a.header.Get("RateLimit"), left)
		}
	}
	a := ed.do("a", http.MethodPost, "/work", "{}")
	if !refused(a, http.StatusTooManyRequests, web.CodeRateLimited) || a.header.Get("Retry-After") != "1" ||
		a.header.Get("RateLimit") != `"orders";r=0;t=1` || a.header.Get("RateLimit-Policy") != `"orders";q=3;w=2` {
		t.Errorf("over the rate = %d %s, Retry-After %q, RateLimit %q; want 429 rate_limited, 1, \"orders\";r=0;t=1",
			a.status, a.code, a.header.Get("Retry-After"), a.header.Get("RateLimit"))
	}
	if a := ed.do("b", http.MethodPost, "/work", "{}"); a.status != http.StatusOK {
		t.Errorf("another client = %d, want 200", a.status)
	}
	if a := ed.do("a", http.MethodGet, "/nap", ""); a.status != http.StatusNoContent || !strings.HasPrefix(a.header.Get("RateLimit"), `"default";r=99;`) {
		t.Errorf("the client on another route = %d, RateLimit %q; want 204 under the default policy", a.status, a.header.Get("RateLimit"))
	}
	time.Sleep(600 * time.Millisecond) // a token back
	if a := ed.do("a", http.MethodPost, "/work", "{}"); a.status != http.StatusOK {
		t.Errorf("after Retry-After = %d, want 200", a.status)
	}
}

// Large bodies are read and worked on only within their budget, so twenty 1 MiB bodies
// at once cannot take the memory: beyond it one waits, then is refused; a small body
// never waits for it.
func TestLargeBodiesWaitForTheirBudget(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 10, Waiting: 1, LargeBodies: web.MaxBodyBytes, Queue: 10, QueueWait: 300 * time.Millisecond}, time.Minute, 0)
	large := strings.Repeat(" ", 512<<10-10) + "{}"
	done := make(chan answer, 3)
	for _, who := range []string{"a", "b"} { // half the budget each: both in
		go func() { done <- ed.do(who, http.MethodPost, "/hold", large) }()
		<-ed.started
	}
	if a := ed.do("c", http.MethodPost, "/hold", large); !refused(a, http.StatusServiceUnavailable, web.CodeOverloaded) || a.took < 4*time.Second {
		t.Errorf("a large body beyond the budget = %d %s after %s, want 503 overloaded after its 5 s wait", a.status, a.code, a.took)
	}
	if a := ed.do("c", http.MethodPost, "/work", `{"small":true}`); a.status != http.StatusOK {
		t.Errorf("a small body while the budget is taken = %d %s, want 200", a.status, a.code)
	}
	close(ed.work)
	for range 2 {
		if a := <-done; a.status != http.StatusNoContent {
			t.Errorf("a large body within the budget = %d %s, want 204", a.status, a.code)
		}
	}
	if a := ed.do("c", http.MethodPost, "/work", large); a.status != http.StatusOK {
		t.Errorf("a large body once the budget is free = %d %s, want 200", a.status, a.code)
	}
}

// A closed-loop flood of probes from one client is held to the probes' rate — those
// beyond it wait their turn, and those far beyond it are refused 429 after a second's
// wait — so it costs the service a few answers a second rather than as many as it can
// give; another client's probe is answered at once meanwhile.
func TestAFloodOfProbesIsHeldToItsRate(t *testing.T) {
	ed := newEdge(t, web.Limits{Working: 10, Waiting: 1, Exempt: []string{"/healthz"},
		Probes: web.RatePolicy{Name: "probes", Rate: 10, Burst: 10}}, time.Minute, 0)
	const window = 2 * time.Second
	flooder := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 50}}
	defer flooder.CloseIdleConnections()
	var served, refusedN atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(window)
	for range 50 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				resp, err := flooder.Get(ed.url + "/healthz")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK:
					served.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "1" &&
					resp.Header.Get("RateLimit") == `"probes";r=0;t=1` && resp.Header.Get("RateLimit-Policy") == `"probes";q=10;w=1`:
					refusedN.Add(1)
				default:
					t.Errorf("a probe of the flood = %d, Retry-After %q, RateLimit %q", resp.StatusCode,
						resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit"))
				}
			}
		})
	}
	time.Sleep(window / 2)
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	start := time.Now()
	resp, err := other.Get(ed.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != http.StatusOK || took > 500*time.Millisecond {
		t.Errorf("another client's probe during the flood = %d after %s, want 200 at once", resp.StatusCode, took)
	}
	wg.Wait()
	t.Logf("in %s: %d probes served, %d refused", window, served.Load(), refusedN.Load())
	// The burst, then the rate for the window, and those owed when it closed.
	if n := served.Load(); n < 20 || n > 10+10*3 {
		t.Errorf("%d probes of the flood served in %s, want the rate's 10 a second and its burst of 10", n, window)
	}
	// A refusal comes after a second: each of the 50 loops meets at most a few.
	if n := refusedN.Load(); n > 50*3 {
		t.Errorf("%d probes of the flood refused in %s: refused at once, a loop asks again at once", n, window)
	}
}
