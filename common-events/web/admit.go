package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/semaphore"
)

// MaxBodyBytes bounds a request body at the edge: a longer one is refused 413 before it
// takes a place.
const MaxBodyBytes = 1 << 20

// Limits bound the requests a service takes on at once, in all and per client (the
// bearer token's subject; without a valid token, the peer's address). Beyond them a
// request waits a little in a bounded queue, or is refused — 503 overloaded, or 429 for
// a client over its own share or rate — with Retry-After: a queue longer than the service
// can drain only makes every client wait until it gives up, and grows the service's
// memory with it (docs/http-edge.md; CHANGELOG.md has what overload did before).
type Limits struct {
	// Working bounds the requests being worked on: most of them hold a database
	// connection for part of their time. ClientWorking is one client's share of them.
	Working, ClientWorking int
	// Waiting bounds the requests that wait for something to happen — an event stream,
	// an answer held with Prefer: wait — which their handler moves out of the working
	// places with Wait; ClientWaiting is one client's share of them.
	Waiting, ClientWaiting int
	// Queue bounds the requests that wait for a working place. One waits at most
	// QueueWait while the service keeps up, so a burst is served; once requests are
	// being turned away for want of places (sustained overload), for QueueWait no more
	// wait than there are working places, each for about one request's work and at most
	// a tenth of QueueWait, and a request that finds those waiting is refused at once,
	// before its token or its body cost anything.
	Queue     int
	QueueWait time.Duration
	// Rate is every client's rate limit on the routes Routes does not name; Routes
	// gives a route ("POST /orders", the route's pattern) a policy of its own.
	Rate   RatePolicy
	Routes map[string]RatePolicy
	// LargeBodies bounds the bytes of bodies over 64 KiB being read and worked on at
	// once (DefaultLargeBodies when 0); a large body waits up to 5 s for room.
	LargeBodies int64
	// Exempt are paths the limits leave alone: the probes and the metrics, which must
	// answer most when the service is busiest (and are cheap: answered from readings
	// taken in the background). Probes paces them instead, per client: beyond its rate a
	// request is held for its turn, up to a second, and then refused 429 rate_limited.
	Exempt []string
	Probes RatePolicy
}

// Problem codes of the requests the limits refuse.
const (
	CodeOverloaded  = "overloaded"   // 503: the service is at its limits
	CodeRateLimited = "rate_limited" // 429: the client is over its rate
	CodeClientLimit = "client_limit" // 429: the client holds its share of the places already
)

// Admit applies l. A request's body is read first (at most MaxBodyBytes, within the
// server's read timeout), holding nothing another client needs; then it takes a working
// place for as long as it runs, waiting in the queue for one if need be. A request
// without a valid token is not read: it takes a place with its body unread and is turned
// away at once by Authenticate.
func Admit(l Limits) echo.MiddlewareFunc {
	a := newAdmission(l)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if slices.Contains(l.Exempt, req.URL.Path) {
				if err := a.pace(c); err != nil {
					return err
				}
				return next(c)
			}
			if p := a.saturated(); p != nil {
				return p
			}
			cl, identified := a.client(c)
			defer a.done(cl)
			if err := a.rate(c, cl); err != nil {
				return err
			}
			if identified {
				release, err := a.readBody(c, cl)
				defer release()
				if err != nil {
					return err
				}
			} else if req.Body != nil {
				req.Body = body{req.Body}
			}
			t := &ticket{a: a, cl: cl}
			if err := a.take(c, t); err != nil {
				return err
			}
			defer t.release()
			c.Set(ticketKey, t)
			return next(c)
		}
	}
}

// Wait moves the request from the working places to the waiting ones, for a handler
// about to wait (an event stream, Prefer: wait). It returns a problem when no waiting
// place is free for the client — 429 when the client holds its share, 503 when all are
// taken — and the request keeps its working place; the handler then answers without
// waiting, or with the problem. Without Admit (a handler under test) it always succeeds.
func Wait(c echo.Context) error {
	t, ok := c.Get(ticketKey).(*ticket)
	if !ok {
		return nil
	}
	return t.wait()
}

const ticketKey = "orderflow.admission"

type admission struct {
	l   Limits
	now func() time.Time

	mu      sync.Mutex
	working int // places held
	waiting int
	clients map[string]*client
	large   *semaphore.Weighted // the budget of large bodies, in bytes
	queue   []*waiter           // for a working place, oldest first
	// refusedAt is when a request was last turned away for want of a place: until
	// QueueWait after it the service is overloaded, and its queue short (queueLimit).
	refusedAt time.Time
	sweptAt   time.Time
}

