// Package coalesce groups concurrent calls into one: group commit for the callers of a
// statement. The calls that arrive while batches are in flight wait and go together in
// the next one, so under load many callers share one statement and one commit, and a
// lone caller waits for nobody, unless its Batcher has a Linger. A call returns only once
// its batch has run: a write acknowledged to its caller is a write committed.
package coalesce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Func runs one batch: reqs in the order they arrived. It returns one result per request,
// in the same order, or an error, which every caller of the batch gets (but see
// Options.Alone).
type Func[Req, Res any] func(ctx context.Context, reqs []Req) ([]Res, error)

// Batcher coalesces the calls to one Func. The zero value is not usable; see New.
//
// It has no goroutine while idle: a call that finds fewer than Flights batches in flight
// starts a runner, which runs batches from the front of the queue until it is empty, and
// then ends.
type Batcher[Req, Res any] struct {
	fn      Func[Req, Res]
	max     int
	flights int
	timeout time.Duration
	alone   func(error) bool
	linger  time.Duration
	full    chan struct{} // the lingering runner stops lingering: Max calls are queued

	mu        sync.Mutex
	queue     []*call[Req, Res]
	running   int
	lingering bool // the one runner lingers: calls only queue
}

// Options tune a Batcher. Every field has a default.
type Options struct {
	// Max is the most requests one batch takes (default 256): a statement's size stays
	// bounded, and the rest go in the next.
	Max int
	// Flights is how many batches may run at once (default DefaultFlights). A call waits
	// only when that many are in flight; under load the calls queue and share.
	Flights int
	// Timeout bounds each batch (default 10 s). A batch runs on a context of its own,
	// with the values of its first caller's, and ends by the latest of its callers'
	// deadlines, or Timeout from its start if that comes first or a caller has none: one
	// caller that gives up does not fail the others' statement, and none waits past its
	// own deadline unless another's is later.
	Timeout time.Duration
	// Alone, when set, tells a batch's failure for what one of its requests holds from
	// the batch's own (ByRow does, for a statement): a batch failing so is run again one
	// request at a time, so that only the request at fault fails.
	Alone func(error) bool
	// Linger is how long the first call after a quiet spell (no batch in flight) waits
	// for others to join its batch, unless Max of them come sooner; 0, none. For calls
	// that may wait: the calls of a light load then share a statement too.
	Linger time.Duration
}

// ByRow reports whether err is a statement's failure for what one of its rows holds: an
// SQLSTATE of class 22 (data exception) or 23 (integrity constraint violation), as told
// by an error with an SQLState method (pgx's *pgconn.PgError).
func ByRow(err error) bool {
	var pe interface{ SQLState() string }
	if !errors.As(err, &pe) {
		return false
	}
	class := pe.SQLState()[:min(2, len(pe.SQLState()))]
	return class == "22" || class == "23"
}

// DefaultFlights is how many batches of one Batcher run at once unless Options say. One
// makes the fewest commits, and measured best: with four, PostgreSQL spent more CPU an
// order (concurrent multi-row inserts into the same index pages) and orders were
// confirmed later at every load; a lone call waits, at most, for the batch in flight.
const DefaultFlights = 1

// New returns a Batcher that runs fn.
func New[Req, Res any](fn Func[Req, Res], o Options) *Batcher[Req, Res] {
	if o.Max <= 0 {
		o.Max = 256
	}
	if o.Flights <= 0 {
		o.Flights = DefaultFlights
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &Batcher[Req, Res]{fn: fn, max: o.Max, flights: o.Flights, timeout: o.Timeout, alone: o.Alone,
		linger: o.Linger, full: make(chan struct{}, 1)}
}

type call[Req, Res any] struct {
	ctx   context.Context
	req   Req
	res   Res
	err   error
	done  chan struct{} // closed once res and err are set
	taken bool          // in a batch, out of the queue
}

// Do runs req in a batch with the calls made meanwhile and returns its result. When ctx
// ends before req's batch started, req is left out and Do returns ctx's error; once its
// batch started, Do waits for the batch's end (bounded by the Batcher's Timeout), so its
// caller learns whether the request took effect.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	c := &call[Req, Res]{ctx: ctx, req: req, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	switch {
	case b.lingering:
		if len(b.queue) >= b.max {
			select {
			case b.full <- struct{}{}:
			default:
			}
		}
	case b.running < b.flights:
		b.lingering = b.linger > 0 && b.running == 0
		b.running++
		go b.runner(b.lingering)
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if c.taken {
		b.mu.Unlock()
		<-c.done
		return c.res, c.err
	}
	b.queue = slices.DeleteFunc(b.queue, func(q *call[Req, Res]) bool { return q == c })
	b.mu.Unlock()
	var zero Res
	return zero, ctx.Err()
}

// runner runs batches from the front of the queue until it is empty. The runner started
// after a quiet spell lingers first, alone.
func (b *Batcher[Req, Res]) runner(linger bool) {
	if linger {
		t := time.NewTimer(b.linger)
		select {
		case <-t.C:
		case <-b.full:
		}
		t.Stop()
		b.mu.Lock()
		b.lingering = false
		select {
		case <-b.full: // sent as the time ran out
		default:
		}
		b.mu.Unlock()
	}
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		batch := slices.Clone(b.queue[:n])
		b.queue = slices.Delete(b.queue, 0, n)
		for _, c := range batch {
			c.taken = true
		}
		b.mu.Unlock()
		b.answer(batch)
	}
}

// answer runs batch and sets each call's result.
func (b *Batcher[Req, Res]) answer(batch []*call[Req, Res]) {
	ctx := batch[0].ctx
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	res, err := b.run(ctx, latest(batch), reqs)
	if err != nil && len(batch) > 1 && b.alone != nil && b.alone(err) {
		for _, c := range batch {
			one, err := b.run(c.ctx, latest([]*call[Req, Res]{c}), []Req{c.req})
			if err == nil {
				c.res = one[0]
			}
			c.err = err
			close(c.done)
		}
		return
	}
	for i, c := range batch {
		if err == nil {
			c.res = res[i]
		}
		c.err = err
		close(c.done)
	}
}

// latest is the latest deadline of the calls' contexts; zero when one has none.
func latest[Req, Res any](batch []*call[Req, Res]) time.Time {
	var last time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return time.Time{}
		}
		if d.After(last) {
			last = d
		}
	}
	return last
}

// run runs fn on reqs on a context of its own with ctx's values, until deadline (zero:
// none) or the Batcher's Timeout, whichever comes first. A Func that panics fails its
// batch; the runner goes on.
func (b *Batcher[Req, Res]) run(ctx context.Context, deadline time.Time, reqs []Req) (res []Res, err error) {
	if limit := time.Now().Add(b.timeout); deadline.IsZero() || limit.Before(deadline) {
		deadline = limit
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("coalesce: batch panicked: %v", p)
		}
	}()
	res, err = b.fn(ctx, reqs)
	if err == nil && len(res) != len(reqs) {
		err = fmt.Errorf("coalesce: %d results for %d requests", len(res), len(reqs))
	}
	return res, err
}
