package e2e

import (
	"testing"
	"time"
)

// A provider that hangs — every charge answered after a minute, twenty times the attempt's
// timeout — with a 5 s payment deadline: the order ends PAYMENT_FAILED provider_unavailable
// within an attempt or two past the deadline, and the customer is not charged. It used to
// stay PENDING_PAYMENT for ever: the deadline's lookup ran on the attempt's context, which
// the hanging charge had used up.
func TestLivenessAHangingProviderEndsAtTheDeadline(t *testing.T) {
	tg := newTarget(t, map[string]map[string]string{"payment-service": {
		"PROVIDER_LATENCY": "60s", "PAYMENT_DEADLINE": "5s", "CONSUMER_HANDLER_TIMEOUT": "2s"}})
	p, err := tg.place("tok_visa")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The deadline, the attempt under way when it passes, the next one's lookup, and a
	// few backoffs of 100 ms doubling.
	states := tg.waitTerminal([]placed{p}, 5*time.Second+2*2*time.Second+5*time.Second)
	t.Logf("final after %s: %+v", time.Since(start).Round(100*time.Millisecond), states[p.ID])
	if o := states[p.ID]; o.Status != "PAYMENT_FAILED" || o.FailureReason != "provider_unavailable" {
		t.Errorf("order = %s %s, want PAYMENT_FAILED provider_unavailable", o.Status, o.FailureReason)
	}
	if n := tg.chargesOf(p.ID); n != 0 {
		t.Errorf("%d charges at the provider, want none", n)
	}
}
