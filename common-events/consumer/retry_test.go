package consumer

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/orderflow/common-events/internal/backoff"
)

type waitFor struct {
	error
	d time.Duration
}

func (w waitFor) RetryAfter() time.Duration { return w.d }

// A failure that asks for a longer wait (a provider's Retry-After) gets it, however deep
// it is wrapped, up to a minute; one that asks for less, or nothing, gets the backoff.
func TestARetryWaitsAsLongAsTheFailureAsks(t *testing.T) {
	p := backoff.Policy{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond}
	for _, tt := range []struct {
		name     string
		err      error
		min, max time.Duration
	}{
		{"no wait asked", errors.New("down"), 80 * time.Millisecond, 120 * time.Millisecond},
		{"less than the backoff", waitFor{errors.New("down"), time.Millisecond}, 80 * time.Millisecond, 120 * time.Millisecond},
		{"more, wrapped", fmt.Errorf("charge: %w", waitFor{errors.New("429"), 3 * time.Second}), 3 * time.Second, 3 * time.Second},
		{"more than a minute", waitFor{errors.New("429"), time.Hour}, time.Minute, time.Minute},
	} {
		if d := retryDelay(p, 1, tt.err); d < tt.min || d > tt.max {
			t.Errorf("%s: waits %v, want %v to %v", tt.name, d, tt.min, tt.max)
		}
	}
}
