package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// yardstick measures the machine's own limit on the same PostgreSQL: single-row INSERT
// transactions per second with synchronous commit, from 16 connections. Every order
// costs several such commits (order + outbox; inbox + payment + outbox; …), so this
// bounds what the pipeline can reach here.
func yardstick(ctx context.Context, adminURL string, d time.Duration) (yardstickResult, error) {
	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		return yardstickResult{}, err
	}
	const conns = 16
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return yardstickResult{}, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS yardstick (id bigserial PRIMARY KEY, v text NOT NULL)`); err != nil {
		return yardstickResult{}, fmt.Errorf("yardstick: %w", err)
	}
	var sync_ string
	if err := pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&sync_); err != nil {
		return yardstickResult{}, err
	}
	var n atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range conns {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := pool.Exec(ctx, `INSERT INTO yardstick (v) VALUES ('x')`); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return yardstickResult{}, fmt.Errorf("yardstick: %w", err)
	}
	_, _ = pool.Exec(ctx, `DROP TABLE yardstick`)
	return yardstickResult{TPS: float64(n.Load()) / time.Since(start).Seconds(), Connections: conns, SynchronousCommit: sync_}, nil
}
