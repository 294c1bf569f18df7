package main

import (
	"context"
	"fmt"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/devstack/issuer"
)

// authResult is what verifying a bearer token costs, as order-service does for every
// request: a token seen for the first time has its signature (ES256) and claims checked,
// the issuer's keys cached; one that passed before is remembered.
type authResult struct {
	N           int     `json:"n"`
	FirstMicros float64 `json:"first_us"` // a token seen for the first time
	AgainMicros float64 `json:"again_us"` // the same token again, as a client's session sends it
}

// authCost verifies n distinct tokens of a development issuer one after another, then one
// token n times, and returns the mean time each took.
func authCost(ctx context.Context, n int) (authResult, error) {
	is, err := issuer.Start("127.0.0.1:0", "orderflow")
	if err != nil {
		return authResult{}, err
	}
	defer is.Close()
	v := auth.NewVerifier(is.Config(), nil)
	toks := make([]string, n)
	for i := range toks {
		if toks[i], err = is.Mint(issuer.Customer, []string{auth.ScopeCustomer}, time.Hour+time.Duration(i)*time.Second); err != nil {
			return authResult{}, err
		}
	}
	if _, err := v.Verify(ctx, toks[0]); err != nil { // fetches the keys
		return authResult{}, fmt.Errorf("auth cost: %w", err)
	}
	each := func(tok func(i int) string) (float64, error) {
		start := time.Now()
		for i := range n {
			if _, err := v.Verify(ctx, tok(i)); err != nil {
				return 0, fmt.Errorf("auth cost: %w", err)
			}
		}
		return float64(time.Since(start).Nanoseconds()) / 1000 / float64(n), nil
	}
	r := authResult{N: n}
	if r.FirstMicros, err = each(func(i int) string { return toks[(i+1)%n] }); err != nil {
		return r, err
	}
	r.AgainMicros, err = each(func(int) string { return toks[0] })
	return r, err
}
