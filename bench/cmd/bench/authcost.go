package main

import (
	"context"
	"fmt"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/devstack/issuer"
)

// authResult is what verifying one bearer token costs, as order-service does for every
// request: the signature (ES256) and the claims checked, the issuer's keys cached.
type authResult struct {
	N            int     `json:"n"`
	VerifyMicros float64 `json:"verify_us"`
}

// authCost verifies n tokens of a development issuer one after another, after one that
// fetches the keys, and returns the mean time each took.
func authCost(ctx context.Context, n int) (authResult, error) {
	is, err := issuer.Start("127.0.0.1:0", "orderflow")
	if err != nil {
		return authResult{}, err
	}
	defer is.Close()
	v := auth.NewVerifier(is.Config(), nil)
	tok, err := is.Mint(issuer.Customer, []string{auth.ScopeCustomer}, time.Hour)
	if err != nil {
		return authResult{}, err
	}
	if _, err := v.Verify(ctx, tok); err != nil { // fetches the keys
		return authResult{}, fmt.Errorf("auth cost: %w", err)
	}
	start := time.Now()
	for range n {
		if _, err := v.Verify(ctx, tok); err != nil {
			return authResult{}, fmt.Errorf("auth cost: %w", err)
		}
	}
	return authResult{N: n, VerifyMicros: float64(time.Since(start).Microseconds()) / float64(n)}, nil
}