// client is one client's share: what it holds, and its rate buckets.
type client struct {
	users            int // requests in the middleware now
	working, waiting int
	queued           int
	reading          chan struct{} // bodies being read: at most ClientWorking at once
	buckets          map[string]*bucket
}

type waiter struct {
	cl      *client
	ready   chan struct{} // closed when given a place (granted) or turned away
	granted bool
}

// ticket is a request's place, working or waiting.
type ticket struct {
	a       *admission
	cl      *client
	waiting bool
}

func newAdmission(l Limits) *admission {
	l.Working, l.Waiting = max(l.Working, 1), max(l.Waiting, 1)
	if l.ClientWorking <= 0 || l.ClientWorking > l.Working {
		l.ClientWorking = l.Working
	}
	if l.ClientWaiting <= 0 || l.ClientWaiting > l.Waiting {
		l.ClientWaiting = l.Waiting
	}
	if l.QueueWait <= 0 {
		l.Queue = 0
	}
	now := time.Now
	if l.LargeBodies <= 0 {
		l.LargeBodies = DefaultLargeBodies
	}
	l.LargeBodies = max(l.LargeBodies, MaxBodyBytes)
	return &admission{l: l, now: now, clients: map[string]*client{}, large: semaphore.NewWeighted(l.LargeBodies)}
}

// client returns the request's client, counted as in use until done: the token's
// subject when Identify found a valid one, else the peer's address.
func (a *admission) client(c echo.Context) (_ *client, identified bool) {
	key := ""
	if p, ok := PrincipalOf(c); ok {
		key, identified = "sub:"+p.Subject, true
	} else {
		host, _, err := net.SplitHostPort(c.Request().RemoteAddr)
		if err != nil {
			host = c.Request().RemoteAddr
		}
		key = "addr:" + host
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cl := a.clients[key]
	if cl == nil {
		cl = &client{reading: make(chan struct{}, a.l.ClientWorking)}
		a.clients[key] = cl
	}
	cl.users++
	return cl, identified
}

// done forgets cl once no request of it is left and its buckets are full again, looking
// over every client at most once a second.
func (a *admission) done(cl *client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cl.users--
	now := a.now()
	if now.Sub(a.sweptAt) < time.Second {
		return
	}
	a.sweptAt = now
	for k, c := range a.clients {
		if c.users == 0 && c.full(now) {
			delete(a.clients, k)
		}
	}
}

// readBody reads the request's body into memory, at most ClientWorking of the client's
// at once: a body that trickles in holds only its client's reading slot, never a place.
func (a *admission) readBody(c echo.Context, cl *client) (release func(), _ error) {
	release = func() {}
	req := c.Request()
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return release, nil
	}
	select {
	case cl.reading <- struct{}{}:
		defer func() { <-cl.reading }()
	case <-req.Context().Done():
		return release, &BodyError{Err: req.Context().Err()}
	}
	if req.ContentLength > MaxBodyBytes {
		return release, bodyTooLarge()
	}
	// A large body is read, and worked on, only within the budget of large bodies: what
	// decoding it costs is some times its size, and twenty 1 MiB bodies at once must not
	// take the process's memory. A small one (an order is a few KiB) never waits for it.
	reserve := func(n int64) error {
		ctx, cancel := context.WithTimeout(req.Context(), largeBodyWait)
		defer cancel()
		if err := a.large.Acquire(ctx, n); err != nil {
			if req.Context().Err() != nil {
				return &BodyError{Err: req.Context().Err()}
			}
			p := NewProblem(http.StatusServiceUnavailable, CodeOverloaded, "Service Unavailable",
				"the service is at its limit of large request bodies; retry after Retry-After seconds")
			p.RetryAfter = 1
			return p
		}
		release = func() { a.large.Release(n) }
		return nil
	}
	if req.ContentLength > largeBody {
		if err := reserve(req.ContentLength); err != nil {
			return release, err
		}
	}
	// The first 64 KiB are read into a buffer of their own; a claimed length beyond them
	// is allocated only once they have arrived, and then exactly, so a body costs its
	// size once rather than the doublings of a growing buffer.
	r := http.MaxBytesReader(c.Response(), req.Body, MaxBodyBytes)
	first := int64(largeBody)
	if req.ContentLength > 0 {
		first = min(first, req.ContentLength)
	}
	buf, err := readInto(make([]byte, 0, first+1), r)
	if err == nil && len(buf) == cap(buf) && req.ContentLength < 0 { // more, of a length not told
		if err := reserve(MaxBodyBytes); err != nil {
			return release, err
		}
	}
	for err == nil && len(buf) == cap(buf) { // more is coming
		more := make([]byte, len(buf), max(req.ContentLength+1, 2*int64(cap(buf))))
		copy(more, buf)
		buf, err = readInto(more, r)
	}
	if errors.As(err, new(*http.MaxBytesError)) {
		return release, bodyTooLarge()
	}
	if err != nil {
		return release, &BodyError{Err: err}
	}
	_ = req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(buf))
	return release, nil
}

