package postgres

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// StatusChannel is the LISTEN/NOTIFY channel on which the orders table announces a status
// change (migration 00004), payload the order id.
const StatusChannel = "order_status"

// Changes tells the requests waiting on an order when its status changes, whichever
// instance changed it: one connection per instance LISTENs on StatusChannel and wakes the
// subscribers of the order named. A wake-up only says "look again": the waiter reads the
// order itself, so a coalesced or repeated wake-up is harmless.
type Changes struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// RetryInterval is the pause before listening again after the connection failed.
	RetryInterval time.Duration

	mu     sync.Mutex
	subs   map[string]map[chan struct{}]struct{}
	closed bool
	done   chan struct{}
}

// NewChanges returns the change feed of the orders database; Run makes it listen.
func NewChanges(pool *pgxpool.Pool, log *slog.Logger) *Changes {
	return &Changes{pool: pool, log: log, RetryInterval: time.Second,
		subs: map[string]map[chan struct{}]struct{}{}, done: make(chan struct{})}
}

// Subscribe returns a channel that receives a value after each status change of order id
// (several changes may arrive as one), and the function that ends the subscription. The
// caller subscribes first and reads the order afterwards, so no change falls in between.
func (c *Changes) Subscribe(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[id] == nil {
		c.subs[id] = map[chan struct{}]struct{}{}
	}
	c.subs[id][ch] = struct{}{}
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.subs[id], ch)
		if len(c.subs[id]) == 0 {
			delete(c.subs, id)
		}
	}
}

// Done is closed when Run has returned: the service is shutting down, and waiters answer
// with what they have.
func (c *Changes) Done() <-chan struct{} { return c.done }

// Waiting is the number of subscriptions open right now.
func (c *Changes) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.subs {
		n += len(s)
	}
	return n
}

// Run listens until ctx is done. When the connection fails it listens again after
// RetryInterval, and every time it starts listening it wakes every subscriber, since a
// change may have gone unheard meanwhile.
func (c *Changes) Run(ctx context.Context) error {
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.closed {
			c.closed = true
			close(c.done)
		}
	}()
	for {
		err := c.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("order status feed: lost its database connection; listening again", "err", err, "retry_in", c.RetryInterval)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.RetryInterval):
		}
	}
}

func (c *Changes) listen(ctx context.Context) error {
	pooled, err := c.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pooled.Hijack() // held for good: not the pool's to hand out
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+StatusChannel); err != nil {
		return err
	}
	c.wakeAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		c.wake(n.Payload)
	}
}

func (c *Changes) wake(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.subs[id] {
		signal(ch)
	}
}

func (c *Changes) wakeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.subs {
		for ch := range s {
			signal(ch)
		}
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // a wake-up is already pending
	}
}
