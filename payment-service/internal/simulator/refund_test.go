package simulator_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/simulator"
)

func TestRefundPaysBackOnce(t *testing.T) {
	ctx := context.Background()
	sim := simulator.New(openPool(t), 0, 0)
	charge := func(key, token string) payment.Charge {
		t.Helper()
		c, err := sim.Charge(ctx, payment.ChargeRequest{IdempotencyKey: key, AmountCents: 4348, Currency: "EUR", PaymentMethod: token})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := charge("order-1", simulator.TokenVisa)
	req := payment.RefundRequest{IdempotencyKey: "order-1", ChargeID: c.ID, AmountCents: 4348, Currency: "EUR"}

	// Asked many times at once, as redeliveries would: one refund, the same answer.
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Go(func() {
			for {
				r, err := sim.Refund(ctx, req)
				if errors.Is(err, payment.ErrTransient) {
					continue // a concurrent first refund had not committed yet
				}
				if err != nil {
					t.Error(err)
				}
				ids[i] = r.ID
				return
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" || id != ids[0] {
			t.Fatalf("refund ids %v, want one and the same", ids)
		}
	}
	refunds, err := sim.Refunds(ctx, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(refunds) != 1 || refunds[0].ChargeID != c.ID || refunds[0].AmountCents != 4348 || refunds[0].RefundID != ids[0] {
		t.Errorf("ledger = %+v, want one refund of charge %s", refunds, c.ID)
	}

	tests := []struct {
		name string
		req  payment.RefundRequest
		want error
	}{
		{"the same key for another amount", payment.RefundRequest{IdempotencyKey: "order-1", ChargeID: c.ID, AmountCents: 1, Currency: "EUR"}, payment.ErrIdempotencyMismatch},
		{"the same charge under another key", payment.RefundRequest{IdempotencyKey: "order-1b", ChargeID: c.ID, AmountCents: 4348, Currency: "EUR"}, payment.ErrNotRefundable},
		{"a declined charge", payment.RefundRequest{IdempotencyKey: "order-2", ChargeID: charge("order-2", simulator.TokenDeclined).ID, AmountCents: 4348, Currency: "EUR"}, payment.ErrNotRefundable},
		{"an unknown charge", payment.RefundRequest{IdempotencyKey: "order-3", ChargeID: "ch_nope", AmountCents: 4348, Currency: "EUR"}, payment.ErrNotRefundable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := sim.Refund(ctx, tt.req); !errors.Is(err, tt.want) {
				t.Errorf("Refund = %v, want %v", err, tt.want)
			}
		})
	}
}
