package testenv

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Statements are the statements a pool's connections sent, in order.
type Statements struct {
	mu  sync.Mutex
	sql []string
}

func (s *Statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sql = append(s.sql, data.SQL)
	return ctx
}

func (s *Statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// All is every statement sent so far.
func (s *Statements) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sql...)
}

// Count says how many statements sent held each of substrings, case aside.
func (s *Statements) Count(substrings ...string) int {
	n := 0
	for _, sql := range s.All() {
		sql, all := strings.ToLower(sql), true
		for _, sub := range substrings {
			all = all && strings.Contains(sql, strings.ToLower(sub))
		}
		if all {
			n++
		}
	}
	return n
}

// TracedPool is a pool to the same database as pool whose connections keep what they
// send in the Statements returned; it is closed when the test ends.
func TracedPool(t testing.TB, pool *pgxpool.Pool) (*pgxpool.Pool, *Statements) {
	t.Helper()
	sent := &Statements{}
	conf := pool.Config()
	conf.ConnConfig.Tracer = sent
	traced, err := pgxpool.NewWithConfig(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(traced.Close)
	return traced, sent
}