// largeBody is the size beyond which a body counts against the budget of large bodies.
const largeBody = 64 << 10

// largeBodyWait bounds the wait for room in the budget. The body is not read meanwhile,
// so waiting costs nothing but the client's reading slot; it stays well inside the
// default HTTP_READ_TIMEOUT, within which the body must then arrive.
const largeBodyWait = 5 * time.Second

// DefaultLargeBodies is the budget of large bodies (over 64 KiB) read and worked on at
// once, in bytes, when Limits.LargeBodies is 0: four of the largest.
const DefaultLargeBodies = 4 * MaxBodyBytes

// readInto reads r into buf until buf is full or r ends; io.EOF is no error.
func readInto(buf []byte, r io.Reader) ([]byte, error) {
	for len(buf) < cap(buf) {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

func bodyTooLarge() *Problem {
	return NewProblem(http.StatusRequestEntityTooLarge, "body_too_large", "Request Entity Too Large",
		"the body must be at most "+strconv.Itoa(MaxBodyBytes)+" bytes")
}

// take gives t a working place, waiting in the queue for one if none is free to t's
// client; it returns the problem that refuses the request when none comes in time.
func (a *admission) take(c echo.Context, t *ticket) error {
	a.mu.Lock()
	if a.free(t.cl) && len(a.queue) == 0 {
		a.hold(t.cl)
		a.mu.Unlock()
		return nil
	}
	now := a.now()
	wait := a.queueWait(now)
	if len(a.queue) >= a.queueLimit(now) && !a.evict(t.cl) {
		p := a.refusal(t.cl)
		a.mu.Unlock()
		return p
	}
	w := &waiter{cl: t.cl, ready: make(chan struct{})}
	a.queue = append(a.queue, w)
	t.cl.queued++
	a.grant() // a place may be free to this client though not to those before it
	a.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.ready:
	case <-timer.C:
	case <-c.Request().Context().Done():
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w.granted { // perhaps while its wait ended
		return nil
	}
	a.unqueue(w) // unless evicted
	if c.Request().Context().Err() != nil {
		return &BodyError{Err: c.Request().Context().Err()} // the client went away; nobody reads the answer
	}
	return a.refusal(t.cl)
}

// overloaded reports whether the service turned a request away for want of places
// within QueueWait of now. Under a.mu.
func (a *admission) overloaded(now time.Time) bool {
	return !a.refusedAt.IsZero() && now.Sub(a.refusedAt) < a.l.QueueWait
}

// queueLimit is how many may wait for a working place now: Queue, or while overloaded
// no more than there are working places, so that what waits waits about one request's
// work and what the service cannot take on is refused at once. (With no queue at all
// while overloaded, a request was refused whenever every place was busy for a moment,
// and an open load near the service's capacity had far more refused than it exceeded
// the capacity by, while the places were freeing within moments.) Under a.mu.
func (a *admission) queueLimit(now time.Time) int {
	if a.overloaded(now) {
		return min(a.l.Queue, a.l.Working)
	}
	return a.l.Queue
}

// queueWait is how long one that queues now may wait for a place: QueueWait, or while
// overloaded a tenth of it, so that places that stop freeing (a database that hangs)
// hold the few who wait for moments, not for QueueWait. Under a.mu.
func (a *admission) queueWait(now time.Time) time.Duration {
	if a.overloaded(now) {
		return a.l.QueueWait / 10
	}
	return a.l.QueueWait
}

// evictable reports whether a client has more than one waiter: a newcomer of another
// client could take the place of one of them (evict). Under a.mu.
func (a *admission) evictable() bool {
	for _, w := range a.queue {
		if w.cl.queued > 1 {
			return true
		}
	}
	return false
}

// saturated is the refusal of a request that arrives while the service is overloaded,
// every working place taken and its queue full of one waiter a client: answered before
// anything is spent on it, as the limits did before they knew clients. (Where a client
// has more than one waiter, the request goes on to learn its client: it may take the
// place of one of them.)
func (a *admission) saturated() *Problem {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if a.working < a.l.Working || !a.overloaded(now) || len(a.queue) < a.queueLimit(now) || a.evictable() {
		return nil
	}
	return a.refusal(nil)
}

// free reports whether cl may take a working place now. Under a.mu.
func (a *admission) free(cl *client) bool {
	return a.working < a.l.Working && cl.working < a.l.ClientWorking
}

func (a *admission) hold(cl *client) {
	a.working++
	cl.working++
}

// grant gives free working places to the oldest waiters that may take them. Under a.mu.
func (a *admission) grant() {
	for i := 0; i < len(a.queue) && a.working < a.l.Working; {
		w := a.queue[i]
		if !a.free(w.cl) {
			i++
			continue
		}
		a.hold(w.cl)
		a.queue = slices.Delete(a.queue, i, i+1)
		w.cl.queued--
		w.granted = true
		close(w.ready)
	}
}

// evict makes room in the full queue for a request of cl by turning away the newest
// waiter of the client with the most waiters — when that client has more than cl would:
// one client's burst may fill an idle queue but never keeps another client out of it.
func (a *admission) evict(cl *client) bool {
	var heaviest *client
	for _, w := range a.queue {
		if heaviest == nil || w.cl.queued > heaviest.queued {
			heaviest = w.cl
		}
	}
	if heaviest == nil || heaviest.queued <= cl.queued+1 {
		return false
	}
	for i := len(a.queue) - 1; i >= 0; i-- {
		if w := a.queue[i]; w.cl == heaviest {
			a.queue = slices.Delete(a.queue, i, i+1)
			heaviest.queued--
			close(w.ready) // not granted: refused now
			return true
		}
	}
	return false
}

func (a *admission) unqueue(w *waiter) {
	if i := slices.Index(a.queue, w); i >= 0 {
		a.queue = slices.Delete(a.queue, i, i+1)
		w.cl.queued--
	}
}

// refusal is the problem of a request that found no working place: the client's own
// share taken (429), or the service's (503) — which, and only which, marks the service
// as overloaded for QueueWait: one client over its share leaves the others' waits alone.
// Under a.mu.
func (a *admission) refusal(cl *client) *Problem {
	if cl != nil && cl.working >= a.l.ClientWorking && a.working < a.l.Working {
		return clientLimit("the client has the most requests in progress it may have at once")
	}
	now := a.now()
	if !a.overloaded(now) {
		// Overload begins: the queue is cut to its length while overloaded, the oldest
		// (next in line) kept, the newest turned away at once rather than served a long
		// queue's wait late.
		keep := min(a.l.Queue, a.l.Working, len(a.queue))
		for _, w := range a.queue[keep:] {
			w.cl.queued--
			close(w.ready)
		}
		clear(a.queue[keep:])
		a.queue = a.queue[:keep]
	}
	a.refusedAt = now
	p := NewProblem(http.StatusServiceUnavailable, CodeOverloaded, "Service Unavailable",
		"the service is at its limit of requests in progress; retry after Retry-After seconds (an order with the same Idempotency-Key)")
	p.RetryAfter = 1
	return p
}

func clientLimit(detail string) *Problem {
	p := NewProblem(http.StatusTooManyRequests, CodeClientLimit, "Too Many Requests", detail+"; retry after Retry-After seconds")
	p.RetryAfter = 1
	return p
}

func (t *ticket) wait() error {
	a := t.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.waiting {
		return nil
	}
	switch {
	case t.cl.waiting >= a.l.ClientWaiting:
		return clientLimit("the client has the most event streams and waiting requests it may have at once")
	case a.waiting >= a.l.Waiting:
		p := NewProblem(http.StatusServiceUnavailable, CodeOverloaded, "Service Unavailable",
			"the service is at its limit of event streams and waiting requests; retry after Retry-After seconds")
		p.RetryAfter = 1
		return p
	}
	a.waiting++
	t.cl.waiting++
	t.waiting = true
	a.working--
	t.cl.working--
	a.grant()
	return nil
}

func (t *ticket) release() {
	a := t.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.waiting {
		a.waiting--
		t.cl.waiting--
		return
	}
	a.working--
	t.cl.working--
	a.grant()
}

// BodyError is a request body that could not be read to its end: it stopped arriving
// within the server's read timeout (HTTP_READ_TIMEOUT), or the client went away. Its
// problem is the client's: 408 or 400, never a dependency's 503.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "reading the request body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

func (e *BodyError) problem() *Problem {
	if ne := (interface{ Timeout() bool })(nil); errors.As(e.Err, &ne) && ne.Timeout() {
		return NewProblem(http.StatusRequestTimeout, "request_timeout", "Request Timeout",
			"the request body did not arrive in time")
	}
	return NewProblem(http.StatusBadRequest, "body_unreadable", "Bad Request", "the request body could not be read")
}

// body marks its read errors as the body's.
type body struct{ rc io.ReadCloser }

func (b body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && !errors.As(err, new(*http.MaxBytesError)) {
		err = &BodyError{Err: err}
	}
	return n, err
}

func (b body) Close() error { return b.rc.Close() }
