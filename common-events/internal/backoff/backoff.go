// Package backoff computes capped exponential retry delays with jitter.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy doubles the delay from Min on each attempt up to Max.
type Policy struct {
	Min, Max time.Duration
}

// Delay is the wait before retry number attempt (1-based), with ±20% jitter so a fleet of
// instances does not retry in lockstep.
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Min
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Sleep waits d or until ctx is done, and reports whether the full wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
