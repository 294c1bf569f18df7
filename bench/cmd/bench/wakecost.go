package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/outbox"
)

// wakeResult compares the two ways a writer can wake the outbox relay, on the same
// PostgreSQL: a NOTIFY inside every writing transaction, and outbox's policy, a Waker
// that notifies after the commits, at most once every outbox.WakeEvery.
type wakeResult struct {
	Connections int     `json:"connections"`
	InTxTPS     float64 `json:"notify_in_tx_tps"` // transactions/s, each an outbox row and a NOTIFY
	WakerTPS    float64 `json:"waker_tps"`        // transactions/s, each an outbox row, then Waker.Wake
	Notifies    int64   `json:"waker_notifies"`   // NOTIFYs the Waker sent meanwhile
}

// wakeCost writes single-row outbox transactions from 16 connections for d each way,
// with a listener on the channel as the relay keeps one, and counts the commits.
func wakeCost(ctx context.Context, adminURL string, d time.Duration) (wakeResult, error) {
	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		return wakeResult{}, err
	}
	const conns = 16
	cfg.MaxConns = conns + 1 // and the Waker's
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return wakeResult{}, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS wakecost (id bigserial PRIMARY KEY, topic text NOT NULL,
		key text NOT NULL, headers json NOT NULL, payload bytea NOT NULL)`); err != nil {
		return wakeResult{}, fmt.Errorf("wake cost: %w", err)
	}
	defer func() { _, _ = pool.Exec(context.WithoutCancel(ctx), `DROP TABLE wakecost`) }()
	listener, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return wakeResult{}, err
	}
	defer listener.Close(context.WithoutCancel(ctx))
	if _, err := listener.Exec(ctx, "LISTEN "+outbox.Channel); err != nil {
		return wakeResult{}, err
	}
	lctx, stopListening := context.WithCancel(ctx)
	var notified atomic.Int64
	var lwg sync.WaitGroup
	lwg.Go(func() {
		for {
			if _, err := listener.WaitForNotification(lctx); err != nil {
				return
			}
			notified.Add(1)
		}
	})
	defer func() { stopListening(); lwg.Wait() }()

	const insert = `INSERT INTO wakecost (topic, key, headers, payload) VALUES ('order.created', $1, '{"ce_id":"x"}', '\x7b7d')`
	run := func(write func(ctx context.Context, key string) error) (float64, error) {
		var n atomic.Int64
		var firstErr atomic.Value
		deadline := time.Now().Add(d)
		start := time.Now()
		var wg sync.WaitGroup
		for c := range conns {
			wg.Go(func() {
				for i := 0; time.Now().Before(deadline); i++ {
					if err := write(ctx, fmt.Sprintf("%d-%d", c, i)); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return 0, fmt.Errorf("wake cost: %w", err)
		}
		return float64(n.Load()) / time.Since(start).Seconds(), nil
	}
	res := wakeResult{Connections: conns}
	if res.InTxTPS, err = run(func(ctx context.Context, key string) error {
		_, err := pool.Exec(ctx, `WITH ins AS (`+insert+` RETURNING 1) SELECT pg_notify('`+outbox.Channel+`', '') FROM ins`, key)
		return err
	}); err != nil {
		return res, err
	}
	waker := outbox.NewWaker(pool, outbox.WakeEvery)
	wctx, stopWaker := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	wwg.Go(func() { _ = waker.Run(wctx) })
	time.Sleep(50 * time.Millisecond) // the in-transaction run's notifications are counted
	before := notified.Load()
	res.WakerTPS, err = run(func(ctx context.Context, key string) error {
		if _, err := pool.Exec(ctx, insert, key); err != nil {
			return err
		}
		waker.Wake()
		return nil
	})
	stopWaker()
	wwg.Wait()
	time.Sleep(50 * time.Millisecond)
	res.Notifies = notified.Load() - before
	return res, err
}
